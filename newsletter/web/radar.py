"""The research radar: each subscriber's own page, reached through the signed link in every
issue (``newsletter subscribers link EMAIL`` prints one).

GET  /radar                 the page: header and promise, filter chips (each × a form),
                            add a filter, the day's brief and numbered papers with
                            relevant / not relevant buttons, "another batch", the archive,
                            delivery settings, pause / resume / unsubscribe.
     ?day=YYYY-MM-DD        an archived issue instead of the latest
     ?batch=N               the Nth batch of ranked matches beyond what the email held
     ?lang=en|zh            the other language (default: the subscriber's)
GET  /radar/feed.atom       the subscriber's issues as a private Atom feed
GET  /feedback              from the email's "relevant / not relevant" links: a confirmation
                            page (POST form with CSRF); POST /feedback records the verdict
                            (origin "mail"). The link is signed for one address, paper and
                            verdict (``links.feedback_url``).
POST /radar/filters/remove, /radar/filters/add, /radar/feedback, /radar/settings,
     /radar/status, /radar/unsubscribe, /radar/seed-add (arXiv id or DOI, looked up by
     ``roster.resolve_likes``), /radar/seed-remove, /radar/ranking
                            every change: CSRF token, origin "web" in the
                            subscriber's history, then 303 back to the page.

Every URL carries email, exp, g and token (``newsletter.web.links``): the HMAC and expiry
are checked first, without the database; then the generation against the subscriber's.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from newsletter import store
from newsletter.config import Settings
from newsletter.errors import NewsletterError, SubscriberNotFound
from newsletter.lists.roster import MAX_LIKE_CAP, RANKINGS
from newsletter.models import Issue, Match, Subscriber
from newsletter.web import links, pages

BATCH = 5  # papers per "another batch"
ABSTRACT_CHARS = 4000
FEED_ENTRIES = 50
_KINDS = {"author": "authors", "topic": "topics", "category": "categories",
          "exclude": "exclude"}
_POSITION = re.compile(r"at position (\d+)")


class Revoked(NewsletterError):
    """The link's generation is not the subscriber's current one."""


@dataclass(frozen=True)
class PageLink:
    """A checked page link: whose it is, and the parameters to carry on."""

    email: str
    generation: int
    params: dict[str, str]


def check_page(request: Request, settings: Settings, now: datetime) -> PageLink | None:
    q = request.query_params
    email, exp, g, token = (q.get(k, "") for k in ("email", "exp", "g", "token"))
    if not links.valid_page_token(settings.secret, email, exp, g, token, now):
        return None
    return PageLink(email, int(g), {"email": email, "exp": exp, "g": g, "token": token})


def _current(db: Any, signed: PageLink) -> Subscriber:
    sub = store.get_subscriber(db, signed.email)
    if store.link_generation(db, signed.email) != signed.generation:
        raise Revoked("this link was revoked")
    return sub


def safe_url(url: str | None) -> str | None:
    return url if url and url.lower().startswith(("https://", "http://")) else None


# --- what the page shows -----------------------------------------------------------------


def _issue_for(db: Any, sub: Subscriber, settings: Settings, row: dict[str, Any] | None,
               now: datetime) -> Issue:
    from newsletter import pipeline

    if row is None:  # nothing sent yet: what the next issue would hold
        return pipeline.plan_issue(db, sub, settings, now)
    return pipeline.resume_issue(db, sub, {"paper_ids": json.dumps(row["paper_ids"]),
                                           "issue_date": row["issue_date"].isoformat()},
                                 skip_missing=True)


def _brief(db: Any, settings: Settings, issue: Issue) -> Any:
    """The brief the email carried: the cached LLM brief, else the extractive digest
    (never a model call from a page view)."""
    from newsletter import brief as brief_mod

    papers = [m.paper for m in issue.matches]
    if not papers:
        return None
    if settings.llm_model:
        cached = store.get_brief(db, brief_mod.cache_key(
            [p.id for p in papers], issue.subscriber.language, settings.llm_model))
        if cached:
            return brief_mod.brief_from_json(cached["data"])
    return brief_mod.extractive(papers)


def next_batch(db: Any, sub: Subscriber, settings: Settings, issues: list[dict[str, Any]],
               shown: set[str], n: int, now: datetime) -> tuple[list[Match], bool]:
    """(batch N of the ranked matches the email did not hold, whether more follow). The
    window is the latest issue's (since the one before it); slicing one ranking means no
    paper repeats from one batch to the next."""
    from newsletter import match, pipeline

    if len(issues) > 1 and issues[1]["created"]:
        since = issues[1]["created"]
    elif issues and issues[0]["created"]:
        since = issues[0]["created"] - timedelta(days=settings.first_issue_days)
    else:
        since = pipeline.window_start(db, sub, settings, now)
    index = pipeline.build_index(db, since)
    skip = shown | store.delivered_paper_ids(db, sub.email)
    found, _ = match.rank(sub, index, skip, BATCH * n + 1)
    return found[BATCH * (n - 1): BATCH * n], len(found) > BATCH * n


def _card(n: int, m: Match, verdicts: dict[str, str], e: dict[str, Any]) -> dict[str, Any]:
    from newsletter.render import paper_context

    card = paper_context(n, m, ABSTRACT_CHARS, e)
    card["id"] = m.paper.id
    card["url"] = safe_url(card["url"])
    card["links"] = [(label, u) for label, u in card["links"] if safe_url(u)]
    card["verdict"] = verdicts.get(m.paper.id, "")
    return card


def _brief_context(brief: Any, e: dict[str, Any], count: int) -> dict[str, Any] | None:
    """The brief as the email shows it, every citation ``(number, card anchor pNN, quote)``
    linking to its paper's card on the page (``render.claims_view``, as in the email)."""
    if brief is None:
        return None
    from newsletter.render import claims_view, digest

    fields = e.get("fields", {})
    if brief.kind == "llm":
        return {"kind": "llm", "headline": brief.headline, "themes": claims_view(brief),
                "connections": claims_view(brief, connections=True),
                "note": e["brief_by_model"].format(model=brief.model)}
    names = [fields.get(th.title, th.title) for th in brief.themes]
    headline = e["extractive_headline_one" if count == 1 else "extractive_headline"].format(
        count=count, fields=e.get("list_sep", ", ").join(names))
    themes = [{"title": field["name"],
               "lines": [(n, f"p{n}", sentence) for n, sentence in field["lines"]],
               "rest": [run["ends"] for run in field["rest"]]}
              for field in digest(brief, count, fields)]
    return {"kind": "extractive", "headline": headline, "themes": themes,
            "connections": [], "note": e["brief_extractive"]}


