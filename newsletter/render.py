"""Issue -> email: Jinja2 -> MJML -> mjml-python -> premailer, plus a plain-text twin,
and the MIME message around them. No network access at render time.

Rendering is fast because MJML and premailer see each *layout* once, not each reader:

1. Jinja2 renders the whole personal MJML document (``Rendered.mjml``).
2. The content of every ending tag (``mj-text``, ``mj-title``, ``mj-preview``, ...) is cut
   out and replaced by a numbered slot; what is left, the *skeleton*, depends only on the
   language, the templates and how many cards there are.
3. The skeleton goes through MJML and premailer once and is cached (:func:`_compile`);
   premailer inlines the ``<mj-style inline="inline">`` rules into it (MJML's meaning of
   that attribute) and leaves every other style block alone.
4. The same inline rules are applied to the cut-out content by :class:`Inliner`, a small
   inliner for ``tag``, ``.class`` and ``tag.class`` selectors, and the content goes back
   into its slots. ``to_html(source, cached=False)`` runs the whole document through
   premailer instead; a test checks both give the same document.

An issue whose HTML would pass :data:`HTML_BUDGET` bytes (Gmail clips an HTML part over
102 KB) gets shorter abstracts, then moves its last papers into "More matches".
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import secrets
import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import markupsafe

from newsletter.config import REPO_ROOT, Settings
from newsletter.mail import headers
from newsletter.mail.headers import unsubscribe_links
from newsletter.models import Brief, Issue, Match, Rendered
from newsletter.safety.untrusted import http_url
from newsletter.text import display_width, fold
from newsletter.web.links import feedback_url, page_url

TEMPLATES = REPO_ROOT / "templates"
ABSTRACT_CHARS = 600
MAX_AUTHORS = 12
HTML_BUDGET = headers.HTML_BUDGET  # bytes of HTML as sent; Gmail clips a part over 102 KB
ABSTRACT_STEPS = (400, 250, 150)  # abstract lengths tried, in order, when over budget
DIGEST_SENTENCES = 5  # quoted sentences in the extractive digest, shared among its fields
DIGEST_CHARS = 160  # and the longest a quoted sentence gets
# After the preheader, invisible characters keep inbox previews from running on into the
# body text ("ACADEMICHUB · CURATED DAILY Your research radar ...").
PREHEADER_FILLER = markupsafe.Markup("&#847;&zwnj;&nbsp;" * 40)
_LANGUAGE_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*")


# --- the template's own words ------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _load_toml(path: str, mtime_ns: int) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)


def _toml(path: Path) -> dict[str, Any]:
    """A strings file, re-read when it changes on disk."""
    return _load_toml(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _merged(base: str, base_mtime: int, own: str, own_mtime: int) -> dict[str, Any]:
    english, theirs = _load_toml(base, base_mtime), _load_toml(own, own_mtime)
    out = {**english, **theirs}
    for key, value in english.items():  # nested tables ([fields]) merge key by key
        if isinstance(value, dict) and isinstance(theirs.get(key), dict):
            out[key] = {**value, **theirs[key]}
    return out


def strings(language: str, templates: Path = TEMPLATES) -> dict[str, Any]:
    """The template's own words in one language: ``templates/i18n/<language>.toml`` over
    English, so a strings file that lacks a key still renders. Adding a language is adding
    one such file. The result is shared: do not change it."""
    if _FROZEN is not None:
        key = ("strings", language, str(templates))
        found = _FROZEN.get(key)
        if found is None:
            found = _FROZEN[key] = _strings(language, templates)
        return found  # type: ignore[no-any-return]
    return _strings(language, templates)


def _strings(language: str, templates: Path) -> dict[str, Any]:
    folder = Path(templates) / "i18n"
    english = folder / "en.toml"
    path = folder / f"{language}.toml"
    if language == "en" or not _LANGUAGE_CODE.fullmatch(language) or not path.exists():
        return _toml(english)
    return _merged(str(english), english.stat().st_mtime_ns, str(path),
                   path.stat().st_mtime_ns)


def languages(templates: Path = TEMPLATES) -> list[str]:
    """The language codes that have a strings file."""
    return sorted(p.stem for p in (Path(templates) / "i18n").glob("*.toml"))


def format_date(d: date, t: dict[str, Any]) -> str:
    return str(t["date_format"]).format(year=d.year, month=d.month, day=d.day,
                                        month_name=t["months"][d.month - 1])


def format_number(n: int, t: dict[str, Any]) -> str:
    """An integer with the language's digit grouping (1,234 / 1,234 / 1 234 ...)."""
    return f"{n:,}".replace(",", t["thousands_sep"])


