"""Issue -> email: Jinja2 -> MJML -> mjml-python -> premailer, plus a plain-text twin,
and the MIME message around them. No network access at render time."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import textwrap
import tomllib
from datetime import date, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2

from newsletter.config import REPO_ROOT, Settings
from newsletter.match import fold
from newsletter.models import Issue, Match, Rendered

TEMPLATES = REPO_ROOT / "templates"
ABSTRACT_CHARS = 600
MAX_AUTHORS = 12


@functools.lru_cache(maxsize=8)
def strings(language: str, templates: Path = TEMPLATES) -> dict[str, Any]:
    """The template's own words in one language (falls back to English)."""
    path = templates / "i18n" / f"{language}.toml"
    if not path.exists():
        path = templates / "i18n" / "en.toml"
    with open(path, "rb") as f:
        return tomllib.load(f)


def languages(templates: Path = TEMPLATES) -> list[str]:
    return sorted(p.stem for p in (templates / "i18n").glob("*.toml"))


def _wrap(text: str, width: int = 78, indent: str = "") -> str:
    return textwrap.fill(" ".join(str(text).split()), width=width, subsequent_indent=indent,
                         break_long_words=False, break_on_hyphens=False)


@functools.lru_cache(maxsize=4)
def environments(templates: Path = TEMPLATES) -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(templates))
    html = jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True,
                              lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = jinja2.Environment(loader=loader, autoescape=False, trim_blocks=True,
                              lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text.filters["wrap"] = _wrap
    text.filters["cite"] = lambda n: f"[{n:02d}]"
    return html, text


def format_date(d: date, t: dict[str, Any]) -> str:
    return str(t["date_format"]).format(year=d.year, month=d.month, day=d.day,
                                        month_name=t["months"][d.month - 1])


def shorten(text: str, limit: int) -> tuple[str, bool]:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text, False
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …", True


def unsubscribe_token(secret: str, email: str) -> str:
    return hmac.new(secret.encode(), fold(email).encode(), hashlib.sha256).hexdigest()[:32]


def unsubscribe_links(settings: Settings, email: str) -> tuple[str, str | None]:
    """(mailto link, https link or None) for List-Unsubscribe and the footer."""
    sender = parseaddr(settings.from_addr)[1]
    token = unsubscribe_token(settings.secret, email) if settings.secret else ""
    subject = f"unsubscribe {token}".strip()
    mailto = f"mailto:{sender}?subject={quote(subject)}"
    web = None
    if settings.unsubscribe_url and token:
        web = (f"{settings.unsubscribe_url.rstrip('/')}/unsubscribe?"
               f"email={quote(email)}&token={token}")
    return mailto, web


def _paper_context(n: int, m: Match, abstract_chars: int) -> dict[str, Any]:
    p = m.paper
    followed = {fold(a) for a in m.followed_authors}
    authors = [(a, fold(a) in followed) for a in p.authors]
    shown = authors[:MAX_AUTHORS]
    for a in authors[MAX_AUTHORS:]:  # never hide a followed author behind "+N"
        if a[1]:
            shown.append(a)
    abstract, truncated = shorten(p.abstract, abstract_chars)
    links = []
    if p.pdf_url:
        links.append(("PDF", p.pdf_url))
    if p.doi:
        links.append(("DOI", f"https://doi.org/{p.doi}"))
    if p.code_url:
        links.append(("Code", p.code_url))
    return {
        "n": f"{n:02d}",
        "badge": p.badge,
        "date": p.published.date().isoformat(),
        "title": p.title,
        "url": p.url,
        "authors": shown,
        "more_authors": len(authors) - len(shown),
        "author_line": ", ".join(p.authors[:MAX_AUTHORS])
        + (f", +{len(p.authors) - MAX_AUTHORS}" if len(p.authors) > MAX_AUTHORS else ""),
        "first_author": (p.authors[0] + (" et al." if len(p.authors) > 1 else ""))
        if p.authors else "",
        "abstract": abstract,
        "truncated": truncated,
        "links": links,
        "why": "; ".join(m.reasons),
    }


def context(issue: Issue, settings: Settings, abstract_chars: int = ABSTRACT_CHARS
            ) -> dict[str, Any]:
    t = strings(issue.subscriber.language)
    sub = issue.subscriber
    count = len(issue.matches) + len(issue.more)
    date_str = format_date(issue.issue_date, t)
    subject_tpl = t["subject_one"] if count == 1 else t["subject"]
    lead = (t["preheader_lead"].format(title=issue.matches[0].paper.title)
            if issue.matches else "")
    chips = ([(t["chip_author"], a) for a in sub.authors]
             + [(t["chip_topic"], x) for x in sub.topics]
             + [(t["chip_category"], c) for c in sub.categories]
             + [(t["chip_exclude"], e) for e in sub.exclude])
    mailto, web = unsubscribe_links(settings, sub.email)
    fields = t.get("fields", {})
    papers = [_paper_context(n, m, abstract_chars) for n, m in enumerate(issue.matches, 1)]
    more = [_paper_context(n, m, 0) for n, m in
            enumerate(issue.more, len(issue.matches) + 1)]
    field_names = [fields.get(th.title, th.title) for th in issue.brief.themes] \
        if issue.brief else []
    return {
        "t": t,
        "brand": settings.brand,
        "subscriber": sub,
        "date_str": date_str,
        "subject": subject_tpl.format(brand=settings.brand.split(" · ")[0], date=date_str,
                                      count=count),
        "preheader": t["preheader"].format(count=count, lead=lead),
        "chips": chips,
        "brief": issue.brief,
        "extractive_headline": t["extractive_headline"].format(
            count=len(issue.matches), fields=t.get("list_sep", ", ").join(field_names)),
        "field_name": lambda key: fields.get(key, key),
        "papers": papers,
        "more": more,
        "unsubscribe_url": web or mailto,
        "unsubscribe_is_web": bool(web),
        "contact": settings.contact,
    }


def to_html(mjml_source: str) -> str:
    """MJML -> HTML with no remote fonts, CSS inlined with no network access."""
    import logging

    import mjml
    import premailer

    # MRML rejects white space between </mj-style> and </mj-head>: tidy the head first
    head_end = mjml_source.find("</mj-head>")
    if head_end > 0:
        head = re.sub(r">\s+<", "><", mjml_source[:head_end].rstrip())
        mjml_source = head + mjml_source[head_end:]
    html = mjml.mjml2html(mjml_source, fonts={}, disable_comments=True)
    inlined = premailer.Premailer(
        html, allow_network=False, keep_style_tags=True, remove_classes=False,
        strip_important=False, cssutils_logging_level=logging.CRITICAL,
        disable_validation=True,
    ).transform()
    if "<!doctype" not in inlined[:200].lower():
        inlined = "<!doctype html>\n" + inlined
    return inlined.replace(
        "<head>", '<head>\n<meta name="color-scheme" content="light dark">\n'
        '<meta name="supported-color-schemes" content="light dark">', 1)


def render(issue: Issue, settings: Settings, abstract_chars: int = ABSTRACT_CHARS) -> Rendered:
    html_env, text_env = environments()
    ctx = context(issue, settings, abstract_chars)
    mjml_source = html_env.get_template("issue.mjml.j2").render(ctx)
    text = text_env.get_template("issue.txt.j2").render(ctx)
    return Rendered(subject=ctx["subject"], html=to_html(mjml_source), text=text,
                    mjml=mjml_source, preheader=ctx["preheader"])


def message_id(email: str, issue_date: date, from_addr: str) -> str:
    digest = hashlib.sha256(f"{fold(email)}|{issue_date.isoformat()}".encode()).hexdigest()[:20]
    domain = parseaddr(from_addr)[1].partition("@")[2] or "localhost"
    return f"<{issue_date.strftime('%Y%m%d')}.{digest}@{domain}>"


def build_message(issue: Issue, rendered: Rendered, settings: Settings,
                  now: datetime) -> EmailMessage:
    sub = issue.subscriber
    msg = EmailMessage()
    msg["From"] = settings.from_addr
    msg["To"] = formataddr((sub.name, sub.email)) if sub.name else sub.email
    msg["Reply-To"] = settings.reply_to or settings.from_addr
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id(sub.email, issue.issue_date, settings.from_addr)
    sender_domain = parseaddr(settings.from_addr)[1].partition("@")[2] or "localhost"
    msg["List-Id"] = f"{settings.brand.split(' · ')[0]} <daily.{sender_domain}>"
    mailto, web = unsubscribe_links(settings, sub.email)
    msg["List-Unsubscribe"] = f"<{mailto}>" + (f", <{web}>" if web else "")
    if web:
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg
