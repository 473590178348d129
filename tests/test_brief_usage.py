"""Tokens, cost, the daily budget and `newsletter briefs stats|list`, against the loopback
OpenAI-compatible server: the real litellm path prices each answer."""

import importlib.util
import json
from pathlib import Path

import pytest
from conftest import invoke, llm_calls, model_answers, parts, read_outbox
from test_brief import status

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
    llm_server.routes["/v1/chat/completions"] = model_answers(prompt_tokens=1234,
                                                                completion_tokens=321)
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
    llm_server.routes["/v1/chat/completions"] = model_answers()
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
        status(429), model_answers(prompt_tokens=1000, completion_tokens=200)]
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
         "cost_usd": pytest.approx(1000 * per_in + 200 * per_out), "cache_hits": 0,
         "claims": 5, "dropped_claims": 0, "fallbacks": 0},
        {"day": "2026-11-23", "model": PRICED, "calls": 0, "ok": 0, "failed": 0,
         "input_tokens": 0, "output_tokens": 0, "cost_usd": None, "cache_hits": 1,
         "claims": 0, "dropped_claims": 0, "fallbacks": 0},
    ]
    assert stats["total"]["calls"] == 2 and stats["total"]["cache_hits"] == 1
    later = json.loads(invoke("briefs", "stats", "--since", "2026-11-23", "--json").output)
    assert [r["day"] for r in later["rows"]] == ["2026-11-23"]
    text = invoke("briefs", "stats").output.splitlines()
    assert text[0].split() == ["day", "model", "calls", "ok", "failed", "in", "tokens", "out",
                               "tokens", "cost", "cache", "hits", "claims", "dropped",
                               "digests"]
    assert text[-1].split() == ["total", "2", "1", "1", "1000", "200",
                                f"${1000 * per_in + 200 * per_out:.4f}", "1", "5", "0", "0"]
    listing = invoke("briefs", "list").output
    assert "1 hits" in listing and "1 cached briefs" in listing and PRICED in listing
    [row] = list(db(isolated)["llm_calls"].rows_where("error is not null"))
    assert row["error"].startswith("RateLimitError")


def add_readers(n: int) -> None:
    """n subscribers with n different issues (so n distinct briefs)."""
    topics = ["diffusion", "protein", "quantum", "CRISPR", "retrieval", "world models",
              "pruning", "medicine"]
    for i in range(n):
        invoke("subscribers", "add", f"r{i}@example.org", "--topic", topics[i])


def test_a_budget_worth_half_a_call_makes_no_call_at_the_default_concurrency(
        isolated, llm_server, monkeypatch):
    """The issue's case: at the default concurrency of 4 a cap worth half a call used to
    let 3 calls through (calls started before any cost was known). Each call now reserves
    its worst case first: none fits, none starts, every brief is the digest."""
    per_in, per_out = bundled_price("gpt-4o-mini")
    one_call = 120 * per_in + 80 * per_out  # what the loopback server bills per answer
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    monkeypatch.setenv("NEWSLETTER_LLM_BUDGET_USD", f"{one_call / 2:.8f}")
    add_readers(4)
    llm_server.routes["/v1/chat/completions"] = model_answers()
    out = invoke("run", "--all").output
    assert llm_calls(llm_server) == []
    assert "4 sent" in out
    assert (f"Brief fallback: daily LLM budget of ${one_call / 2:g} reached ($0.0000 spent "
            "today) - 4 of 4 briefs fell back to the extractive digest") in out
    for msg in read_outbox(isolated / "outbox").values():
        text = parts(msg)[0]
        assert "Extractive digest" in text and "budget" not in text


def test_the_budget_holds_with_four_calls_in_flight(isolated, llm_server, monkeypatch):
    """Default settings (concurrency 4, max_tokens as shipped), eight distinct briefs, a
    slow server that bills every answer at the full max_tokens and the prompt's true size:
    whatever starts together, the day's spend stays under the cap."""
    import threading
    import time

    import litellm

    per_in, per_out = bundled_price("gpt-4o-mini")
    in_flight, most = [0], [0]
    lock = threading.Lock()
    two = threading.Event()

    def billed_in_full(h, body):
        request = json.loads(body)
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            if in_flight[0] >= 2:
                two.set()
        two.wait(5)  # held until a second request is in flight (or 5 s)
        time.sleep(0.2)  # a request let through beyond the budget would arrive meanwhile
        with lock:
            in_flight[0] -= 1
        prompt = litellm.token_counter(model=PRICED, messages=request["messages"])
        return model_answers(prompt_tokens=prompt,
                             completion_tokens=request["max_tokens"])(h, body)

    cap = 4 * 1500 * per_out  # four answers' worth of output alone, before their prompts
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    monkeypatch.setenv("NEWSLETTER_LLM_BUDGET_USD", f"{cap:.8f}")
    add_readers(8)
    llm_server.routes["/v1/chat/completions"] = billed_in_full
    out = invoke("run", "--all").output
    assert "8 sent" in out
    rows = list(db(isolated)["llm_calls"].rows)
    spent = sum(r["cost_usd"] for r in rows)
    assert 2 <= len(rows) < 8 and spent <= cap
    assert most[0] >= 2  # calls did run side by side, as far as the budget allowed
    assert all(r["output_tokens"] == 1500 for r in rows)  # every answer billed in full
    assert "briefs fell back to the extractive digest" in out
    # later the same day, more readers: the spend recorded so far counts, the cap holds
    for i, topic in enumerate(("galaxy", "superconductivity", "skin cancer", "neuroscience")):
        invoke("subscribers", "add", f"late{i}@example.org", "--topic", topic)
    out = invoke("run", "--all", "--no-fetch").output
    assert "4 sent" in out
    assert sum(r["cost_usd"] for r in db(isolated)["llm_calls"].rows) <= cap


