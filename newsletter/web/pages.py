"""What every page of `newsletter serve` shares: strings in both languages, templates,
URLs built with urllib, the CSRF cookie and form, and a handler base with the connection
pool. Imported by ``endpoint`` (the subscription pages) and ``radar`` (the radar page)."""

from __future__ import annotations

import asyncio
import functools
import secrets
import tomllib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

from newsletter import store
from newsletter.config import REPO_ROOT, Settings

WEB_TEMPLATES = REPO_ROOT / "templates" / "web"
LANGUAGES = ("en", "zh")
CSRF_COOKIE = "nl_csrf"


# --- strings and templates ---------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def web_strings(language: str) -> dict[str, Any]:
    """The pages' words in one language (``templates/web/i18n/<lang>.toml``)."""
    lang = language if language in LANGUAGES else "en"
    with open(WEB_TEMPLATES / "i18n" / f"{lang}.toml", "rb") as f:
        return tomllib.load(f)


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(WEB_TEMPLATES)),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def page(name: str, status: int = 200, cookie: str | None = None, secure: bool = False,
         **context: Any) -> HTMLResponse:
    context.setdefault("switch_url", None)
    html = _env().get_template(name).render(**context)
    response = HTMLResponse(html, status_code=status, headers={
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # nothing from elsewhere: no fonts, scripts or analytics from third parties
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "img-src 'self' data:; form-action 'self'; "
                                   "frame-ancestors 'none'; base-uri 'none'",
    })
    if cookie:
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict",
                            secure=secure, path="/")
    return response


def link(path: str, **query: Any) -> str:
    """A URL path with its query string, every value percent-encoded by urllib."""
    clean = {k: v for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


def request_language(request: Request, fallback: str = "en") -> str:
    lang = request.query_params.get("lang", "")
    if lang in LANGUAGES:
        return lang
    if fallback in LANGUAGES and fallback != "en":
        return fallback
    accept = request.headers.get("accept-language", "").lower()
    return "zh" if accept.startswith("zh") else fallback if fallback in LANGUAGES else "en"


def message(request: Request, code: int, title_key: str, text_key: str,
            lang: str | None = None, **fmt: Any) -> HTMLResponse:
    t = web_strings(lang or request_language(request))
    return page("message.html.j2", code, t=t, title=t[title_key],
                lines=[t[text_key].format(**fmt)], forms=[], error=code >= 400)


def csrf_cookie(request: Request) -> str:
    """The visitor's CSRF cookie value (a new one when they have none)."""
    have = request.cookies.get(CSRF_COOKIE, "")
    return have if len(have) == 32 and have.isalnum() else secrets.token_hex(16)


async def read_form(request: Request) -> dict[str, str]:
    """The posted form (already capped by ``Guard``), as plain strings."""
    form = await request.form(max_files=0, max_fields=50)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get("csrf", "")
    return bool(cookie) and secrets.compare_digest(cookie.encode(), sent.encode())


class Handlers:
    """What route handlers share: the settings and one connection pool."""

    def __init__(self, settings: Settings, pool: store.Pool) -> None:
        self.settings, self.pool = settings, pool
        self._slots: asyncio.Semaphore | None = None

    async def db_call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(db, *args)`` on a pooled connection in a worker thread. At most as many
        calls run at once as the pool has connections; the others wait here, in the event
        loop, rather than as threads contending for the GIL."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool.size)

        def call() -> Any:
            with self.pool.connection() as db:
                return fn(db, *args, **kwargs)

        async with self._slots:
            return await run_in_threadpool(call)