class ViewCache:
    """Recent page views, reused while ``store.data_version`` says nothing they show has
    changed (so a reader who reloads, or a crowd of readers, costs one lookup each)."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self.views: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, db: Any, settings: Settings, signed: PageLink, lang: str | None,
            day: date | None, batch: int, now: datetime) -> dict[str, Any]:
        key = (signed.email.lower(), signed.generation, lang, day, batch,
               store.data_version(db))
        with self.lock:
            hit = self.views.get(key)
            if hit is not None:
                self.views.move_to_end(key)
                return hit
        view = radar_view(db, settings, signed, lang, day, batch, now)
        with self.lock:
            self.views[key] = view
            while len(self.views) > self.size:
                self.views.popitem(last=False)
        return view


def radar_view(db: Any, settings: Settings, signed: PageLink, lang: str | None,
               day: date | None, batch: int, now: datetime) -> dict[str, Any]:
    """Everything the page template needs, in ``lang`` (None: the subscriber's language).
    Raises SubscriberNotFound, Revoked, or LookupError for an unknown day."""
    from newsletter.render import format_date, strings

    sub = _current(db, signed)
    lang = lang or (sub.language if sub.language in pages.LANGUAGES else "en")
    issues = store.sent_issues(db, sub.email)
    row = issues[0] if issues else None
    if day is not None:
        row = next((i for i in issues if i["issue_date"] == day), None)
        if row is None:
            raise LookupError(day)
    e = strings(lang)
    issue = _issue_for(db, sub, settings, row, now)
    verdicts = store.feedback_for(db, sub.email)
    latest = row is None or row is issues[0]
    cards, more_left = [], False
    if batch and latest:
        shown = set(issue.paper_ids)
        found, more_left = next_batch(db, sub, settings, issues, shown, batch, now)
        start = len(issue.matches) + len(issue.more) + BATCH * (batch - 1) + 1
        cards = [_card(n, m, verdicts, e) for n, m in enumerate(found, start)]
    else:
        cards = [_card(n, m, verdicts, e) for n, m in enumerate(issue.matches + issue.more, 1)]
        more_left = latest
        batch = 0
    titles = {p.id: p.title for p in store.get_papers(db, list(sub.likes))}
    seeds = [{"id": k, "title": titles.get(k, k)} for k in sub.likes]
    chips = [{"kind": kind, "label": e[f"chip_{kind}"], "value": v}
             for kind, key in _KINDS.items() for v in getattr(sub, key)]
    return {
        "lang": lang, "sub": sub, "e": e, "chips": chips, "seeds": seeds, "cards": cards,
        "batch": batch,
        "more_left": more_left, "latest": latest,
        "brief": _brief_context(_brief(db, settings, issue), e, len(issue.matches))
        if batch == 0 else None,
        "issue_date": row["issue_date"] if row else None,
        "date_str": format_date(row["issue_date"], e) if row else "",
        "archive": [(i["issue_date"], format_date(i["issue_date"], e), len(i["paper_ids"]))
                    for i in issues],
    }


# --- the Atom feed -----------------------------------------------------------------------

ATOM = "http://www.w3.org/2005/Atom"


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters: drop them."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20
                   and not 0xD800 <= ord(ch) <= 0xDFFF and ch not in "\ufffe\uffff")


def feed_xml(db: Any, settings: Settings, signed: PageLink, base: str, now: datetime) -> bytes:
    """The subscriber's sent issues as Atom 1.0 (RFC 4287), newest first."""
    from newsletter.render import format_date, strings

    sub = _current(db, signed)
    e = strings(sub.language)
    who = hashlib.sha256(sub.email.lower().encode()).hexdigest()[:16]
    ET.register_namespace("", ATOM)

    def el(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        node = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            node.text = _clean(text)
        return node

    feed = ET.Element(f"{{{ATOM}}}feed")
    el(feed, "title", f"{settings.brand} · {e['tagline']}")
    el(feed, "id", f"tag:academichub.invalid,2026:radar/{who}")
    page_url = base + pages.link(links.RADAR, **signed.params)
    el(feed, "link", href=page_url, rel="alternate", type="text/html")
    el(feed, "link", href=base + pages.link(links.FEED, **signed.params), rel="self",
       type="application/atom+xml")
    author = el(feed, "author")
    el(author, "name", settings.brand)
    issues = store.sent_issues(db, sub.email)[:FEED_ENTRIES]
    updated = max((i["sent_at"] or i["created"] or now for i in issues), default=now)
    el(feed, "updated", updated.astimezone(UTC).isoformat(timespec="seconds"))
    for row in issues:
        papers = store.get_papers(db, row["paper_ids"])  # without those pruned since
        entry = el(feed, "entry")
        day = row["issue_date"]
        el(entry, "title", f"{format_date(day, e)} · {len(papers)}")
        el(entry, "id", f"tag:academichub.invalid,2026:radar/{who}/{day.isoformat()}")
        el(entry, "link", href=base + pages.link(links.RADAR, **signed.params, day=day.isoformat()),
           rel="alternate", type="text/html")
        when = (row["sent_at"] or row["created"] or now).astimezone(UTC)
        el(entry, "updated", when.isoformat(timespec="seconds"))
        el(entry, "summary", "; ".join(p.title for p in papers[:10]))
        content = ET.Element("div", {"xmlns": "http://www.w3.org/1999/xhtml"})
        ol = ET.SubElement(content, "ol")
        for p in papers:
            li = ET.SubElement(ol, "li")
            url = safe_url(p.url)
            title = ET.SubElement(li, "a", {"href": url}) if url else ET.SubElement(li, "b")
            title.text = _clean(p.title)
            title.tail = _clean(f" - {p.badge} - {', '.join(p.authors[:6])}")
        xhtml = el(entry, "content", type="xhtml")
        xhtml.append(content)
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


# --- routes ------------------------------------------------------------------------------


class Radar:
    def __init__(self, app: pages.Handlers, clock: Callable[[], datetime]) -> None:
        self.app, self.clock = app, clock
        self.views = ViewCache()

    def _invalid(self, request: Request) -> Response:
        return pages.message(request, 403, "invalid_title", "invalid")

    async def show(self, request: Request, error: str = "", status: int = 200,
                   entered: tuple[str, str] = ("", ""), seed_error: str = "") -> Response:
        signed = check_page(request, self.app.settings, self.clock())
        if signed is None:
            return self._invalid(request)
        q = request.query_params
        try:
            day = date.fromisoformat(q["day"]) if q.get("day") else None
            batch = int(q.get("batch") or 0)
        except ValueError:
            return pages.message(request, 400, "error_title", "bad_request")
        if not 0 <= batch <= 1000:
            return pages.message(request, 400, "error_title", "bad_request")
        lang_asked = q.get("lang", "")
        try:
            view = await self.app.db_call(self.views.get, self.app.settings, signed,
                                          lang_asked if lang_asked in pages.LANGUAGES else None,
                                          day, batch, self.clock())
        except (SubscriberNotFound, Revoked):
            return self._invalid(request)
        except LookupError:
            return pages.message(request, 404, "not_found_title", "not_found")
        t = pages.web_strings(view["lang"])
        cookie = pages.csrf_cookie(request)
        params = signed.params

        def here(**extra: Any) -> str:
            keep = {"lang": lang_asked if lang_asked in pages.LANGUAGES else None,
                    "day": q.get("day") or None, "batch": batch or None}
            return pages.link(request.url.path, **params, **{**keep, **extra})

        mark = _mark(entered[1], error) if error else None
        return pages.page(
            "radar.html.j2", status, cookie=cookie, secure=request.url.scheme == "https",
            t=t, title=t["radar_title"], csrf=cookie, error=error, entered=entered,
            mark=mark, seed_error=t[seed_error].format(value=entered[1]) if seed_error else "",
            rankings=RANKINGS, max_like_cap=MAX_LIKE_CAP,
            done=t.get(f"done_{q.get('done', '')}", "") if q.get("done") else "",
            feed_url=pages.link(links.FEED, **params), here=here,
            action=lambda path: pages.link(path, **params, lang=lang_asked or None,
                                     day=q.get("day") or None, batch=batch or None),
            switch_url=here(lang=t["switch_lang"]),
            day_url=lambda d: pages.link(links.RADAR, **params, lang=lang_asked or None,
                                   day=d.isoformat()),
            batch_url=lambda n: pages.link(links.RADAR, **params, lang=lang_asked or None,
                                     batch=n or None),
            frequencies=("daily", "weekdays", "weekly"),
            weekdays=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
            **view)

    async def feed(self, request: Request) -> Response:
        signed = check_page(request, self.app.settings, self.clock())
        if signed is None:
            return self._invalid(request)
        base = f"{request.url.scheme}://{request.url.netloc}"
        if self.app.settings.web_url:
            base = self.app.settings.web_url.rstrip("/")
        try:
            body = await self.app.db_call(feed_xml, self.app.settings, signed, base,
                                          self.clock())
        except (SubscriberNotFound, Revoked):
            return self._invalid(request)
        return Response(body, media_type="application/atom+xml; charset=utf-8",
                        headers={"Cache-Control": "private, max-age=300",
                                 "X-Content-Type-Options": "nosniff",
                                 "Referrer-Policy": "no-referrer"})

    async def change(self, request: Request) -> Response:
        """Every POST: token first, then the form and its CSRF token, then the change."""
        signed = check_page(request, self.app.settings, self.clock())
        if signed is None:
            return self._invalid(request)
        form = await pages.read_form(request)
        if not pages.csrf_ok(request, form):
            return pages.message(request, 403, "error_title", "csrf_failed")
        what = request.url.path.rsplit("/", 1)[-1]
        now = self.clock()
        try:
            done = await self.app.db_call(_apply, signed, what, form, now,
                                          self.app.settings)
        except (SubscriberNotFound, Revoked):
            return self._invalid(request)
        except SeedError as e:
            return await self.show(request, seed_error=e.args[0], status=400,
                                   entered=("seed", form.get("value", "")))
        except NewsletterError as e:
            kind = form.get("kind", "")
            return await self.show(request, error=str(e), status=400,
                                   entered=(kind, form.get("value", "")))
        q = request.query_params
        target = pages.link(links.RADAR, **signed.params, lang=q.get("lang") or None,
                      day=q.get("day") or None, batch=q.get("batch") or None, done=done)
        anchor = form.get("anchor", "")
        if re.fullmatch(r"[a-z0-9-]{1,40}", anchor):
            target += "#" + anchor
        return RedirectResponse(target, status_code=303)


@dataclass(frozen=True)
class FeedbackLink:
    """A checked one-click feedback link from the email."""

    email: str
    paper_id: str
    verdict: str
    generation: int


def check_feedback(request: Request, settings: Settings, now: datetime) -> FeedbackLink | None:
    q = request.query_params
    email, paper, verdict, exp, g, token = (
        q.get(k, "") for k in ("email", "paper", "v", "exp", "g", "token"))
    if verdict not in store.VERDICTS or not links.valid_feedback_token(
            settings.secret, email, paper, verdict, exp, g, token, now):
        return None
    return FeedbackLink(email, paper, verdict, int(g))


def _feedback_target(db: Any, signed: FeedbackLink) -> tuple[Subscriber, Any]:
    """The link's subscriber (current generation) and paper; raises SubscriberNotFound,
    Revoked or PaperNotFound."""
    sub = _current(db, PageLink(signed.email, signed.generation, {}))
    return sub, store.get_paper(db, signed.paper_id)


def _record_feedback(db: Any, signed: FeedbackLink, now: datetime) -> Subscriber:
    sub, _ = _feedback_target(db, signed)
    store.add_feedback(db, sub.email, signed.paper_id, signed.verdict, "mail", now)
    return sub


class Feedback:
    """GET /feedback shows what the link will record, with a POST form (CSRF); POST
    /feedback records it with origin "mail". A GET never records (mail scanners follow
    links); the link acts only for the address, paper and verdict it was signed for."""

    def __init__(self, app: pages.Handlers, clock: Callable[[], datetime]) -> None:
        self.app, self.clock = app, clock

    async def _checked(self, request: Request) -> tuple[FeedbackLink | None, Response | None]:
        signed = check_feedback(request, self.app.settings, self.clock())
        if signed is None:
            q = request.query_params
            # a well-formed link that is only out of date gets the same page as a bad one,
            # with the fix; a malformed request is a 400
            code = 403 if q.get("token") and q.get("email") else 400
            return None, pages.message(request, code, "invalid_title", "invalid")
        return signed, None

    async def confirm_page(self, request: Request) -> Response:
        signed, refused = await self._checked(request)
        if signed is None:
            return refused  # type: ignore[return-value]
        try:
            sub, paper = await self.app.db_call(_feedback_target, signed)
        except (SubscriberNotFound, Revoked):
            return pages.message(request, 403, "invalid_title", "invalid")
        except NewsletterError:
            return pages.message(request, 404, "not_found_title", "not_found")
        lang = pages.request_language(request, sub.language)
        t = pages.web_strings(lang)
        cookie = pages.csrf_cookie(request)
        q = dict(request.query_params)
        q.pop("lang", None)
        return pages.page(
            "message.html.j2", t=t, title=t["feedback_title"],
            lines=[t[f"feedback_question_{signed.verdict}"].format(title=paper.title),
                   t["feedback_for"].format(email=sub.email)],
            forms=[{"action": pages.link(links.FEEDBACK, **q, lang=lang),
                    "fields": [("csrf", cookie)], "label": t["feedback_button"],
                    "primary": True}],
            error=False, cookie=cookie, secure=request.url.scheme == "https",
            switch_url=pages.link(links.FEEDBACK, **q, lang=t["switch_lang"]))

    async def record(self, request: Request) -> Response:
        signed, refused = await self._checked(request)
        if signed is None:
            return refused  # type: ignore[return-value]
        form = await pages.read_form(request)
        if not pages.csrf_ok(request, form):
            return pages.message(request, 403, "error_title", "csrf_failed")
        try:
            sub = await self.app.db_call(_record_feedback, signed, self.clock())
        except (SubscriberNotFound, Revoked):
            return pages.message(request, 403, "invalid_title", "invalid")
        except NewsletterError:
            return pages.message(request, 404, "not_found_title", "not_found")
        lang = pages.request_language(request, sub.language)
        return pages.message(request, 200, "feedback_title", "done_feedback", lang)


class SeedError(NewsletterError):
    """A seed paper the page could not add: args = (strings key, the value entered)."""


def _seed_ids(db: Any, settings: Settings, value: str) -> list[str]:
    """The stored paper id for a seed named on the page (looked up when not stored yet)."""
    from newsletter.errors import InvalidFilter
    from newsletter.lists import roster
    from newsletter.relevance.seeds import parse_key

    value = value.strip()
    if not value or len(value) > 200:
        raise SeedError("seed_bad", value[:80])
    try:
        parse_key(value)
    except InvalidFilter as e:
        raise SeedError("seed_bad", value[:80]) from e
    try:
        return roster.resolve_likes(db, settings, [value])
    except NewsletterError as e:
        raise SeedError("seed_not_found", value) from e


def _number(form: dict[str, str], key: str, problem: str) -> int:
    try:
        return int(form.get(key, ""))
    except ValueError as e:
        raise NewsletterError(problem) from e


def _apply_relevance(db: Any, sub: Subscriber, what: str, form: dict[str, str], now: datetime,
                 settings: Settings) -> str:
    """The reader's verdicts, seed papers and ranking mode (origin "web")."""
    from newsletter.lists import roster

    if what == "feedback":
        paper, verdict = form.get("paper", ""), form.get("verdict", "")
        if verdict not in store.VERDICTS:
            raise NewsletterError("choose relevant or not relevant")
        store.get_paper(db, paper)
        store.add_feedback(db, sub.email, paper, verdict, "web", now)
        return "feedback"
    if what == "seed-add":
        roster.edit(db, sub.email, add_like=_seed_ids(db, settings, form.get("value", "")),
                    origin="web", now=now)
        return "saved"
    if what == "seed-remove":
        seed = form.get("value", "")
        if seed not in sub.likes:
            raise NewsletterError("that seed paper is not on your list any more")
        roster.edit(db, sub.email, remove_like=[seed], origin="web", now=now)
        return "saved"
    if what == "ranking":
        roster.edit(db, sub.email, ranking=form.get("ranking", ""),
                    like_cap=_number(form, "like_cap", "the cap must be a number"),
                    origin="web", now=now)
        return "saved"
    raise NewsletterError("unknown action")


def _apply(db: Any, signed: PageLink, what: str, form: dict[str, str], now: datetime,
           settings: Settings) -> str:
    """Make one change for the page's subscriber (origin "web"); returns the notice key."""
    from newsletter.lists import roster

    sub = _current(db, signed)
    if what in ("feedback", "seed-add", "seed-remove", "ranking"):
        return _apply_relevance(db, sub, what, form, now, settings)
    if what in ("remove", "add"):
        kind = form.get("kind", "")
        if kind not in _KINDS:
            raise NewsletterError(f"unknown filter kind {kind!r}")
        value = form.get("value", "")
        if len(value) > 500:
            raise NewsletterError("that filter is too long - use at most 500 characters")
        roster.edit(db, sub.email, origin="web", now=now,
                    **{f"{what}_{kind}": [value]})  # type: ignore[arg-type]
        return "saved"
    if what == "settings":
        hour = _number(form, "send_hour", "send hour must be a number from 0 to 23")
        freq = form.get("frequency", "")
        roster.edit(db, sub.email, frequency=freq, send_hour=hour,
                    weekday=form.get("weekday") if freq == "weekly" else None,
                    timezone=form.get("timezone", "").strip(),
                    language=form.get("language") or None, origin="web", now=now)
        return "saved"
    if what == "status":
        action = form.get("action", "")
        if action == "pause":
            roster.pause(db, sub.email, origin="web", now=now)
        elif action == "resume":
            roster.resume(db, sub.email, origin="web", now=now)
        else:
            raise NewsletterError("choose pause or resume")
        return "saved"
    if what == "unsubscribe":
        roster.set_status(db, sub.email, "unsubscribed", origin="web", now=now)
        return "unsubscribed"
    raise NewsletterError("unknown action")


def _mark(value: str, error: str) -> tuple[str, str, str] | None:
    """(before, the character at the error's position, after) to show where it is."""
    found = _POSITION.search(error)
    if not found or not value:
        return None
    i = min(int(found.group(1)) - 1, len(value))
    return value[:i], value[i:i + 1] or " ", value[i + 1:]


def routes(app: pages.Handlers, clock: Callable[[], datetime]) -> list[Route]:
    radar = Radar(app, clock)
    posts = [Route(f"/radar/{name}", radar.change, methods=["POST"])
             for name in ("filters/remove", "filters/add", "feedback", "settings", "status",
                          "unsubscribe", "seed-add", "seed-remove", "ranking")]
    feedback = Feedback(app, clock)
    return [Route(links.RADAR, radar.show, methods=["GET"]),
            Route(links.FEEDBACK, feedback.confirm_page, methods=["GET"]),
            Route(links.FEEDBACK, feedback.record, methods=["POST"]),
            Route(links.FEED, radar.feed, methods=["GET"]), *posts]


__all__ = ["check_page", "feed_xml", "next_batch", "radar_view", "routes"]
