import json
import sqlite3

import pytest
from conftest import invoke

from newsletter import store


def test_add_list_show_remove(isolated):
    out = invoke("subscribers", "add", "Ada@Example.ORG", "--name", "Ada",
                 "--author", "Taiming Lu", "--topic", "diffusion models",
                 "--category", "cs.CL", "--lang", "zh").output
    assert out == "Added Ada@example.org (1 authors, 1 topics, 1 categories, zh)\n"

    listed = json.loads(invoke("subscribers", "list", "--json").output)
    assert [s["email"] for s in listed] == ["Ada@example.org"]
    assert listed[0]["authors"] == ["Taiming Lu"]
    assert listed[0]["categories"] == ["cs.CL"]
    assert listed[0]["language"] == "zh"

    table = invoke("subscribers").output  # no subcommand lists
    assert "Ada@example.org" in table and "author: Taiming Lu" in table
    assert table.rstrip().endswith("\n1 subscriber: 1 active")

    shown = invoke("subscribers", "show", "ada@example.org").output
    assert "topics:       diffusion models" in shown

    assert invoke("subscribers", "remove", "ADA@example.org", "--yes").output == \
        "Removed ADA@example.org\n"
    assert json.loads(invoke("subscribers", "list", "--json").output) == []


@pytest.mark.parametrize("address, reason", [
    ("not-an-address", "expected name@domain"),
    ("a@b", "the part after the @-sign is not valid. It should have a period"),
    ("a..b@example.org", "an email address cannot have two periods in a row"),
    ("two@@example.org", "expected name@domain"),
])
def test_invalid_address_is_one_line_error(isolated, address, reason):
    result = invoke("subscribers", "add", address, "--author", "Taiming Lu", ok=False)
    assert result.exit_code == 1
    assert result.output == f"Error: {address!r} is not an email address - {reason}\n"
    assert not (isolated / "newsletter.db").exists() or \
        store.list_subscribers(store.open_db(isolated / "newsletter.db")) == []


def test_internationalised_domain_is_normalised(isolated):
    out = invoke("subscribers", "add", " li@例子.中国 ", "--topic", "CRISPR").output
    assert out.startswith("Added li@xn--fsqu00a.xn--fiqs8s ")


def test_duplicate_address_is_refused_whatever_the_case(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    result = invoke("subscribers", "add", "ADA@EXAMPLE.org", "--topic", "x", ok=False)
    assert result.exit_code == 1
    assert result.output == ('Error: subscriber ADA@example.org already exists - use '
                             '"newsletter subscribers edit" to change it\n')
    subs = store.list_subscribers(store.open_db(isolated / "newsletter.db"))
    assert [(s.email, s.topics) for s in subs] == [("ada@example.org", ())]


def test_broken_topic_query_is_refused_with_position_and_nothing_written(isolated):
    result = invoke("subscribers", "add", "ada@example.org", "--topic",
                    "(diffusion AND protein", ok=False)
    assert result.exit_code == 1
    assert result.output == \
        "Error: topic '(diffusion AND protein': missing ')' at position 23\n"
    db = sqlite3.connect(isolated / "newsletter.db")
    assert db.execute("select count(*) from subscribers").fetchone() == (0,)
    assert db.execute("select count(*) from filters").fetchone() == (0,)


def test_unknown_language_and_timezone(isolated):
    result = invoke("subscribers", "add", "a@example.org", "--lang", "xx", ok=False)
    assert result.output == "Error: language 'xx' is not available - use one of: en, zh\n"
    result = invoke("subscribers", "add", "a@example.org", "--timezone", "Mars/Base", ok=False)
    assert result.output.startswith("Error: unknown time zone 'Mars/Base'")


def test_show_and_remove_unknown_subscriber(isolated):
    for cmd in ("show", "remove"):
        result = invoke("subscribers", cmd, "nobody@example.org", ok=False)
        assert result.exit_code == 1
        assert result.output == ('Error: no subscriber nobody@example.org - see '
                                 '"newsletter subscribers list"\n')


def test_author_needs_a_full_name(isolated):
    result = invoke("subscribers", "add", "a@example.org", "--author", "Lu", ok=False)
    assert result.output == "Error: author 'Lu': give a full name such as \"Taiming Lu\"\n"