def test_a_budget_refuses_a_model_with_no_price_unless_a_per_call_price_is_set(
        isolated, llm_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_LLM_BUDGET_USD", "0.025")
    add_readers(4)
    llm_server.routes["/v1/chat/completions"] = model_answers()
    result = invoke("run", "--all", "--dry-run", "--with-briefs", ok=False)
    assert result.exit_code == 1 and "4 would-send" in result.output
    assert llm_calls(llm_server) == []
    assert ("model 'openai/test-model' has no price in litellm's list, so the daily budget "
            "cannot cap it: set NEWSLETTER_LLM_PRICE_PER_CALL_USD") in result.output
    # with a worst-case price per call, the budget caps it: 2 calls of $0.01 fit in $0.025
    monkeypatch.setenv("NEWSLETTER_LLM_PRICE_PER_CALL_USD", "0.01")
    out = invoke("run", "--all", "--no-fetch").output
    assert len(llm_calls(llm_server)) == 2
    assert "LLM: 2 calls, $0.0200" in out
    assert "2 of 4 briefs fell back" in out


def test_dry_run_calls_no_model_unless_asked(isolated, llm_server):
    add_readers(3)
    llm_server.routes["/v1/chat/completions"] = model_answers()
    out = invoke("run", "--all", "--dry-run").output
    assert "3 would-send" in out and llm_calls(llm_server) == []
    assert list(db(isolated)["brief_fallbacks"].rows) == []  # a dry run records nothing
    out = invoke("run", "--all", "--dry-run", "--with-briefs").output
    assert len(llm_calls(llm_server)) == 3 and "LLM: 3 calls, cost unknown" in out
    assert "$0.0000" not in out


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


def test_reservations_from_many_threads_never_pass_the_cap():
    """The budget's own rule, with 64 threads racing: a reservation that would pass the cap
    is refused, so what is reserved plus what is spent never exceeds it."""
    import threading

    from newsletter.brief import Budget

    budget = Budget(cap=10.0, spent=2.5)
    granted: list[bool] = []
    peak = [0.0]
    lock = threading.Lock()
    start = threading.Barrier(64)

    def one() -> None:
        start.wait()
        ok = budget.reserve(1.0)
        with lock:
            granted.append(ok)
            peak[0] = max(peak[0], budget.spent + budget.reserved)
        if ok:
            budget.settle(1.0, 0.75)  # answered for less than its worst case

    threads = [threading.Thread(target=one) for _ in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] <= 10.0 and budget.reserved == 0
    assert sum(granted) >= 7  # 7 fit at once; settled ones leave room for more
    assert budget.spent == 2.5 + 0.75 * sum(granted) <= 10.0
    assert Budget(cap=0.0).reserve(1e9)  # no cap: everything may start


def test_a_run_in_batches_says_each_fallback_reason_once_with_the_runs_totals(
        isolated, llm_server, monkeypatch):
    """A run writes its briefs a batch at a time; the summary still has one line per
    reason, counted over the whole run. With the day's budget already spent, no prompt is
    even tokenized to price it, and the model is not checked (that imports litellm, seconds
    before the first email)."""
    from newsletter import brief, pipeline, store

    monkeypatch.setattr(pipeline, "BATCH", 1)
    monkeypatch.setattr(pipeline, "FIRST_BATCH", 1)
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", PRICED)
    monkeypatch.setenv("NEWSLETTER_LLM_BUDGET_USD", "0.01")
    add_readers(4)
    store.log_llm_call(db(isolated), {"brief_key": "earlier", "language": "en",
                                      "model": PRICED, "cost_usd": 0.02})

    def no_pricing(*args, **kwargs):
        raise AssertionError("priced a request although the budget was spent")

    def no_check(*args, **kwargs):
        raise AssertionError("checked the model although the budget was spent")

    monkeypatch.setattr(brief, "worst_case_cost", no_pricing)
    monkeypatch.setattr(brief, "check_model", no_check)
    llm_server.routes["/v1/chat/completions"] = model_answers()
    out = invoke("run", "--all").output
    assert llm_calls(llm_server) == [] and "4 sent" in out
    fallbacks = [line for line in out.splitlines() if line.startswith("Brief fallback:")]
    assert fallbacks == ["Brief fallback: daily LLM budget of $0.01 reached ($0.0200 spent "
                         "today) - 4 of 4 briefs fell back to the extractive digest"]