# --- Jinja2 ------------------------------------------------------------------------------


def _atoms(word: str) -> list[tuple[str, bool]]:
    """A word as pieces that may end a line, each with "glued to the previous piece":
    ASCII words stay whole; text without spaces (Chinese) may break between characters."""
    if word.isascii():
        return [(word, False)]
    atoms: list[tuple[str, bool]] = []
    run = ""
    for ch in word:
        if display_width(ch) == 2:
            if run:
                atoms.append((run, bool(atoms)))
                run = ""
            atoms.append((ch, bool(atoms)))
        else:
            run += ch
    if run:
        atoms.append((run, bool(atoms)))
    return atoms


@functools.lru_cache(maxsize=4096)
def wrap(text: str, width: int = 78, indent: str = "") -> str:
    """Fill ``text`` to ``width`` columns, continuation lines indented by ``indent``, never
    breaking a word or a URL; Chinese text, which has no spaces, breaks between characters.
    Cached: a paper's title, authors and abstract come round again in other readers'
    issues."""
    atoms = [a for word in str(text).split() for a in _atoms(word)]
    if not atoms:
        return ""
    lines: list[str] = []
    line, limit = atoms[0][0], width
    used = display_width(line)
    for piece, glued in atoms[1:]:
        sep = "" if glued else " "
        cols = display_width(piece)
        if used + len(sep) + cols <= limit:
            line += sep + piece
            used += len(sep) + cols
        else:
            lines.append(line)
            line, used, limit = piece, cols, width - len(indent)
    lines.append(line)
    return ("\n" + indent).join(lines)


