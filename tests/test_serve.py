"""`newsletter serve` against the real Uvicorn server on loopback: one-click unsubscribe
(RFC 8058), the pages and their forms, and what a hostile client sends (issue 12)."""

from __future__ import annotations

import socket
import time
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import invoke

from newsletter import store
from newsletter.lists.tokens import unsubscribe_token

SECRET = "test-signing-key"


@pytest.fixture
def people(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    for address in ("ada+news@example.org", "bob@example.org", "cy@example.org"):
        invoke("subscribers", "add", address, "--author", "Taiming Lu")
    invoke("subscribers", "edit", "cy@example.org", "--lang", "zh")
    return isolated


def statuses(path: Path) -> dict[str, str]:
    db = store.open_db(path / "newsletter.db")
    return {s.email: s.status for s in store.list_subscribers(db)}


def history(path: Path, email: str) -> list[tuple[str, str]]:
    db = store.open_db(path / "newsletter.db")
    return [(e["event"], e["origin"]) for e in store.subscriber_history(db, email)]


class Forms(HTMLParser):
    """The forms on a page: [(action, {hidden fields}, button label)]."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str], str]] = []
        self._in_button = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}, ""))
        elif tag == "input" and self.forms and a.get("type") == "hidden":
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "button":
            self._in_button = True

    def handle_endtag(self, tag: str) -> None:
        self._in_button = self._in_button and tag != "button"

    def handle_data(self, data: str) -> None:
        if self._in_button and self.forms:
            action, fields, label = self.forms[-1]
            self.forms[-1] = (action, fields, label + data.strip())

    def by_label(self, label: str) -> tuple[str, dict[str, str]]:
        for action, fields, text in self.forms:
            if text == label:
                return action, fields
        raise AssertionError(f"no form labelled {label!r} in {self.forms}")


def link(email: str, path: str = "/unsubscribe") -> str:
    from urllib.parse import urlencode

    return f"{path}?{urlencode({'email': email, 'token': unsubscribe_token(SECRET, email)})}"


def test_landing_page_links_work_for_plus_addresses(people, serve_endpoint):
    """Issue 12: the page built its links by hand, so ada+news@ got 403 on Unsubscribe."""
    server = serve_endpoint()
    with httpx.Client(base_url=server.base) as client:
        page = client.get(link("ada+news@example.org"))
        assert page.status_code == 200 and "ada+news@example.org" in page.text
        assert statuses(people)["ada+news@example.org"] == "active"  # a GET changes nothing
        action, fields = Forms(page.text).by_label("Unsubscribe")
        assert "ada%2Bnews%40example.org" in action  # encoded by urlencode, not by hand
        done = client.post(action, data=fields)
        assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert statuses(people) == {"ada+news@example.org": "unsubscribed",
                                "bob@example.org": "active", "cy@example.org": "active"}
    assert history(people, "ada+news@example.org")[-1] == ("unsubscribed", "web")


def test_rfc8058_one_click_and_forwarded_tokens(people, serve_endpoint):
    server = serve_endpoint()
    one_click = {"List-Unsubscribe": "One-Click"}
    with httpx.Client(base_url=server.base) as client:
        # bob's token on ada's address: refused before anything is read
        wrong = (f"/unsubscribe?email=ada%2Bnews%40example.org&token="
                 f"{unsubscribe_token(SECRET, 'bob@example.org')}")
        assert client.post(wrong, data=one_click).status_code == 403
        # a mail client: no cookie, no CSRF field, only the signed link and the RFC 8058 body
        done = client.post(link("bob@example.org"), data=one_click,
                           headers={"Cookie": ""})
        assert done.status_code == 200
    assert statuses(people) == {"ada+news@example.org": "active",
                                "bob@example.org": "unsubscribed", "cy@example.org": "active"}


def test_manage_needs_csrf_and_speaks_the_subscribers_language(people, serve_endpoint):
    server = serve_endpoint()
    with httpx.Client(base_url=server.base) as client:
        page = client.get(link("cy@example.org", "/manage"))
        assert '<html lang="zh-Hans">' in page.text and "暂停" in page.text
        action, fields = Forms(page.text).by_label("暂停")
        assert fields["csrf"] and fields["action"] == "pause"
        forged = client.post(action, data={"action": "pause"})  # a cross-site form post
        assert forged.status_code == 403 and "此表单已过期" in forged.text
        assert statuses(people)["cy@example.org"] == "active"
        assert client.post(action, data=fields).status_code == 200
        assert statuses(people)["cy@example.org"] == "paused"
        english = client.get(link("cy@example.org", "/manage") + "&lang=en")
        assert "Resume" in english.text and '<html lang="en">' in english.text
    assert history(people, "cy@example.org")[-1] == ("paused", "web")


def test_confirmation_link(people, serve_endpoint, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE_URL", "https://news.example.org/u")
    invoke("subscribers", "add", "dee@example.org", "--author", "Taiming Lu", "--confirm")
    raw_mail = next((people / "outbox").glob("*dee*.eml")).read_bytes()
    text = message_from_bytes(raw_mail, policy=policy.default).get_body(("plain",)).get_content()
    url = next(w for w in text.split() if w.startswith("https://news.example.org/u/confirm"))
    path = url.removeprefix("https://news.example.org/u")
    server = serve_endpoint()
    with httpx.Client(base_url=server.base) as client:
        other = link("dee@example.org", "/confirm")  # the unsubscribe kind of token
        assert client.get(other).status_code == 403
        page = client.get(path)
        action, fields = Forms(page.text).by_label("Confirm my subscription")
        assert client.post(action, data=fields).status_code == 200
    assert statuses(people)["dee@example.org"] == "active"
    assert history(people, "dee@example.org")[-1] == ("confirmed", "web")


def raw(base: str, request: bytes, body_chunks: int = 0, chunk: bytes = b"") -> bytes:
    """Send REQUEST (and up to BODY_CHUNKS more chunks, stopping when the server hangs
    up) on a raw socket; return what the server answered."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(request)
        try:
            for _ in range(body_chunks):
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(10)
        answer = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
                if b"\r\n\r\n" in answer:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_hostile_bodies_are_refused_before_they_are_read(people, serve_endpoint):
    """Issue 12: a 600 MB POST and bad Content-Length values, against the real server:
    413/400, and the server's memory stays flat."""
    server = serve_endpoint()
    path = link("bob@example.org").encode()
    head = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n"
    assert status_of(raw(server.base, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n")) == 200
    before = server.peak_kb()
    started = time.monotonic()
    mb = b"x" * (1 << 20)
    # 600 MB announced and sent (until the server hangs up)
    big = raw(server.base, head + b"Content-Length: 629145600\r\n"
              b"Content-Type: application/x-www-form-urlencoded\r\n\r\n", 600, mb)
    assert status_of(big) == 413
    # 600 MB chunked, without a length: counted as it streams, cut at the cap
    chunked = raw(server.base, head + b"Transfer-Encoding: chunked\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\n\r\n",
                  600, b"100000\r\n" + mb + b"\r\n")
    assert status_of(chunked) == 413
    for value, expected in ((b"99999999999", 413), (b"abc", 400), (b"-5", 400),
                            (b"1e3", 400), (b" ", 400)):
        answer = raw(server.base, head + b"Content-Length: " + value + b"\r\n\r\n")
        assert status_of(answer) == expected, (value, answer[:200])
    elapsed = time.monotonic() - started
    after = server.peak_kb()
    assert after - before < 20_000, (before, after)  # peak memory flat: nothing buffered
    assert elapsed < 60
    assert server.proc.poll() is None  # still serving
    assert statuses(people)["bob@example.org"] == "active"  # nothing was done
    assert status_of(raw(server.base, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n"
                                       b"Connection: close\r\n\r\n")) == 200


def test_one_log_line_per_request_without_tokens_and_one_pool(people, serve_endpoint):
    server = serve_endpoint()
    token = unsubscribe_token(SECRET, "bob@example.org")

    def db_handles() -> int:
        fds = Path(f"/proc/{server.pid}/fd")
        return sum(1 for fd in fds.iterdir()
                   if str(fd.resolve()).endswith("newsletter.db"))

    with httpx.Client(base_url=server.base) as client:
        client.get(link("bob@example.org"))
        handles = db_handles()
        for _ in range(20):
            assert client.get(link("bob@example.org", "/manage")).status_code == 200
        assert client.get("/nowhere?token=" + token).status_code == 404
    assert db_handles() == handles  # the pool's connections, not one per request
    time.sleep(0.2)
    lines = [line for line in server.log().splitlines() if '"GET ' in line]
    assert len(lines) == 22
    assert token not in server.log() and "email=" not in server.log()
    assert lines[-1].endswith("ms") and '"GET /nowhere" 404' in lines[-1]


def test_rate_limit(people, serve_endpoint):
    server = serve_endpoint("--rate-limit", "5")
    with httpx.Client(base_url=server.base) as client:
        codes = [client.get(link("bob@example.org")).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429


def test_serve_needs_a_secret(isolated):
    result = invoke("serve", "--port", "0", ok=False)
    assert result.exit_code == 1
    assert result.output == ("Error: set NEWSLETTER_SECRET first: the links are signed with "
                             "it\n")

