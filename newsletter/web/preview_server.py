"""Previewing issues: one subscriber's issue for a given day, or every subscriber's current
issue served on 127.0.0.1 (`newsletter preview --serve`).

The server renders on every request, so a template or strings edit shows on reload
(render.py's caches follow the files' modification times). It sends and records nothing.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import date, datetime, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from zoneinfo import ZoneInfo

from newsletter import pipeline, render, store
from newsletter.config import Settings
from newsletter.errors import NewsletterError, SubscriberNotFound
from newsletter.models import Issue, Rendered, Subscriber

DEFAULT_PORT = 8025
_ISSUE_PATH = re.compile(r"/issue/([^/]+)\.(html|txt)")


def issue_time(sub: Subscriber, now: datetime, day: date | None = None) -> datetime:
    """When the issue is made: ``now``, or ``day`` at the subscriber's send hour in their
    time zone (as ``newsletter match --date`` does)."""
    if day is None:
        return now
    return datetime.combine(day, time(sub.send_hour), ZoneInfo(sub.timezone))


def preview(db: Any, email: str, settings: Settings, now: datetime, day: date | None = None,
            templates: Path = render.TEMPLATES) -> tuple[Issue, Rendered, datetime]:
    """(issue, rendered email, the time it is made) for ``email``, recording nothing."""
    when = issue_time(store.get_subscriber(db, email), now, day)
    issue, rendered = pipeline.preview(db, email, settings, when)
    if Path(templates) != render.TEMPLATES:
        rendered = render.render(issue, settings, templates=templates)
    return issue, rendered, when


def issue_path(email: str, kind: str = "html") -> str:
    return f"/issue/{quote(email, safe='@')}.{kind}"


def _filters(sub: Subscriber, t: dict[str, Any]) -> str:
    chips = ([(t["chip_author"], a) for a in sub.authors]
             + [(t["chip_topic"], x) for x in sub.topics]
             + [(t["chip_category"], c) for c in sub.categories]
             + [(t["chip_exclude"], e) for e in sub.exclude])
    return " ".join(f'<span class="chip">{html.escape(label)}: {html.escape(value)}</span>'
                    for label, value in chips) or '<span class="none">no filters</span>'


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{title}</title>
<style>
body {{ font: 15px/1.5 -apple-system, 'Segoe UI', Roboto, Arial, 'Noto Sans CJK SC',
       sans-serif; margin: 24px auto; max-width: 960px; padding: 0 16px; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; padding: 8px 10px; border-bottom: 1px solid #d1d5db;
         vertical-align: top; }}
.chip {{ display: inline-block; margin: 0 4px 4px 0; padding: 1px 8px; border-radius: 999px;
        background: #e0e7ff; color: #3730a3; font-size: 13px; }}
.none, .note {{ color: #6b7280; }}
.nowrap {{ white-space: nowrap; }}
td {{ overflow-wrap: anywhere; }}
@media (max-width: 720px) {{  /* a phone: one block per subscriber, no sideways scroll */
  table, tbody, tr, td {{ display: block; }}
  tr:first-child {{ display: none; }}
  tr {{ padding: 10px 0; border-bottom: 1px solid #d1d5db; }}
  td {{ border: 0; padding: 2px 0; }}
}}
</style></head><body>
<h1>{title}</h1>
<p class="note">{note}</p>
{body}
</body></html>
"""


def index_page(db: Any, settings: Settings, now: datetime, day: date | None = None,
               templates: Path = render.TEMPLATES) -> str:
    """Every subscriber with their filters, each issue (HTML and text) one click away."""
    rows = []
    for sub in store.list_subscribers(db):
        t = render.strings(sub.language, templates)
        when = issue_time(sub, now, day)
        links = (f'<a href="{issue_path(sub.email)}">HTML</a> · '
                 f'<a href="{issue_path(sub.email, "txt")}">text</a>')
        rows.append(
            f"<tr><td>{html.escape(sub.email)}<br><span class=note>"
            f"{html.escape(sub.name)}</span></td><td>{html.escape(t['language_name'])}</td>"
            f"<td>{html.escape(sub.status)}</td><td>{_filters(sub, t)}</td>"
            f"<td class=nowrap>{pipeline.issue_date_for(sub, when).isoformat()}</td>"
            f"<td class=nowrap>{links}</td></tr>")
    body = ("<table><tr><th>subscriber</th><th>language</th><th>status</th><th>filters</th>"
            "<th>issue of</th><th>preview</th></tr>\n" + "\n".join(rows) + "</table>"
            if rows else '<p>No subscribers yet: add one with '
            '<code>newsletter subscribers add EMAIL --author "NAME"</code>.</p>')
    moment = f"on {day.isoformat()} at each subscriber's send hour" if day \
        else f"as of {now.isoformat(timespec='minutes')}"
    return _PAGE.format(
        title=f"{html.escape(settings.brand)} - issue previews",
        note=f"Each issue as it would be made {html.escape(moment)}, rendered on every "
             "request: edit a template and reload. Nothing is sent or recorded.", body=body)


class PreviewServer(ThreadingHTTPServer):
    """Serves the index at ``/`` and each issue at ``/issue/<email>.html`` and ``.txt``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], settings: Settings,
                 now: Callable[[], datetime], day: date | None, templates: Path,
                 log: Callable[[str], None] | None) -> None:
        super().__init__(address, _Handler)
        self.settings, self.now, self.day = settings, now, day
        self.templates, self.log = Path(templates), log

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def page(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) for one request path."""
        db = store.open_db(self.settings.db)
        try:
            if path == "/":
                return 200, "text/html", index_page(db, self.settings, self.now(), self.day,
                                                    self.templates)
            m = _ISSUE_PATH.fullmatch(path)
            if not m:
                return 404, "text/plain", f"no page {path} - the index is at /"
            _, rendered, _ = preview(db, unquote(m.group(1)), self.settings, self.now(),
                                     self.day, self.templates)
            if m.group(2) == "txt":
                return 200, "text/plain", rendered.text
            return 200, "text/html", rendered.html
        except SubscriberNotFound as e:
            return 404, "text/plain", str(e)
        except NewsletterError as e:
            return 500, "text/plain", str(e)
        finally:
            db.close()


class _Handler(BaseHTTPRequestHandler):
    server: PreviewServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        status, content_type, text = self.server.page(urlsplit(self.path).path)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.log:
            self.server.log(f"{self.address_string()} {format % args}")


def make_server(settings: Settings, now: Callable[[], datetime], *, port: int = DEFAULT_PORT,
                day: date | None = None, templates: Path = render.TEMPLATES,
                log: Callable[[str], None] | None = None) -> PreviewServer:
    """A preview server bound to 127.0.0.1 (port 0 picks a free one); call
    ``serve_forever()`` on it. ``now`` is asked on every request."""
    return PreviewServer(("127.0.0.1", port), settings, now, day, templates, log)
