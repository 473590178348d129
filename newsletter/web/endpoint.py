"""An optional web endpoint for the signed links in every issue: RFC 8058 one-click
unsubscribe (POST), a manage page (pause, resume, unsubscribe) and subscription
confirmation. A GET never changes anything (mail scanners follow links); a POST does, and
only with the address's own HMAC token."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import NewsletterError
from newsletter.lists.tokens import confirm_token, unsubscribe_token

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:34em;
margin:3em auto;padding:0 1em;color:#1f2937}}button{{font:inherit;padding:.4em 1em;
margin:.2em .4em .2em 0}}</style></head><body><h1>{title}</h1>{body}</body></html>"""


def _form(action: str, email: str, token: str, label: str, extra: str = "") -> str:
    return (f'<form method="post" action="/{action}?email={escape(email)}&amp;'
            f'token={escape(token)}">{extra}<button type="submit">{escape(label)}</button>'
            "</form>")


# C901 counts the nested handler's methods together (GET and POST of the endpoint, each
# simple); the Starlette endpoint (issue 17) replaces this class.
def make_handler(db_path: str, settings: Settings) -> type[BaseHTTPRequestHandler]:  # noqa: C901
    from newsletter.lists import roster

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, title: str, body: str) -> None:
            data = PAGE.format(title=escape(title), body=body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _args(self) -> tuple[str, str, str]:
            parts = urlsplit(self.path)
            q = parse_qs(parts.query)
            return parts.path, (q.get("email") or [""])[0], (q.get("token") or [""])[0]

        def _valid(self, path: str, email: str, token: str) -> bool:
            """Unsubscribe and manage links carry the unsubscribe token; confirmation links
            carry the confirmation token (a different HMAC)."""
            if not (settings.secret and email and token):
                return False
            expected = (confirm_token(settings.secret, email) if path == "/confirm"
                        else unsubscribe_token(settings.secret, email))
            return hmac.compare_digest(expected, token)

        def do_GET(self) -> None:  # noqa: N802
            path, email, token = self._args()
            if path not in ("/unsubscribe", "/manage", "/confirm"):
                return self._reply(404, "Not found", "<p>Nothing here.</p>")
            if not self._valid(path, email, token):
                return self._reply(403, "Link not valid",
                                   "<p>This link is not valid for that address.</p>")
            db = store.open_db(db_path)
            try:
                sub = store.get_subscriber(db, email)
            except NewsletterError:
                return self._reply(404, "Not subscribed", "<p>No subscription found.</p>")
            filters = "".join(f"<li>{escape(x)}</li>" for x in
                              (*sub.authors, *sub.topics, *sub.categories))
            if path == "/confirm":
                body = _form("confirm", email, token, "Confirm my subscription")
            else:
                body = (f"<p>{escape(email)} is <b>{escape(sub.status)}</b>.</p>"
                        f"<ul>{filters}</ul>"
                        + _form("unsubscribe", email, token, "Unsubscribe")
                        + (_form("manage", email, token, "Pause",
                                 '<input type="hidden" name="action" value="pause">')
                           if sub.status == "active" else "")
                        + (_form("manage", email, token, "Resume",
                                 '<input type="hidden" name="action" value="resume">')
                           if sub.status == "paused" else ""))
            self._reply(200, "Your AcademicHub subscription", body)

        def do_POST(self) -> None:  # noqa: N802
            path, email, token = self._args()
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
            if not self._valid(path, email, token):
                return self._reply(403, "Link not valid",
                                   "<p>This link is not valid for that address.</p>")
            db = store.open_db(db_path)
            actions: dict[str, Callable[[], Any]] = {
                "/unsubscribe": lambda: roster.set_status(db, email, "unsubscribed",
                                                               origin="web"),
                "/confirm": lambda: roster.confirm(db, email, token, origin="web"),
            }
            if path == "/manage":
                wanted = (form.get("action") or [""])[0]
                if wanted not in ("pause", "resume"):
                    return self._reply(400, "Unknown action", "<p>Choose pause or resume.</p>")
                status = "paused" if wanted == "pause" else "active"
                actions[path] = lambda: roster.set_status(db, email, status, origin="web")
            if path not in actions:
                return self._reply(404, "Not found", "<p>Nothing here.</p>")
            try:
                actions[path]()
            except NewsletterError as e:
                return self._reply(400, "Could not do that", f"<p>{escape(str(e))}</p>")
            done = {"/unsubscribe": "You are unsubscribed", "/confirm": "Subscription confirmed",
                    "/manage": "Saved"}[path]
            self._reply(200, done, f"<p>{escape(email)}: {escape(done.lower())}.</p>")

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def make_server(db_path: str, settings: Settings, host: str = "127.0.0.1", port: int = 8025
                ) -> ThreadingHTTPServer:
    if not settings.secret:
        raise NewsletterError("set NEWSLETTER_SECRET first: the links are signed with it")
    return ThreadingHTTPServer((host, port), make_handler(db_path, settings))
