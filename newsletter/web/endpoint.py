"""The public endpoint behind `newsletter serve`: a Starlette app run by Uvicorn.

It answers the signed links in every issue: RFC 8058 one-click unsubscribe (a POST whose
signed token is the authority, so mail clients can send it), the unsubscribe, manage
(pause, resume) and confirmation pages, and the subscriber's research radar
(``newsletter.web.radar``). A GET never changes anything (mail scanners follow links);
every change is a POST, and every POST from a page carries a CSRF token.

In front of every route (``Guard``, plain ASGI): a per-client rate limit, a cap on the
request body checked on ``Content-Length`` before anything is read (413; a malformed or
negative length is a 400) and again while a chunked body streams in, and one log line per
request (method, path, status, time; never the query string, which holds the tokens).
Handlers check the token (an HMAC, no database) before they read the body or open a
connection; the database is reached through one ``store.Pool`` opened at start-up.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import NewsletterError, SubscriberNotFound
from newsletter.lists import tokens
from newsletter.web.pages import (
    Handlers,
    csrf_cookie,
    csrf_ok,
    link,
    message,
    page,
    read_form,
    request_language,
    web_strings,
)

log = logging.getLogger("newsletter.web")

MAX_BODY = 64 * 1024  # the largest form the pages send is a few hundred bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- the guard in front of every route ---------------------------------------------------


class RateLimit:
    """A token bucket per client address: ``per_minute`` requests a minute on average,
    bursts up to ``burst``. Addresses idle for a while are forgotten."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float) -> bool:
        if self.rate <= 0:
            return True
        tokens_left, last = self.buckets.get(client, (self.burst, now))
        tokens_left = min(self.burst, tokens_left + (now - last) * self.rate)
        if len(self.buckets) > 10_000:  # forget the idle ones
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 600}
        if tokens_left < 1:
            self.buckets[client] = (tokens_left, now)
            return False
        self.buckets[client] = (tokens_left - 1, now)
        return True


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Rate limit, body cap and request log, before the app sees the request."""

    def __init__(self, app: ASGIApp, max_body: int, limiter: RateLimit) -> None:
        self.app, self.max_body, self.limiter = app, max_body, limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [0]

        async def logged_send(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            await self._guarded(scope, receive, logged_send)
        finally:
            client = (scope.get("client") or ("-", 0))[0]
            log.info('%s "%s %s" %d %.1fms', client, scope["method"], scope["path"],
                     status[0], (time.monotonic() - started) * 1000)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = (scope.get("client") or ("-", 0))[0]
        if not self.limiter.allow(client, time.monotonic()):
            await _plain(send, 429, "Too many requests - wait a minute and try again.\n")
            return
        lengths = [v for k, v in scope["headers"] if k == b"content-length"]
        if lengths:
            raw = lengths[0].strip()
            if len(lengths) > 1 or not raw.isdigit():
                await _plain(send, 400, "Content-Length is not a number.\n")
                return
            if int(raw) > self.max_body:
                await _plain(send, 413, "Request body too large.\n")
                return
        seen = [0]
        limit = self.max_body

        async def capped_receive() -> Message:
            msg = await receive()
            if msg["type"] == "http.request":
                seen[0] += len(msg.get("body", b""))
                if seen[0] > limit:  # a chunked body that did not say its length
                    raise HTTPException(413, "Request body too large.")
            return msg

        await self.app(scope, capped_receive, send)


# --- signed links ------------------------------------------------------------------------


@dataclass(frozen=True)
class Signed:
    """What a valid link carries: the address, and the language asked for."""

    email: str
    lang: str


def check_token(request: Request, settings: Settings, kind: str) -> Signed | None:
    """The link's address if its token is valid for ``kind`` (unsubscribe, confirm); no
    database is touched."""
    q = request.query_params
    email, token = q.get("email", ""), q.get("token", "")
    if not (settings.secret and email and token) or len(email) > 320 or len(token) > 200:
        return None
    expected = (tokens.confirm_token(settings.secret, email) if kind == "confirm"
                else tokens.unsubscribe_token(settings.secret, email))
    if not secrets.compare_digest(expected, token):
        return None
    return Signed(email=email, lang=q.get("lang", ""))


# --- the subscription pages --------------------------------------------------------------


class App(Handlers):
    """The subscription pages (unsubscribe, manage, confirm)."""

    def _links(self, signed: Signed, lang: str, path: str, token: str) -> str:
        other = web_strings(lang)["switch_lang"]
        return link(path, email=signed.email, token=token, lang=other)

    async def subscription_page(self, request: Request) -> Response:
        kind = "confirm" if request.url.path == "/confirm" else "unsubscribe"
        signed = check_token(request, self.settings, kind)
        if signed is None:
            return message(request, 403, "invalid_title", "invalid")
        try:
            sub = await self.db_call(store.get_subscriber, signed.email)
        except SubscriberNotFound:
            return message(request, 404, "not_subscribed_title", "not_subscribed")
        lang = request_language(request, sub.language)
        t = web_strings(lang)
        token = request.query_params["token"]
        cookie = csrf_cookie(request)
        action = functools.partial(link, email=sub.email, token=token, lang=lang)
        csrf = [("csrf", cookie)]
        if kind == "confirm":
            lines = [t["confirm_question"].format(email=sub.email)]
            forms = [{"action": action("/confirm"), "fields": csrf,
                      "label": t["confirm_button"], "primary": True}]
        else:
            status = t.get(f"status_{sub.status}", sub.status)
            lines = [t["status_line"].format(email=sub.email, status=status)]
            forms = []
            if sub.status == "active":
                forms.append({"action": action("/manage"), "label": t["pause_button"],
                              "fields": [*csrf, ("action", "pause")], "primary": False})
            if sub.status == "paused":
                forms.append({"action": action("/manage"), "label": t["resume_button"],
                              "fields": [*csrf, ("action", "resume")], "primary": False})
            if sub.status not in ("unsubscribed", "bounced"):
                lines.append(t["unsubscribe_question"].format(email=sub.email))
                forms = [{"action": action("/unsubscribe"), "fields": [],
                          "label": t["unsubscribe_button"], "primary": True}, *forms]
        return page("message.html.j2", t=t, title=t["manage_title"], lines=lines,
                    forms=forms, error=False, cookie=cookie,
                    secure=request.url.scheme == "https",
                    switch_url=self._links(signed, lang, request.url.path, token))

    async def unsubscribe(self, request: Request) -> Response:
        """RFC 8058 one-click: the mail client POSTs ``List-Unsubscribe=One-Click``; the
        signed token is the authority (no cookie can be expected), checked first."""
        from newsletter.lists import roster

        signed = check_token(request, self.settings, "unsubscribe")
        if signed is None:
            return message(request, 403, "invalid_title", "invalid")
        await request.body()  # capped by Guard; its content does not matter
        try:
            sub = await self.db_call(roster.set_status, signed.email, "unsubscribed",
                                     origin="web")
        except SubscriberNotFound:
            return message(request, 404, "not_subscribed_title", "not_subscribed")
        lang = request_language(request, sub.language)
        return message(request, 200, "done_unsubscribed", "status_line", lang,
                       email=sub.email, status=web_strings(lang)["status_unsubscribed"])

    async def change(self, request: Request) -> Response:
        """POST /manage (pause, resume) and POST /confirm, from the pages' forms."""
        from newsletter.lists import roster

        kind = "confirm" if request.url.path == "/confirm" else "unsubscribe"
        signed = check_token(request, self.settings, kind)
        if signed is None:
            return message(request, 403, "invalid_title", "invalid")
        form = await read_form(request)
        if not csrf_ok(request, form):
            return message(request, 403, "error_title", "csrf_failed")
        token = request.query_params["token"]
        try:
            if kind == "confirm":
                sub = await self.db_call(roster.confirm, signed.email, token, origin="web")
                done = "done_confirmed"
            else:
                wanted = form.get("action", "")
                if wanted not in ("pause", "resume"):
                    return message(request, 400, "error_title", "unknown_action")
                fn = roster.pause if wanted == "pause" else roster.resume
                sub, _ = await self.db_call(fn, signed.email, origin="web")
                done = "done_saved"
        except SubscriberNotFound:
            return message(request, 404, "not_subscribed_title", "not_subscribed")
        except NewsletterError as e:
            t = web_strings(request_language(request))
            return page("message.html.j2", 400, t=t, title=t["error_title"],
                        lines=[str(e)], forms=[], error=True)
        lang = request_language(request, sub.language)
        t = web_strings(lang)
        return message(request, 200, done, "status_line", lang, email=sub.email,
                       status=t.get(f"status_{sub.status}", sub.status))


def _closing(pool: store.Pool) -> Callable[[Any], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        pool.close()
    return lifespan


async def _not_found(request: Request, exc: Exception) -> Response:
    return message(request, 404, "not_found_title", "not_found")


async def _http_error(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    key = {413: "too_large", 429: "too_many"}.get(code, "bad_request")
    return message(request, code, "error_title", key)


def create_app(settings: Settings, *, pool_size: int = 4, max_body: int = MAX_BODY,
               rate_per_minute: float = 120.0, burst: int = 60,
               clock: Callable[[], datetime] | None = None) -> ASGIApp:
    """The ASGI app ``newsletter serve`` runs (``uvicorn.run(create_app(settings))``).

    Needs ``settings.secret`` (the links are signed with it) and opens ``settings.db``
    once, migrating it. ``rate_per_minute`` = 0 turns the rate limit off; ``clock`` gives
    the time page links are checked against (default: now)."""
    if not settings.secret:
        raise NewsletterError("set NEWSLETTER_SECRET first: the links are signed with it")
    pool = store.Pool(settings.db, size=pool_size)
    app = App(settings, pool)
    routes = [
        Route("/unsubscribe", app.subscription_page, methods=["GET"]),
        Route("/unsubscribe", app.unsubscribe, methods=["POST"]),
        Route("/manage", app.subscription_page, methods=["GET"]),
        Route("/manage", app.change, methods=["POST"]),
        Route("/confirm", app.subscription_page, methods=["GET"]),
        Route("/confirm", app.change, methods=["POST"]),
    ]
    from newsletter.web import radar

    routes += radar.routes(app, clock or (lambda: datetime.now(UTC)))
    starlette = Starlette(routes=routes, exception_handlers={
        404: _not_found, 405: _http_error, 413: _http_error, 400: _http_error},
        lifespan=_closing(pool))
    return Guard(starlette, max_body,
                 RateLimit(rate_per_minute, min(burst, max(1, int(rate_per_minute)))))


def serve(settings: Settings, host: str, port: int, *, rate_per_minute: float = 120.0,
          proxy: str = "", ready: Callable[[int], None] | None = None,
          clock: Callable[[], datetime] | None = None) -> None:
    """Run the endpoint with Uvicorn until interrupted. ``proxy``: the reverse proxy's
    address(es), whose X-Forwarded-For / -Proto headers are then trusted."""
    import asyncio

    import uvicorn

    app = create_app(settings, rate_per_minute=rate_per_minute, clock=clock)
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None,
                            proxy_headers=bool(proxy), forwarded_allow_ips=proxy or None,
                            server_header=False, h11_max_incomplete_event_size=16 * 1024,
                            timeout_keep_alive=5, lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if ready and server.started:
            ready(server.servers[0].sockets[0].getsockname()[1])
        await task

    asyncio.run(main())


__all__ = ["create_app", "link", "serve"]
