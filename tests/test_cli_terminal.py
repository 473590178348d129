"""On a terminal: progress bars and confirmation questions, in a real pseudo-terminal
(the CLI runs as a child process whose standard streams are a pty); and the same commands
piped, where neither may appear."""

import os
import select
import subprocess
import sys
import time

from conftest import invoke

NEWSLETTER = [sys.executable, "-m", "newsletter"]


def in_terminal(*args: str, answer: str | None = None, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pseudo-terminal; type ANSWER when it
    asks something. Returns (exit code, everything the terminal showed)."""
    master, slave = os.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    proc = subprocess.Popen([*NEWSLETTER, *args], stdin=slave, stdout=slave, stderr=slave,
                            env=env, close_fds=True)
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
                if answer is not None and b"[y/N]" in shown:
                    os.write(master, answer.encode() + b"\n")
                    answer = None
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, shown.decode("utf-8", "replace")


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NEWSLETTER, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=os.environ, timeout=60)


def big_csv(path, n=600):
    rows = [f"user{i}@example.org,User {i},Taiming Lu" for i in range(n)]
    path.write_text("email,name,authors\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_import_shows_a_bar_on_a_terminal_and_nothing_of_it_when_piped(isolated):
    csv = big_csv(isolated / "people.csv")
    code, shown = in_terminal("subscribers", "import", str(csv), "--dry-run")
    assert code == 0, shown
    assert "Checking rows" in shown and "600/600" in shown and "100%" in shown
    assert "row 2: added" not in shown  # the bar replaces the line per row...
    assert "600 added, 0 updated, 0 unchanged, 0 rejected" in shown
    code, shown = in_terminal("subscribers", "import", str(csv), "--dry-run", "-v")
    assert "row 601: added user599@example.org" in shown and "100%" in shown  # ...unless -v
    code, quiet = in_terminal("subscribers", "import", str(csv), "--dry-run", "-q")
    assert "Checking rows" not in quiet and "row 2" not in quiet and "600 added" in quiet
    result = piped("subscribers", "import", str(csv), "--dry-run")
    assert result.returncode == 0
    assert "Checking rows" not in result.stdout + result.stderr
    assert "\r" not in result.stdout + result.stderr
    assert "row 601: added user599@example.org" in result.stdout  # a log keeps every row
    code, shown = in_terminal("subscribers", "import", str(csv), "--dry-run", "--json")
    assert "Checking rows" not in shown and '"added": 600' in shown


def test_run_and_export_show_bars_on_a_terminal(isolated):
    invoke("subscribers", "import", str(big_csv(isolated / "people.csv", 30)))
    code, shown = in_terminal("run", "--all", "--dry-run")
    assert code == 0, shown
    assert "Fetching  [" in shown and "Fetching sample..." not in shown  # a bar per source
    assert "Sending  [" in shown and "30/30" in shown  # and one over the subscribers
    assert "would-send" not in shown.split("Summary:")[0]  # no line per delivery...
    assert "Summary: 30 due, 30 would-send" in shown
    result = piped("run", "--all", "--dry-run")
    assert "Sending" not in result.stderr and "\r" not in result.stderr
    assert "Fetching sample..." in result.stderr
    assert result.stdout.count("would-send ") == 30  # ...but in a log, every delivery
    code, shown = in_terminal("subscribers", "export", "--out", str(isolated / "out.csv"))
    assert code == 0 and "Exporting" in shown and "30/30" in shown
    result = piped("subscribers", "export")
    assert "Exporting" not in result.stderr and result.stdout.count("@example.org") == 30


def test_destructive_commands_ask_on_a_terminal(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    code, shown = in_terminal("subscribers", "remove", "ada@example.org", answer="n")
    assert "Remove ada@example.org, their filters and delivery records? [y/N]" in shown
    assert code == 1 and "Aborted" in shown
    assert invoke("subscribers", "show", "ada@example.org").exit_code == 0  # still there
    code, shown = in_terminal("subscribers", "forget", "ada@example.org", answer="y")
    assert code == 0 and "Erase ada@example.org and everything about them? [y/N]" in shown
    assert "Forgot ada@example.org" in shown
    assert invoke("subscribers", "show", "ada@example.org", ok=False).exit_code == 1


def test_destructive_commands_refuse_without_a_terminal_unless_yes(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("sources", "add", "nphys", "https://www.nature.com/nphys.rss")
    for args in (("subscribers", "remove", "ada@example.org"),
                 ("subscribers", "forget", "ada@example.org"),
                 ("subscribers", "expire"), ("sources", "remove", "nphys")):
        result = piped(*args)
        assert result.returncode == 1 and result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("Error: ") and line.endswith(
            "not asking, standard input is not a terminal - pass --yes to confirm"), line
    assert piped("sources", "remove", "nphys", "--yes").stdout == "Removed nphys\n"
    assert piped("subscribers", "remove", "ada@example.org", "-y").returncode == 0
