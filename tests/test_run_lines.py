"""A run keeps one line per subscriber for its summary and `run --json`; past the first few
thousand they go to a temporary file, so the run's memory does not grow with the list."""

import threading

from newsletter.ops.report import Lines, RunLine


def test_lines_past_the_first_few_are_kept_on_disk_in_order():
    lines = Lines(keep=3)
    want = [RunLine(f"reader{i}@example.org", "sent" if i % 3 else "skipped", i,
                    "smtp://127.0.0.1:25" if i % 2 else "李伟 reason\nwith a line break")
            for i in range(10)]
    for line in want:
        lines.append(line)
    assert len(lines) == 10 and len(lines._memory) == 3 and lines._file is not None
    assert list(lines) == want
    assert list(lines) == want  # read again: the same
    lines.append(RunLine("late@example.org", "failed", 0, "550 no"))
    assert list(lines) == [*want, RunLine("late@example.org", "failed", 0, "550 no")]


def test_lines_from_several_threads_are_all_kept():
    lines = Lines(keep=50)

    def add(k):
        for i in range(500):
            lines.append(RunLine(f"t{k}-{i}@example.org", "sent", 1, "x"))

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = list(lines)
    assert len(got) == len(lines) == 2000
    assert len({line.email for line in got}) == 2000
    for k in range(4):  # each thread's lines in the order it added them
        mine = [line.email for line in got if line.email.startswith(f"t{k}-")]
        assert mine == [f"t{k}-{i}@example.org" for i in range(500)]
