"""Docs that cannot fall behind the code."""

import re
import subprocess
import sys
from pathlib import Path

from newsletter.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
EXTRA_ENV = {"NEWSLETTER_CONFIG", "NEWSLETTER_NOW", "NEWSLETTER_RAISE_ERRORS",
             "NEWSLETTER_TESTS_REQUIRE_ALL"}


def test_readme_generated_parts_are_current():
    done = subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, "README is out of date: run 'make cog'\n" + done.stderr


def test_every_setting_is_documented_with_its_env_var():
    for s in SETTINGS:
        assert f"| `{s.name}` | `{s.envvar}` |" in README, s.name


def test_every_env_var_in_the_code_is_declared_and_documented():
    declared = {s.envvar for s in SETTINGS} | EXTRA_ENV
    used = set()
    for path in list((ROOT / "newsletter").rglob("*.py")) + [ROOT / ".ci" / "run"]:
        used.update(re.findall(r"NEWSLETTER_[A-Z_]+[A-Z]", path.read_text()))
    assert used <= declared, used - declared
    for name in EXTRA_ENV:
        assert f"`{name}`" in README, name


def test_readme_starts_with_the_two_commands():
    head = README.split("## Configuration")[0]
    assert "make demo" in head and "make test" in head
    assert "docs/screenshot.png" in head and (ROOT / "docs" / "screenshot.png").exists()


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