class _Environment(jinja2.Environment):
    """Jinja's environment, reading a dict's key before trying it as an attribute: the
    templates read ``p.title`` from plain dicts hundreds of times an issue, and Jinja's
    own order (the attribute first) pays for an AttributeError on every one."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


def environments(templates: Path = TEMPLATES) -> tuple[jinja2.Environment, jinja2.Environment]:
    """(HTML environment, text environment) for a templates folder. Compiled templates are
    cached and reloaded when their file changes (Jinja's auto_reload), except inside
    :func:`frozen`."""
    if _FROZEN is not None:
        found = _FROZEN.get(("env", str(templates)))
        if found is None:
            found = _FROZEN[("env", str(templates))] = _environments(templates, False)
        return found  # type: ignore[no-any-return]
    return _auto_reloading(templates)


@functools.lru_cache(maxsize=8)
def _auto_reloading(templates: Path) -> tuple[jinja2.Environment, jinja2.Environment]:
    return _environments(templates, True)


def _environments(templates: Path, auto_reload: bool
                  ) -> tuple[jinja2.Environment, jinja2.Environment]:
    loader = jinja2.FileSystemLoader(str(templates))
    html = _Environment(loader=loader, autoescape=True, trim_blocks=True,
                        lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                        auto_reload=auto_reload)
    text = _Environment(loader=loader, autoescape=False, trim_blocks=True,
                        lstrip_blocks=True, undefined=jinja2.StrictUndefined,
                        auto_reload=auto_reload)
    text.filters["wrap"] = wrap
    text.filters["cite"] = lambda n: f"[{int(n):02d}]"
    return html, text


# While a run renders (frozen): the environments and strings it loaded, kept as they were.
_FROZEN: dict[tuple[str, ...], Any] | None = None


@contextlib.contextmanager
def frozen() -> Iterator[None]:
    """Inside the block, templates and strings files are read once, when first used, and
    kept as they were: a run gives every reader the same templates, without asking the
    disk whether a file changed a dozen times an email (render workers forked inside the
    block keep what it loaded)."""
    global _FROZEN
    outer = _FROZEN
    if outer is None:
        _FROZEN = {}
    try:
        yield
    finally:
        _FROZEN = outer


# --- what the templates see --------------------------------------------------------------


@functools.lru_cache(maxsize=4096)  # an abstract comes round again in other readers' issues
def shorten(text: str, limit: int) -> tuple[str, bool]:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text, False
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(",;:")
    return cut + " …", True


def _reply_link(settings: Settings, subject: str) -> str:
    """A mailto: link that opens a reply to the sender with this subject."""
    to = headers.address(settings.reply_to or settings.from_addr)
    return f"mailto:{to}?subject={quote(subject)}"


@functools.lru_cache(maxsize=4096)
def _folds(names: tuple[str, ...]) -> tuple[str, ...]:
    """A paper's author names folded (text.fold), once per paper, not once per reader."""
    return tuple(fold(a) for a in names)


@functools.lru_cache(maxsize=4096)
def _doi_url(doi: str) -> str:
    return f"https://doi.org/{quote(doi, safe='/:;()._-')}"


def _why(reasons: Sequence[str], t: dict[str, Any]) -> str:
    """Why a paper is in the issue, in the reader's words: "author: Ada" -> "作者：Ada"."""
    out = []
    for reason in reasons:
        kind, sep, value = reason.partition(": ")
        label = t.get("reasons", {}).get(kind if sep else reason)
        if label is None:
            out.append(reason)
        else:
            out.append(label + t["colon"] + value if sep else label)
    return t["reason_sep"].join(out)


def paper_context(n: int, m: Match, abstract_chars: int, t: dict[str, Any],
                   note: str = "") -> dict[str, Any]:
    p = m.paper
    followed = {fold(a) for a in m.followed_authors}
    authors = [(a, f in followed) for a, f in zip(p.authors, _folds(p.authors), strict=True)] \
        if followed else [(a, False) for a in p.authors]
    shown = authors[:MAX_AUTHORS]
    for a in authors[MAX_AUTHORS:]:  # never hide a followed author behind "+N"
        if a[1]:
            shown.append(a)
    abstract, truncated = shorten(p.abstract, abstract_chars)
    links = []  # only http(s) links ever render, whatever the database holds
    if http_url(p.pdf_url):
        links.append((t["link_pdf"], http_url(p.pdf_url)))
    if p.doi:
        links.append((t["link_doi"], _doi_url(p.doi)))
    if http_url(p.code_url):
        links.append((t["link_code"], http_url(p.code_url)))
    sep = t["list_sep_authors"]
    return {
        "n": f"{n:02d}",
        "anchor": f"p{n:02d}",
        "badge": p.badge,
        "date": format_date(p.published.date(), t),
        "title": p.title,
        "url": http_url(p.url) or "",
        "authors": shown,
        "more_authors": len(authors) - len(shown),
        "author_line": sep.join(p.authors[:MAX_AUTHORS])
        + (f"{sep}+{format_number(len(p.authors) - MAX_AUTHORS, t)}"
           if len(p.authors) > MAX_AUTHORS else ""),
        "first_author": (p.authors[0] + (t["et_al"] if len(p.authors) > 1 else ""))
        if p.authors else "",
        "abstract": abstract,
        "truncated": truncated,
        "links": links,
        "why": _why(m.reasons, t),
        "note": note,
    }


FEEDBACK = ("relevant", "not_relevant")  # the verdicts a card's feedback links give
_CARDS: OrderedDict[tuple[Any, ...], tuple[dict[str, Any], str, str, dict[str, Any]]] = \
    OrderedDict()
CARDS_KEPT = 1024  # cards _card remembers, the most recently used
_cards_lock = threading.Lock()
# stands in for a reader's link in a shared card; random, so no paper's text can hold it
_STAND_IN = f"@@nl-{secrets.token_hex(8)}-{{}}@@"
_NUMBER = _STAND_IN.format("number")
_NOTE, _NOTE_LINE = _STAND_IN.format("note"), _STAND_IN.format("note-line")


def _shared(key: tuple[Any, ...], t: dict[str, Any],
            make: Callable[[], tuple[dict[str, Any], str, str]]
            ) -> tuple[dict[str, Any], str, str]:
    """``make()``'s (context, MJML, text) from _CARDS, the most recently used kept; made
    again when missing or made with other strings than ``t`` (a changed strings file)."""
    with _cards_lock:  # the preview server renders on several threads
        found = _CARDS.get(key)
        if found is not None:
            _CARDS.move_to_end(key)
    if found is None or found[3] is not t:
        found = (*make(), t)
        with _cards_lock:
            _CARDS[key] = found
            while len(_CARDS) > CARDS_KEPT:
                _CARDS.popitem(last=False)  # the least recently used
    return found[0], found[1], found[2]


def _card(templates: tuple[jinja2.Template, jinja2.Template], t: dict[str, Any], n: int,
          m: Match, abstract_chars: int, note: str, brief: Brief | None,
          feedback: list[tuple[str, str]]) -> dict[str, Any]:
    """Paper ``n``'s card, or line in "More matches": its context (paper_context) with
    ``feedback`` links as (label, URL), and its part of the email as ``mjml`` and ``text``
    (from the pair of ``templates``). A lab's readers get the same paper for the same
    reasons, so this is made once for all of them, with stand-ins for the reader's own
    number, links and model's note (its brief's) that are put in here. The key has
    everything else the card shows, the templates (a changed file is a new one) and the
    strings (checked to be the same object: a changed strings file is a new one)."""
    model = (brief.model or "") if note and brief is not None else ""
    key = (templates, id(t), m.paper, m.reasons, m.followed_authors, abstract_chars,
           bool(note), model, tuple(v for v, _ in feedback))

    def make() -> tuple[dict[str, Any], str, str]:
        card = paper_context(n, m, abstract_chars, t, _NOTE if note else "")
        card["n"], card["anchor"] = _NUMBER, "p" + _NUMBER  # the number is the reader's too
        card["note_line"] = _NOTE_LINE
        card["feedback"] = [(t[f"feedback_{v}"], _STAND_IN.format(v)) for v, _ in feedback]
        return (card, templates[0].render(p=card, t=t, brief=brief),
                templates[1].render(p=card, t=t, brief=brief))

    card, mjml, text = _shared(key, t, make)
    number = f"{n:02d}"
    mjml, text = mjml.replace(_NUMBER, number), text.replace(_NUMBER, number)
    note_line = ""
    if note:  # the model's note on this paper: its own for each brief
        note_line = wrap(t["paper_note_label"].format(model=model) + t["colon"] + note,
                         indent="    ")
        mjml = mjml.replace(_NOTE, markupsafe.escape(note))
        text = text.replace(_NOTE_LINE, note_line)
    for v, url in feedback:
        mjml = mjml.replace(_STAND_IN.format(v), markupsafe.escape(url))
        text = text.replace(_STAND_IN.format(v), url)
    return {**card, "n": number, "anchor": f"p{number}", "note": note, "note_line": note_line,
            "feedback": [(t[f"feedback_{v}"], url) for v, url in feedback],
            "mjml": markupsafe.Markup(mjml), "text": text}


def _brief_view(t: dict[str, Any], brief: Brief | None, shown: int) -> dict[str, Any]:
    """What the brief's templates see: the brief, the model's claims and connections or the
    extractive digest, and the digest's headline. ``shown``: papers with a card."""
    fields = t.get("fields", {})
    field_names = [fields.get(th.title, th.title) for th in brief.themes] if brief else []
    # the papers the brief covers (some may have moved to "More matches" to fit the budget)
    briefed = len(brief.per_paper) if brief else shown
    llm = brief is not None and brief.kind == "llm"
    return {
        "t": t,
        "brief": brief,
        "digest": digest(brief, shown, fields) if brief and not llm else [],
        "extractive_headline": t["extractive_headline_one" if briefed == 1
                                 else "extractive_headline"].format(
            count=format_number(briefed, t), fields=t["list_sep"].join(field_names)),
        "claims": claims_view(brief) if brief and llm else [],
        "connections": claims_view(brief, connections=True) if brief and llm else [],
    }


def _brief_parts(templates: tuple[jinja2.Template, jinja2.Template], t: dict[str, Any],
                 brief: Brief | None, shown: int) -> tuple[markupsafe.Markup, str]:
    """The brief's part of the email (MJML, text): made once for every reader with the same
    brief (the same papers, in the same language) and as many cards; keyed like _card."""
    if brief is None:
        return markupsafe.Markup(""), ""

    def make() -> tuple[dict[str, Any], str, str]:
        view = _brief_view(t, brief, shown)
        return {}, templates[0].render(view), templates[1].render(view)

    _, mjml, text = _shared(("brief", templates, id(t), brief, shown), t, make)
    return markupsafe.Markup(mjml), text


def _cite_runs(cites: Sequence[int]) -> list[dict[str, Any]]:
    """[2, 3, 4, 5, 7] -> runs for "[02]–[05] [07]": each run's ``text`` (plain-text part)
    and its ``ends`` as (number, card anchor) to link (HTML part)."""
    runs: list[list[int]] = []
    for c in sorted(cites):
        if runs and c == runs[-1][-1] + 1:
            runs[-1].append(c)
        else:
            runs.append([c])
    out: list[dict[str, Any]] = []
    for run in runs:
        pieces = [run] if len(run) >= 3 else [[c] for c in run]
        for piece in pieces:
            ends = [(f"{c:02d}", f"p{c:02d}") for c in dict.fromkeys((piece[0], piece[-1]))]
            out.append({"text": "–".join(f"[{n}]" for n, _ in ends), "ends": ends})
    return out


def claims_view(brief: Brief, connections: bool = False) -> list[dict[str, Any]]:
    """The model's themes (or connections) as the templates show them: title, text, and
    each citation as (number, card anchor ``pNN``, the quote that backs it). A page that
    shows the brief over the cards (the radar page) links citations the same way."""
    out = []
    for claim in brief.connections if connections else brief.themes:
        quotes = claim.quotes + ("",) * (len(claim.cites) - len(claim.quotes))
        out.append({"title": claim.title, "text": claim.text,
                    "cites": [(f"{c:02d}", f"p{c:02d}", q)
                              for c, q in zip(claim.cites, quotes, strict=True)]})
    return out


def digest(brief: Brief, shown: int, fields: dict[str, str],
           sentences: int = DIGEST_SENTENCES) -> list[dict[str, Any]]:
    """The extractive digest, short enough to leave the first paper above the fold: per
    field its name, up to a fair share of ``sentences`` quoted opening sentences
    ``(cite, sentence)`` cut to :data:`DIGEST_CHARS`, and the field's other papers as
    citations (runs of three or more as ``[02]–[05]``). Papers past ``shown`` (moved to
    "More matches") are cited but not quoted."""
    if not brief.themes:
        return []
    share = max(1, sentences // len(brief.themes))
    left = sentences
    out = []
    for theme in brief.themes:
        quotable = [c for c in theme.cites if c <= min(shown, len(brief.per_paper))]
        take = quotable[:max(0, min(share, left))]
        left -= len(take)
        out.append({"name": fields.get(theme.title, theme.title),
                    "lines": [(f"{c:02d}", shorten(brief.per_paper[c - 1], DIGEST_CHARS)[0])
                              for c in take],
                    "rest": _cite_runs([c for c in theme.cites if c not in take])})
    return out


def context(issue: Issue, settings: Settings, abstract_chars: int = ABSTRACT_CHARS,
            templates: Path = TEMPLATES) -> dict[str, Any]:
    t = strings(issue.subscriber.language, templates)
    sub = issue.subscriber
    count = len(issue.matches) + len(issue.more)
    date_str = format_date(issue.issue_date, t)
    subject_tpl = t["subject_one"] if count == 1 else t["subject"]
    lead = (t["preheader_lead"].format(title=issue.matches[0].paper.title)
            if issue.matches else "")
    # with a web URL, the chips' x and "more matches" open the subscriber's radar page
    issued = datetime.combine(issue.issue_date, time(12), UTC)
    radar = page_url(settings, sub.email, sub.link_generation, issued)
    chips = []
    for label, values in ((t["chip_author"], sub.authors), (t["chip_topic"], sub.topics),
                          (t["chip_category"], sub.categories),
                          (t["chip_exclude"], sub.exclude)):
        for value in values:
            chips.append({"label": label, "value": value, "remove": radar + "#filters-h"
                          if radar else _reply_link(settings, t["chip_remove_subject"].format(
                              filter=label + t["colon"] + value))})
    mailto, web = unsubscribe_links(settings, sub.email)
    brief = issue.brief
    notes = brief.per_paper if brief and brief.kind == "llm" else ()
    html_env, text_env = environments(templates)
    card_templates = (html_env.get_template("partials/card.mjml.j2"),
                      text_env.get_template("partials/card.txt.j2"))
    line_templates = (html_env.get_template("partials/more_item.mjml.j2"),
                      text_env.get_template("partials/more_item.txt.j2"))
    papers = []
    for n, m in enumerate(issue.matches, 1):
        # with a web URL, each card carries signed one-click "relevant / not relevant" links
        feedback = [(v, url) for v in FEEDBACK
                    if (url := feedback_url(settings, sub.email, sub.link_generation, issued,
                                            m.paper.id, v))]
        papers.append(_card(card_templates, t, n, m, abstract_chars,
                            notes[n - 1] if n <= len(notes) else "", brief, feedback))
    # a "More matches" line shows the paper, not why it is there: one line for all readers
    more = [_card(line_templates, t, n, Match(m.paper, 0.0, ()), 0, "", None, [])
            for n, m in enumerate(issue.more, len(issue.matches) + 1)]
    brief_mjml, brief_text = _brief_parts((html_env.get_template("partials/brief.mjml.j2"),
                                           text_env.get_template("partials/brief.txt.j2")),
                                          t, issue.brief, len(papers))
    return {
        "t": t,
        "brief_mjml": brief_mjml,
        "brief_text": brief_text,
        "brand": settings.brand,
        "subscriber": sub,
        "date_str": date_str,
        "subject": subject_tpl.format(brand=settings.brand.split(" · ")[0], date=date_str,
                                      count=format_number(count, t)),
        "preheader": t["preheader"].format(count=format_number(count, t), lead=lead),
        "preheader_filler": PREHEADER_FILLER,
        "chips": chips,
        "brief": issue.brief,
        "papers": papers,
        "more": more,
        "more_note": t["more_note"].format(count=format_number(len(more), t)),
        "unsubscribe_url": web or mailto,
        "unsubscribe_is_web": bool(web),
        "change_url": radar or _reply_link(settings, t["change_subject"]),
        "radar_url": radar,
        "more_url": radar + "#papers" if radar else None,
        "contact": settings.contact,
    }


# --- MJML -> HTML, one layout at a time --------------------------------------------------

_ENDING_TAGS = ("mj-text", "mj-button", "mj-table", "mj-raw", "mj-title", "mj-preview")
_ENDING_OPEN = re.compile(rf'<({"|".join(_ENDING_TAGS)})(?:[^>"]|"[^"]*")*(?<!/)>')
_ENDING_CLOSE = {tag: re.compile(rf"</{tag}\s*>") for tag in _ENDING_TAGS}
_INLINE_STYLE = re.compile(r'<mj-style\s+inline="inline"\s*>(.*?)</mj-style>\s*', re.S)
_SLOT = re.compile(r"@@nl-slot-(\d+)@@")
_HEAD_END = "</mj-head>"
_compile_lock = threading.Lock()


def _one_line(content: str) -> str:
    """Every line break, with the white space around it, as one space (they render alike):
    the stripped lines joined by spaces."""
    content = content.strip()
    if "\n" not in content:
        return content
    return " ".join(line for line in map(str.strip, content.split("\n")) if line)


def _tidy_head(source: str) -> str:
    # MRML rejects white space between </mj-style> and </mj-head>: tidy the head first
    head_end = source.find(_HEAD_END)
    if head_end > 0:
        head = re.sub(r">\s+<", "><", source[:head_end].rstrip())
        source = head + source[head_end:]
    return source


def hollow(source: str) -> tuple[str, str, list[tuple[str, str]]]:
    """Split MJML into (skeleton, inline CSS, slots): the skeleton has every ending tag's
    content replaced by a numbered slot; slots are (tag, content) with line breaks folded."""
    inline_css = "\n".join(_INLINE_STYLE.findall(source))
    source = _INLINE_STYLE.sub("", source)
    slots: list[tuple[str, str]] = []
    pieces: list[str] = []
    pos = 0
    while (m := _ENDING_OPEN.search(source, pos)) is not None:
        tag = m.group(1)
        end = _ENDING_CLOSE[tag].search(source, m.end())
        if end is None:  # no end tag: MJML will say what is wrong with the document
            break
        slots.append((tag, _one_line(source[m.end():end.start()])))
        pieces.append(source[pos:m.end()])
        pieces.append(f"@@nl-slot-{len(slots) - 1}@@</{tag}>")
        pos = end.end()
    pieces.append(source[pos:])
    return _tidy_head("".join(pieces)), inline_css, slots


def _finish(html: str) -> str:
    if "<!doctype" not in html[:200].lower():
        html = "<!doctype html>\n" + html
    return html.replace(
        "<head>", '<head>\n<meta name="color-scheme" content="light dark">\n'
        '<meta name="supported-color-schemes" content="light dark">', 1)


def _mjml_and_premailer(source: str, inline_css: str) -> str:
    """MJML -> HTML with no remote fonts; premailer inlines ``inline_css`` and nothing
    else (every style block MJML wrote stays in the head as it is; the inlined rules do
    not, as with MJML's own inlining), with no network access."""
    import logging

    import mjml
    import premailer

    html = mjml.mjml2html(source, fonts={}, disable_comments=True)
    html = html.replace("<style", '<style data-premailer="ignore"')
    html = premailer.Premailer(
        html, css_text=[inline_css] if inline_css.strip() else None, allow_network=False,
        keep_style_tags=False, remove_classes=False, strip_important=False,
        cssutils_logging_level=logging.CRITICAL, disable_validation=True,
    ).transform(pretty_print=False)
    return _finish(html.replace(' data-premailer="ignore"', ""))


@functools.lru_cache(maxsize=64)
def _compile(skeleton: str, inline_css: str) -> str:
    with _compile_lock:  # cssutils keeps global state
        return _mjml_and_premailer(skeleton, inline_css)


INLINED_KEPT = 512  # fragments an Inliner remembers
TAGS_KEPT = 4096  # start tags it remembers (then it starts again)


class Inliner:
    """Apply CSS rules whose selectors are ``tag``, ``.class`` or ``tag.class`` to the
    start tags of an HTML fragment, as premailer would: rules in order of specificity,
    then source order; the element's own style attribute wins."""

    _RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
    _SELECTOR = re.compile(r"([a-z][a-z0-9]*)?((?:\.[A-Za-z_][\w-]*)*)")
    _TAG = re.compile(r"<([a-zA-Z][a-zA-Z0-9]*)(\s[^<>]*?)?(/?)>")
    _CLASS = re.compile(r'(?:^|\s)class="([^"]*)"')
    _STYLE = re.compile(r'\sstyle="([^"]*)"')

    def __init__(self, css: str) -> None:
        css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
        if "@" in css:
            raise ValueError("inline CSS cannot hold @-rules; put them in a plain mj-style")
        rules: list[tuple[tuple[int, int, int], str | None, frozenset[str],
                          list[tuple[str, str]]]] = []
        for selectors, body in self._RULE.findall(css):
            decls = self.declarations(body.replace('"', "'"))
            for selector in selectors.split(","):
                m = self._SELECTOR.fullmatch(selector.strip())
                if not selector.strip() or not m:
                    raise ValueError(f"inline CSS selector {selector.strip()!r} is not "
                                     "supported: use tag, .class or tag.class")
                classes = frozenset(c for c in m.group(2).split(".") if c)
                order = (len(classes), 1 if m.group(1) else 0, len(rules))
                rules.append((order, m.group(1), classes, decls))
        self.rules = sorted(rules, key=lambda rule: rule[0])
        self.tags = {tag for _, tag, classes, _ in self.rules if tag and not classes}
        self._cache: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._done: OrderedDict[str, str] = OrderedDict()
        self._tags: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def declarations(style: str) -> list[tuple[str, str]]:
        out = []
        for decl in style.split(";"):
            name, sep, value = decl.partition(":")
            if sep and name.strip():
                out.append((name.strip().lower(), value.strip()))
        return out

    def _matching(self, tag: str, classes: str) -> list[tuple[str, str]]:
        key = (tag, classes)
        if key not in self._cache:
            have = set(classes.split())
            found: dict[str, str] = {}
            for _, rule_tag, rule_classes, decls in self.rules:
                if (rule_tag is None or rule_tag == tag) and rule_classes <= have:
                    found.update(decls)
            self._cache[key] = list(found.items())
        return self._cache[key]

    def _tag(self, m: re.Match[str]) -> str:
        whole = m.group(0)
        done = self._tags.get(whole)  # a tag comes round again: <span class="nl-muted">
        if done is None:
            if len(self._tags) >= TAGS_KEPT:
                self._tags.clear()
            done = self._tags[whole] = self._styled(m)
        return done

    def _styled(self, m: re.Match[str]) -> str:
        tag, attrs, close = m.group(1).lower(), m.group(2) or "", m.group(3)
        cls = self._CLASS.search(attrs)
        if cls is None and tag not in self.tags:
            return m.group(0)
        found = self._matching(tag, cls.group(1) if cls else "")
        if not found:
            return m.group(0)
        style = dict(found)
        own = self._STYLE.search(attrs)
        if own:
            style.update(self.declarations(own.group(1)))
            attrs = attrs[:own.start()] + attrs[own.end():]
        css = ";".join(f"{k}:{v}" for k, v in style.items())
        return f'<{m.group(1)}{attrs} style="{css}"{close}>'

    def __call__(self, fragment: str) -> str:
        if not self.rules:
            return fragment
        # a paper's card comes round again in other readers' issues; a reader's own header
        # and footer do not, and the least recently used go first
        with self._lock:
            done = self._done.get(fragment)
            if done is not None:
                self._done.move_to_end(fragment)
                return done
        done = self._TAG.sub(self._tag, fragment)
        with self._lock:
            self._done[fragment] = done
            while len(self._done) > INLINED_KEPT:
                self._done.popitem(last=False)
        return done


@functools.lru_cache(maxsize=8)
def _inliner(css: str) -> Inliner:
    return Inliner(css)


def to_html(mjml_source: str, cached: bool = True) -> str:
    """MJML -> email HTML. With ``cached``, the layout goes through MJML and premailer
    once and only the content is filled in (see the module's docstring); without, the
    whole document goes through them."""
    skeleton, inline_css, slots = hollow(mjml_source)
    inline = _inliner(inline_css)
    if not cached:
        whole = _SLOT.sub(lambda m: slots[int(m.group(1))][1], skeleton)
        return _mjml_and_premailer(whole, inline_css)
    filled = [content if tag in ("mj-title", "mj-preview") else inline(content)
              for tag, content in slots]
    return _SLOT.sub(lambda m: filled[int(m.group(1))], _compile(skeleton, inline_css))


# --- a whole issue -----------------------------------------------------------------------


def _render_once(issue: Issue, settings: Settings, abstract_chars: int,
                 templates: Path) -> Rendered:
    html_env, text_env = environments(templates)
    ctx = context(issue, settings, abstract_chars, templates)
    mjml_source = html_env.get_template("issue.mjml.j2").render(ctx)
    text = text_env.get_template("issue.txt.j2").render(ctx)
    return Rendered(subject=ctx["subject"], html=to_html(mjml_source), text=text,
                    mjml=mjml_source, preheader=ctx["preheader"])


def html_size(rendered: Rendered) -> int:
    """Bytes of the HTML part as sent (7bit with character references, or UTF-8 under
    quoted-printable: headers.text_body), as a mail client counts them before clipping."""
    seven = headers.html_7bit(rendered.html if rendered.html.endswith("\n")
                              else rendered.html + "\n")
    return len(seven) if seven is not None else len(rendered.html.encode())


def render(issue: Issue, settings: Settings, abstract_chars: int = ABSTRACT_CHARS, *,
           templates: Path = TEMPLATES, budget: int | None = HTML_BUDGET) -> Rendered:
    """The email for one issue. When its HTML would be larger than ``budget`` bytes, the
    abstracts get shorter (:data:`ABSTRACT_STEPS`), then papers move from the end of the
    issue into "More matches" until it fits: a client never clips it, nothing is lost."""
    rendered = _render_once(issue, settings, abstract_chars, templates)
    if budget is None or html_size(rendered) <= budget:
        return rendered
    for chars in ABSTRACT_STEPS:
        if chars < abstract_chars:
            abstract_chars = chars
            rendered = _render_once(issue, settings, chars, templates)
            if html_size(rendered) <= budget:
                return rendered
    matches, more = list(issue.matches), list(issue.more)
    while html_size(rendered) > budget and matches:
        # a card costs about a paper's share of the issue; move that many, then check
        share = html_size(rendered) / (len(matches) + 2)
        k = min(len(matches), max(1, math.floor((html_size(rendered) - budget) / share)))
        matches, more = matches[:-k], matches[-k:] + more
        rendered = _render_once(replace(issue, matches=tuple(matches), more=tuple(more)),
                                settings, abstract_chars, templates)
    return rendered


# --- the message -------------------------------------------------------------------------


def message_id(email: str, issue_date: date, settings: Settings) -> str:
    """The same for every attempt at one subscriber's issue of one day."""
    return headers.message_id(f"{issue_date:%Y%m%d}|{fold(email)}", settings)


def _text_part(content: str, subtype: str) -> EmailMessage:
    """A text/* part, encoded once (headers.text_body)."""
    part = EmailMessage()
    # set_raw: these fixed ASCII headers need no parsing or folding
    part.set_raw("Content-Type", f'text/{subtype}; charset="utf-8"')
    cte, payload = headers.text_body(content, subtype)
    part.set_raw("Content-Transfer-Encoding", cte)
    part.set_payload(payload)
    return part


def _envelope(issue: Issue, rendered: Rendered, settings: Settings, now: datetime,
              message_id_: str | None) -> headers.Envelope:
    sub = issue.subscriber
    return headers.Envelope(
        to_email=sub.email, to_name=sub.name, subject=rendered.subject, date=now,
        message_id=message_id_ or message_id(sub.email, issue.issue_date, settings),
        kind="issue" if issue.matches else "empty")


def message_bytes(issue: Issue, rendered: Rendered, settings: Settings, now: datetime,
                  message_id_: str | None = None) -> bytes:
    """``bytes(build_message(...))``, written directly (headers.message_bytes), with
    ``message_id_`` (a resumed delivery's) in place of the computed Message-ID."""
    return headers.message_bytes(settings, _envelope(issue, rendered, settings, now,
                                                     message_id_),
                                 [("plain", rendered.text), ("html", rendered.html)])


def build_message(issue: Issue, rendered: Rendered, settings: Settings,
                  now: datetime) -> EmailMessage:
    """The issue (or the "nothing new" note) as a message; headers.py writes the headers."""
    msg = headers.new_message(settings, _envelope(issue, rendered, settings, now, None))
    msg.set_raw("Content-Type", "multipart/alternative")
    msg.attach(_text_part(rendered.text, "plain"))
    msg.attach(_text_part(rendered.html, "html"))
    return msg
