from dataclasses import replace
from datetime import UTC, datetime

from newsletter import store
from newsletter.models import Paper

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def paper(**kw):
    base = dict(id="2406.14673", source="arxiv", title="Insights into LLM Long-Context Failures",
                authors=("Taiming Lu", "Muhan Gao"), abstract="short", url="https://arxiv.org/abs/2406.14673",
                published=T0, categories=("cs.CL",))
    return Paper(**{**base, **kw})


def test_same_paper_from_three_sources_is_stored_once_and_merged():
    db = store.open_db(":memory:")
    assert store.upsert_papers(db, [paper()], T0) == (1, 0)
    journal = paper(id="10.18653/v1/2024.findings-emnlp.447", source="acl",
                    venue="Findings of EMNLP", doi="10.18653/v1/2024.findings-emnlp.447",
                    title="Insights into LLM long-context failures!",
                    authors=("Taiming Lu", "Muhan Gao"), abstract="a much longer abstract",
                    url="https://aclanthology.org/x", categories=())
    assert store.upsert_papers(db, [journal], T0) == (0, 1)
    cross = paper(categories=("cs.CL", "cs.AI"))
    assert store.upsert_papers(db, [cross], T0) == (0, 1)
    (stored,) = store.list_papers(db)
    assert stored.id == "2406.14673" and stored.source == "arxiv"
    assert stored.doi == "10.18653/v1/2024.findings-emnlp.447"
    assert stored.venue == "Findings of EMNLP"
    assert stored.categories == ("cs.CL", "cs.AI")
    assert stored.abstract == "a much longer abstract"


def test_doi_match_and_first_seen_never_moves():
    db = store.open_db(":memory:")
    store.upsert_papers(db, [paper(id="10.1/x", doi="10.1/x", title="A")], T0)
    later = datetime(2026, 11, 22, tzinfo=UTC)
    store.upsert_papers(db, [paper(id="2501.00001", doi="10.1/x", title="B")], later)
    assert len(store.list_papers(db)) == 1
    assert store.list_papers(db, since=later) == []


def test_different_papers_with_same_title_different_first_author_stay_apart():
    db = store.open_db(":memory:")
    store.upsert_papers(db, [paper(), replace(paper(), id="2501.1", authors=("Ann Other",))],
                        T0)
    assert len(store.list_papers(db)) == 2
