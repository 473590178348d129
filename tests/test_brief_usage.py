"""Tokens, cost, the daily budget and `newsletter briefs stats|list`, against the loopback
OpenAI-compatible server: the real litellm path prices each answer."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import chat_completion, invoke, llm_calls, parts, read_outbox
from test_brief import GOOD, ok, status

from newsletter import store

PRICED = "openai/gpt-4o-mini"  # in litellm's bundled cost map


def bundled_price(name: str) -> tuple[float, float]:
    """(input, output) USD per token from the cost map file litellm ships, read as data."""
    spec = importlib.util.find_spec("litellm")
    assert spec and spec.submodule_search_locations
    path = Path(spec.submodule_search_locations[0]) / "model_prices_and_context_window_backup.json"
    entry = json.loads(path.read_text())[name]
    return entry["input_cost_per_token"], entry["output_cost_per_token"]


def db(isolated):
    return store.open_db(isolated / "newsletter.db")


def test_a_known_model_behind_api_base_is_priced_from_the_bundled_map(isolated, llm_server,
                                                                      monkeypatch):
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    llm_server.routes["/v1/chat/completions"] = ok(chat_completion(
        json.dumps(GOOD), prompt_tokens=1234, completion_tokens=321))
    out = invoke("run", "--all").output
    per_in, per_out = bundled_price("gpt-4o-mini")
    expected = 1234 * per_in + 321 * per_out
    assert llm_calls(llm_server)[0]["model"] == "gpt-4o-mini"
    [call] = list(db(isolated)["llm_calls"].rows)
    assert call["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert (call["input_tokens"], call["output_tokens"]) == (1234, 321)
    assert call["model"] == PRICED and call["resolved_model"] == "test-model"
    assert call["language"] == "en" and call["error"] is None
    [cached] = json.loads(invoke("briefs", "list", "--json").output)
    assert cached["cost_usd"] == pytest.approx(expected, rel=1e-9)
    assert (cached["input_tokens"], cached["output_tokens"]) == (1234, 321)
    assert cached["model"] == PRICED and cached["language"] == "en"
    assert cached["papers"] == len(json.loads(db(isolated)["briefs"].get(cached["key"])
                                              ["paper_ids"]))
    assert f"LLM: 1 calls, ${expected:.4f}" in out


def test_an_unknown_model_has_no_cost_rather_than_zero(isolated, llm_server):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    llm_server.routes["/v1/chat/completions"] = ok(chat_completion(json.dumps(GOOD)))
    invoke("run", "--all")
    [call] = list(db(isolated)["llm_calls"].rows)
    assert call["cost_usd"] is None and call["input_tokens"] == 120
    [cached] = json.loads(invoke("briefs", "list", "--json").output)
    assert cached["cost_usd"] is None
    stats = json.loads(invoke("briefs", "stats", "--json").output)
    assert stats["total"]["cost_usd"] is None and stats["total"]["calls"] == 1
    line = invoke("briefs", "stats").output.splitlines()[1]
    assert line.split()[:3] == ["2026-11-22", "openai/test-model", "1"] and " - " in line


def test_stats_per_day_and_model_with_failures_and_cache_hits(isolated, llm_server,
                                                              monkeypatch):
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    llm_server.routes["/v1/chat/completions"] = [
        status(429), ok(chat_completion(json.dumps(GOOD), 1000, 200))]
    invoke("run", "--all")
    # the next day, a new lab member with the same papers: served from the cache
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-23T09:00:00+00:00")
    invoke("subscribers", "add", "bob@example.org", "--author", "Lu, Taiming")
    invoke("run", "--only", "bob@example.org", "--no-fetch")
    assert len(llm_calls(llm_server)) == 2
    per_in, per_out = bundled_price("gpt-4o-mini")
    stats = json.loads(invoke("briefs", "stats", "--json").output)
    assert stats["rows"] == [
        {"day": "2026-11-22", "model": PRICED, "calls": 2, "ok": 1, "failed": 1,
         "input_tokens": 1000, "output_tokens": 200,
         "cost_usd": pytest.approx(1000 * per_in + 200 * per_out), "cache_hits": 0},
        {"day": "2026-11-23", "model": PRICED, "calls": 0, "ok": 0, "failed": 0,
         "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "cache_hits": 1},
    ]
    assert stats["total"]["calls"] == 2 and stats["total"]["cache_hits"] == 1
    later = json.loads(invoke("briefs", "stats", "--since", "2026-11-23", "--json").output)
    assert [r["day"] for r in later["rows"]] == ["2026-11-23"]
    text = invoke("briefs", "stats").output.splitlines()
    assert text[0].split() == ["day", "model", "calls", "ok", "failed", "in", "tokens", "out",
                               "tokens", "cost", "cache", "hits"]
    assert text[-1].split() == ["total", "2", "1", "1", "1000", "200",
                                f"${1000 * per_in + 200 * per_out:.4f}", "1"]
    listing = invoke("briefs", "list").output
    assert "1 hits" in listing and "1 cached briefs" in listing and PRICED in listing
    [row] = list(db(isolated)["llm_calls"].rows_where("error is not null"))
    assert row["error"].startswith("RateLimitError")


def test_the_daily_budget_stops_calls_and_the_summary_counts_the_fallbacks(
        isolated, llm_server, monkeypatch):
    per_in, per_out = bundled_price("gpt-4o-mini")
    one_call = 120 * per_in + 80 * per_out
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    monkeypatch.setenv("NEWSLETTER_LLM_BUDGET_USD", f"{one_call / 2:.8f}")
    monkeypatch.setenv("NEWSLETTER_LLM_CONCURRENCY", "1")
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    invoke("subscribers", "add", "chen@example.org", "--author", "Taiming Lu", "--lang", "zh")
    invoke("subscribers", "add", "grace@example.org", "--topic", "CRISPR")
    llm_server.routes["/v1/chat/completions"] = ok(chat_completion(json.dumps(GOOD)))
    out = invoke("run", "--all").output
    assert len(llm_calls(llm_server)) == 1  # then the budget was spent
    assert "3 sent" in out
    assert (f"Brief fallback: daily LLM budget of ${one_call / 2:g} reached "
            f"(${one_call:.4f} spent today) - 2 of 3 briefs fell back to the extractive "
            "digest") in out
    emails = read_outbox(isolated / "outbox")
    texts = [parts(m)[0] for m in emails.values()]
    assert sum(GOOD["headline"] in t for t in texts) == 1
    assert sum("daily LLM budget reached" in t for t in texts) == 2
    # later the same day: the spend recorded so far already covers the budget
    invoke("subscribers", "add", "dan@example.org", "--topic", "protein structure")
    out = invoke("run", "--only", "dan@example.org", "--no-fetch").output
    assert len(llm_calls(llm_server)) == 1
    assert "1 of 1 briefs fell back" in out and "1 sent" in out


def test_an_unreachable_model_never_stops_the_emails(isolated, llm_server):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu")
    llm_server.routes["/v1/chat/completions"] = [status(-1)]  # hang up without an answer
    out = invoke("run", "--all").output
    assert "1 sent" in out
    assert "Brief fallback: model failed (" in out
    assert ") - 1 of 1 briefs fell back to the extractive digest" in out
    assert "Give Feedback" not in out  # litellm's debug banner stays out of the job's log
    assert len(llm_calls(llm_server)) == 3  # retried with backoff, then gave up
    rows = list(db(isolated)["llm_calls"].rows)
    assert len(rows) == 3 and all(r["error"] and r["cost_usd"] is None for r in rows)
    assert "Extractive digest" in parts(read_outbox(isolated / "outbox")["ada@example.org"])[0]
