"""Relevance that learns from the reader: seed papers, feedback, the learned ranking."""

import json
from pathlib import Path

import pytest
from conftest import invoke

from newsletter import store
from newsletter.errors import InvalidFilter
from newsletter.relevance.seeds import parse_key, read_library

DATA = Path(__file__).parent / "data" / "lookup"
DIFFUSION = ("2006.11239", "2011.13456")  # DDPM and score-based SDEs, in the sample corpus


def explain(email: str) -> list[dict]:
    return json.loads(invoke("match", email, "--json").output)["papers"]


@pytest.mark.parametrize("text,key", [
    ("2401.01234", "arxiv:2401.01234"), ("arXiv:2401.01234v2", "arxiv:2401.01234"),
    ("https://arxiv.org/abs/hep-th/9901001v1", "arxiv:hep-th/9901001"),
    ("https://arxiv.org/pdf/2006.11239.pdf", "arxiv:2006.11239"),
    ("10.1145/3544548.3581388", "doi:10.1145/3544548.3581388"),
    ("https://doi.org/10.1371/JOURNAL.PONE.0033693", "doi:10.1371/journal.pone.0033693"),
    ("doi:10.48550/arXiv.1706.03762", "arxiv:1706.03762"),
])
def test_keys_in_every_usual_spelling(text, key):
    assert parse_key(text) == key


def test_a_key_that_is_neither_says_what_would_do():
    with pytest.raises(InvalidFilter) as e:
        parse_key("attention is all you need")
    assert "neither an arXiv id" in str(e.value) and "DOI" in str(e.value)


def test_reference_manager_files():
    assert read_library(str(DATA / "library.bib")) == (
        ["arxiv:1706.03762", "arxiv:2006.11239", "doi:10.1371/journal.pone.0033693"], 1)
    assert read_library(str(DATA / "library.ris")) == (
        ["doi:10.1371/journal.pone.0033693", "arxiv:1706.03762"], 0)
    assert read_library(str(DATA / "library.json")) == (
        ["doi:10.7717/peerj.4375", "arxiv:2006.11239"], 0)


def test_seed_papers_reorder_the_issue(isolated):
    invoke("fetch")
    invoke("subscribers", "add", "ada@example.org", "--category", "cs.*", "--max-papers", "30")
    before = [p["id"] for p in explain("ada@example.org")]
    assert all(p["learned"] is None for p in explain("ada@example.org"))
    invoke("subscribers", "edit", "ada@example.org", *[x for i in DIFFUSION
                                                      for x in ("--add-like", i)])
    after = explain("ada@example.org")
    ids = [p["id"] for p in after]
    # the same papers but the seeds (not news to their reader), in a new order
    assert sorted(ids) == sorted(set(before) - set(DIFFUSION)) and ids != before
    # the diffusion papers the seeds are like come first
    top = ids[:3]
    assert {"2112.10752", "2212.09748", "1503.03585"} & set(top), top
    assert all(p["learned"] is not None and p["like"] for p in after)
    text = invoke("match", "ada@example.org", "--explain").output
    assert "learned +" in text and "most like: " in text
    # "filters" mode is the filters' order, untouched
    invoke("subscribers", "edit", "ada@example.org", "--ranking", "filters")
    assert [p["id"] for p in explain("ada@example.org")] == before


def test_like_mode_adds_what_the_filters_missed_and_says_why(isolated):
    invoke("fetch")
    invoke("subscribers", "add", "bo@example.org", "--topic", "protein",
           "--like", DIFFUSION[0], "--like", DIFFUSION[1], "--ranking", "like",
           "--like-cap", "2")
    papers = explain("bo@example.org")
    added = [p for p in papers if p["reasons"][0].startswith("like: ")]
    assert 1 <= len(added) <= 2
    for p in added:
        assert p["reasons"] == [f"like: {p['like']}"]
        assert p["like"] in ("Denoising Diffusion Probabilistic Models",
                             "Score-Based Generative Modeling through Stochastic Differential "
                             "Equations")
    assert all("protein" in " ".join(p["reasons"]) for p in papers if p not in added)
    # the seeds themselves are never offered
    assert not set(DIFFUSION) & {p["id"] for p in papers}


def test_feedback_moves_a_paper_down_and_is_kept_everywhere(isolated, tmp_path):
    invoke("fetch")
    invoke("subscribers", "add", "cy@example.org", "--category", "cs.*", "--max-papers", "30",
           "--like", DIFFUSION[0])
    before = {p["id"]: p["learned"] for p in explain("cy@example.org")}
    first = next(iter(before))
    out = invoke("feedback", "cy@example.org", first, "--not-relevant").output
    assert out == f"cy@example.org: {first} marked not relevant\n"
    after = {p["id"]: p["learned"] for p in explain("cy@example.org")}
    assert first not in after  # not shown again
    db = store.open_db(str(isolated / "newsletter.db"))
    positives, negatives = store.labelled_papers(db, "cy@example.org", (DIFFUSION[0],))
    assert [p.id for p in positives] == [DIFFUSION[0]] and [p.id for p in negatives] == [first]
    history = invoke("subscribers", "show", "cy@example.org", "--history").output
    assert f"feedback (cli)  not relevant: {first}" in history
    # exported, and imported into another list as it was
    exported = json.loads(invoke("subscribers", "export", "--format", "json").output)
    assert exported[0]["feedback"] == [f"{first}:not_relevant"]
    assert exported[0]["likes"] == [DIFFUSION[0]]
    path = tmp_path / "list.json"
    path.write_text(json.dumps(exported))
    invoke("subscribers", "forget", "cy@example.org", "--yes")
    assert db.execute("select count(*) from feedback").fetchone()[0] == 0  # forgotten too
    invoke("subscribers", "import", str(path))
    assert store.feedback_rows(db, "cy@example.org")[0]["verdict"] == "not_relevant"
    assert store.get_subscriber(db, "cy@example.org").likes == (DIFFUSION[0],)


