"""The run's render workers: messages come back in order, and no more than RENDER_AHEAD
jobs are rendered ahead of the sender (rendered messages are about 50 KB each; a run must
not hold batches of them while the SMTP server is the slower side)."""

from dataclasses import replace
from datetime import UTC, date, datetime

from newsletter import pipeline
from newsletter.brief import extractive
from newsletter.config import Settings
from newsletter.models import Issue, Match, Subscriber
from newsletter.sources.sample import load_papers

NOW = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)


def _jobs(papers, count):
    sub = Subscriber("reader@example.org", language="en", topics=("diffusion models",))
    jobs = []
    for k in range(count):
        shown = papers[k % 7: k % 7 + 1 + k % 5]
        matches = tuple(Match(p, 1.0, ("topic: diffusion models",), ()) for p in shown)
        issue = Issue(replace(sub, email=f"reader{k}@example.org",
                              language="zh" if k % 3 == 0 else "en"),
                      date(2026, 11, 22), matches, (), extractive(shown))
        jobs.append((issue, f"<{k}@example.org>"))
    return jobs


def test_workers_keep_order_and_render_at_most_render_ahead_jobs_ahead():
    papers = load_papers()
    jobs = _jobs(papers, 300)
    settings = Settings()
    # keep_html: the HTML part comes back too (the MIME boundaries differ between runs)
    serial = [(subject, html) for subject, _, html
              in pipeline._Renderer(settings, NOW, True, 1).map(jobs)]
    assert len(set(serial)) > 100
    renderer = pipeline._Renderer(settings, NOW, True, 2, lambda: papers)
    try:
        batches = [renderer.map(jobs[i:i + 100]) for i in range(0, 300, 100)]
        ahead = renderer._ahead
        assert pipeline.RENDER_AHEAD - pipeline.RENDER_CHUNK < ahead <= pipeline.RENDER_AHEAD
        assert sum(len(c.jobs) for c in renderer._waiting) == 300 - ahead
        first = []
        for subject, _, html in batches[0]:
            first.append((subject, html))
            assert renderer._ahead <= pipeline.RENDER_AHEAD
            if len(first) == 50:
                break
        # the second batch is dropped untaken (as when sending failed): the third still
        # comes back whole and in order
        third = [(subject, html) for subject, _, html in batches[2]]
        assert third == serial[200:300]
        first += [(subject, html) for subject, _, html in batches[0]]
        assert first == serial[:100]
    finally:
        renderer.close()
