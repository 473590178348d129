import json

from conftest import DATA, invoke


def test_sources_add_list_disable_enable_remove(isolated, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SOURCES")
    out = invoke("sources", "add", "nphys", "https://www.nature.com/nphys.rss",
                 "--label", "Nature Physics").output
    assert out == "Added nphys (https://www.nature.com/nphys.rss)\n"
    listed = {s["name"]: s for s in json.loads(invoke("sources", "list", "--json").output)}
    assert listed["nphys"]["fetched"] and listed["nphys"]["label"] == "Nature Physics"
    assert listed["arxiv"]["fetched"] and listed["arxiv"]["status"] == "never fetched"
    invoke("sources", "disable", "arxiv")
    listed = {s["name"]: s for s in json.loads(invoke("sources", "list", "--json").output)}
    assert not listed["arxiv"]["fetched"]
    assert invoke("sources", "enable", "biorxiv").output == \
        "Enabled biorxiv (https://connect.biorxiv.org/biorxiv_xml/all)\n"
    table = invoke("sources").output
    assert "on  biorxiv" in table and "off arxiv" in table
    assert invoke("sources", "remove", "nphys", "--yes").output == "Removed nphys\n"
    result = invoke("sources", "add", "biorxiv", "https://example.org/x.rss", ok=False)
    assert result.output == ('Error: source biorxiv already exists - use "newsletter sources '
                             'remove" first to replace it\n')


def test_catalogue_lists_well_known_feeds(isolated):
    listed = {s["name"]: s for s in
              json.loads(invoke("sources", "list", "--catalogue", "--json").output)}
    for name in ("nature", "science", "pnas", "cell", "biorxiv", "medrxiv", "plos-biology",
                 "elife", "nejm", "prl"):
        assert listed[name]["status"] == "catalogue" and listed[name]["url"].startswith("http")


def test_unknown_source_errors(isolated):
    result = invoke("sources", "enable", "nonesuch", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: no source nonesuch - add it with")
    result = invoke("sources", "add", "x", "ftp://example.org/feed", ok=False)
    assert result.exit_code == 2 and "give the feed's http:// or https:// URL" in result.output


def test_check_fetches_and_stores_nothing(isolated, http_server):
    http_server.serve("/nature.rss", (DATA / "feeds" / "nature.rss").read_bytes(),
                      content_type="application/rss+xml")
    invoke("sources", "add", "nature", http_server.base + "/nature.rss", "--label", "Nature")
    result = invoke("sources", "check", "nature")
    assert "Highly accurate protein structure prediction with AlphaFold" in result.output
    assert "3 papers parsed from nature (1 requests)" in result.output
    assert json.loads(invoke("papers", "list", "--json").output) == []


def test_check_reports_a_broken_feed(isolated, http_server):
    http_server.serve("/broken", "<html><body>Sign in</body></html>", content_type="text/html")
    invoke("sources", "add", "broken", http_server.base + "/broken")
    result = invoke("sources", "check", "broken", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: broken: not a feed")


def test_papers_list_and_show(isolated):
    invoke("fetch")
    listed = json.loads(invoke("papers", "list", "--source", "sample", "--json").output)
    assert listed == []  # sample papers keep their own source names
    listed = json.loads(invoke("papers", "list", "--json").output)
    assert len(listed) == 43
    genex = json.loads(invoke("papers", "show", "2411.11844", "--json").output)
    assert genex["authors"][0] == "Taiming Lu" and genex["source"] == "arxiv"
    assert set(genex) >= {"id", "source", "title", "authors", "abstract", "url", "doi",
                          "published", "categories"}
    result = invoke("papers", "show", "9999.99999", ok=False)
    assert result.output == 'Error: no paper 9999.99999 - see "newsletter papers list"\n'


def test_an_rss_091_feed(isolated, http_server):
    """The oldest format still served: no dates, no authors, ids from arXiv links."""
    http_server.serve("/rss091", (DATA / "feeds" / "rss091.xml").read_bytes(),
                      content_type="application/rss+xml")
    invoke("sources", "add", "reading", http_server.base + "/rss091", "--label", "Reading list")
    papers = json.loads(invoke("sources", "check", "reading", "--json").stdout)["papers"]
    assert [(p["id"], p["title"]) for p in papers] == [
        ("1706.03762", "Attention Is All You Need"),
        ("1512.03385", "Deep Residual Learning for Image Recognition")]
    assert papers[0]["venue"] == "Reading list" and papers[0]["authors"] == []