def test_feedback_on_an_unknown_paper_is_one_line(isolated):
    invoke("subscribers", "add", "dee@example.org", "--topic", "x")
    result = invoke("feedback", "dee@example.org", "9999.99999", "--relevant", ok=False)
    assert result.exit_code == 1
    assert result.output == ("Error: no paper 9999.99999 - see \"newsletter papers list\"\n")


def test_seeds_are_looked_up_on_arxiv_crossref_and_openalex(isolated, http_server,
                                                            monkeypatch):
    http_server.serve("/api/query", (DATA / "arxiv-id.atom").read_bytes())
    http_server.serve("/works/10.1371/journal.pone.0033693",
                      (DATA / "crossref-work.json").read_bytes(), content_type="application/json")
    http_server.serve("/oa/works/doi:10.7717/peerj.4375",
                      (DATA / "openalex-work.json").read_bytes(),
                      content_type="application/json")
    monkeypatch.setenv("NEWSLETTER_ARXIV_API_URL", http_server.base + "/api/query")
    monkeypatch.setenv("NEWSLETTER_ARXIV_DELAY", "0")
    monkeypatch.setenv("NEWSLETTER_CROSSREF_URL", http_server.base)
    monkeypatch.setenv("NEWSLETTER_OPENALEX_URL", http_server.base + "/oa")
    invoke("subscribers", "add", "eve@example.org", "--topic", "attention",
           "--like", "arXiv:1706.03762v7", "--like", "https://doi.org/10.1371/journal.pone.0033693",
           "--like", "10.7717/peerj.4375")
    db = store.open_db(str(isolated / "newsletter.db"))
    sub = store.get_subscriber(db, "eve@example.org")
    assert sub.likes == ("1706.03762", "10.1371/journal.pone.0033693", "10.7717/peerj.4375")
    papers = {p.id: p for p in store.get_papers(db, sub.likes)}
    assert papers["1706.03762"].authors[0] == "Ashish Vaswani"
    crossref = papers["10.1371/journal.pone.0033693"]
    assert crossref.title.startswith("Methylphenidate Exposure Induces Dopamine Neuron Loss")
    assert crossref.authors[:2] == ("Shankar Sadasivan", "Brooks B. Pond")
    assert crossref.venue == "PLoS ONE" and crossref.published.year == 2012
    openalex = papers["10.7717/peerj.4375"]
    assert openalex.authors[0] == "Heather A. Piwowar" and openalex.venue == "PeerJ"
    assert openalex.abstract == ("A survey of how many articles are open access, and whether "
                                "they are read and cited more often.")
    paths = [path.split("?")[0] for _, path, _, _ in http_server.requests]
    assert paths.count("/api/query") == 1  # one arXiv request, for the id
    # a second subscriber naming the same papers asks nobody: they are stored once
    invoke("subscribers", "add", "fay@example.org", "--topic", "x", "--like", "1706.03762")
    assert len(http_server.requests) == len(paths)


def test_a_seed_nobody_knows_is_refused_and_nothing_is_written(isolated, http_server,
                                                               monkeypatch):
    monkeypatch.setenv("NEWSLETTER_CROSSREF_URL", http_server.base)
    monkeypatch.setenv("NEWSLETTER_OPENALEX_URL", http_server.base)
    result = invoke("subscribers", "add", "gus@example.org", "--topic", "x",
                    "--like", "10.9999/nothing.here", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: seed papers not found: doi:10.9999/nothing.here: "
                                    "not found in Crossref or OpenAlex")
    db = store.open_db(str(isolated / "newsletter.db"))
    assert not store.list_subscribers(db)


def test_pruning_keeps_seed_papers_and_judged_papers(isolated):
    from datetime import UTC, datetime, timedelta

    invoke("fetch")
    invoke("subscribers", "add", "hal@example.org", "--topic", "x", "--like", DIFFUSION[0])
    invoke("feedback", "hal@example.org", DIFFUSION[1], "--not-relevant")
    db = store.open_db(str(isolated / "newsletter.db"))
    dropped = store.prune(db, 1, datetime.now(UTC) + timedelta(days=400))
    kept = {p.id for p in store.get_papers(db, DIFFUSION)}
    assert dropped["papers"] > 0 and kept == set(DIFFUSION)
