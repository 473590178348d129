"""What the reader sees: valid MJML, escaped content, both languages, small and fast HTML,
a complete message, and a real browser."""

import hashlib
import json
import re
import shutil
import subprocess
import textwrap
from dataclasses import replace
from datetime import UTC, date, datetime
from email import message_from_bytes, policy
from html import unescape
from pathlib import Path

import lxml.html
import markupsafe
import pytest
from conftest import ROOT, require_chromium, require_node_tool

from newsletter import render
from newsletter.brief import extractive, first_sentence
from newsletter.config import Settings
from newsletter.lists import tokens
from newsletter.mail import headers
from newsletter.models import Brief, Issue, Match, Paper, Subscriber, Theme
from newsletter.sources.sample import load_papers

ARTIFACTS = ROOT / "tests" / "artifacts"
GMAIL_CLIP = 102 * 1024


def make_issue(language="en", n=10, more=0, papers=None, brief=None, sub=None):
    papers = papers or load_papers()
    sub = sub or Subscriber("ada@example.org", name="Ada", language=language,
                            authors=("Taiming Lu",), topics=("diffusion models",))
    matches = tuple(Match(p, 1.0, ("topic: diffusion models",),
                          ("Taiming Lu",) if "Taiming Lu" in p.authors else ())
                    for p in papers[: n + more])
    shown = tuple(m.paper for m in matches[:n])
    return Issue(sub, date(2026, 11, 22), matches[:n], matches[n:], brief or extractive(shown))


LLM_BRIEF = Brief(
    kind="llm", model="openai/gpt-4o-mini",
    headline="Smaller models and world models: what transfers from a parent model, and what "
             "has to be learned again from data",
    themes=(Theme("Compression", "Pruning and distillation both reuse a parent model; the "
                  "advantage narrows as the training budget grows, and fine-grained pruning "
                  "keeps more of it than structured pruning.", (1, 3)),
            Theme("Generative models", "Open text-to-image recipes and normalization-free "
                  "transformers make strong baselines cheaper to reproduce.", (2, 4, 5)),
            Theme("World models", "Generative exploration lets embodied agents imagine "
                  "unseen views before they plan.", (6,))),
    connections=(Theme("", "Efficiency work and embodied AI meet in cheap imagination: a "
                       "small model that imagines well is worth more than a large one that "
                       "only recalls.", (3, 6)),),
    per_paper=tuple(f"Sentence {n}." for n in range(1, 11)))


def titles(html: str) -> list[str]:
    return [unescape(t) for t in re.findall(r'class="nl-tlink"[^>]*>([^<]+)</a>', html)]


# --- valid, safe, offline ----------------------------------------------------------------


WEB = Settings(web_url="https://radar.example.org", secret="render-test-key")


@pytest.mark.parametrize("language,settings", [("en", Settings()), ("zh", Settings()),
                                               ("en", WEB), ("zh", WEB)])
def test_templates_pass_the_reference_mjml_validator_in_strict_mode(tmp_path, language,
                                                                     settings):
    mjml = require_node_tool("mjml")
    source = render.render(make_issue(language, n=10, more=5), settings).mjml
    assert ("/feedback?" in source) == bool(settings.web_url)
    path = tmp_path / "issue.mjml"
    path.write_text(source, encoding="utf-8")
    done = subprocess.run([str(mjml), "-r", str(path), "--config.validationLevel=strict",
                           "-s"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # and the validator does catch what MRML would silently accept
    path.write_text(source.replace("<mj-text", "<mj-txet", 1).replace("</mj-text>",
                                                                      "</mj-txet>", 1))
    bad = subprocess.run([str(mjml), "-r", str(path), "--config.validationLevel=strict",
                          "-s"], capture_output=True, text=True)
    assert bad.returncode != 0 and "mj-txet" in bad.stderr


def test_untrusted_text_is_escaped():
    p = Paper(id="2401.00001", source="arxiv", title="Bounds for <b>x</b> & y < 3",
              authors=("Ada <i>Lovelace</i>",), abstract='We show "p < 0.05" <script>x</script>',
              url="https://arxiv.org/abs/2401.00001", published=datetime(2026, 1, 1, tzinfo=UTC),
              categories=("math.PR",))
    sub = Subscriber("ada@example.org", topics=('"quoted" <topic> & @@nl-slot-0@@',))
    r = render.render(make_issue(papers=[p], n=1, sub=sub), Settings())
    assert "<b>x</b>" not in r.html and "&lt;b&gt;x&lt;/b&gt; &amp; y &lt; 3" in r.html
    assert "<script>x</script>" not in r.html and "<i>Lovelace" not in r.html
    # a filter that looks like a layout slot is content, shown as typed, never filled in
    assert "&#34;quoted&#34; &lt;topic&gt; &amp; @@nl-slot-0@@" in r.html
    assert "Bounds for <b>x</b> & y < 3" in r.text  # plain text stays plain


def test_html_has_no_remote_resources_and_keeps_doctype():
    html = render.render(make_issue(), Settings()).html
    assert html.startswith("<!doctype html>")
    assert "fonts.googleapis.com" not in html and "<link" not in html
    assert re.search(r"PingFang SC|Noto Sans CJK SC", html)  # a font stack for Chinese
    assert "prefers-color-scheme: dark" in html
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "@@nl-slot" not in html and "data-premailer" not in html
    # Outlook's conditional tables survive the minified layout
    assert html.count("<!--[if mso | IE]>") >= 2 and "<![endif]-->" in html


def _normalised(html: str) -> list[tuple]:
    """Every element's tag, attributes, style declarations and text, whatever the
    serialisation; premailer's extra HTML attributes count only on tables."""
    out = []
    for el in lxml.html.fromstring(html).iter():
        if not isinstance(el.tag, str):
            out.append(("comment", el.text))
            continue
        attrs = dict(el.attrib)
        style = dict(render.Inliner.declarations(attrs.pop("style", "")))
        if el.tag not in ("table", "td", "body"):
            for extra in ("align", "valign", "bgcolor", "width", "height"):
                attrs.pop(extra, None)
        out.append((el.tag, sorted(attrs.items()), sorted(style.items()),
                    " ".join((el.text or "").split()), " ".join((el.tail or "").split())))
    return out


@pytest.mark.parametrize("issue", [make_issue("en", 10, 3), make_issue("zh", 4),
                                   make_issue("en", 6, brief=LLM_BRIEF)],
                         ids=["en", "zh", "llm"])
def test_cached_layout_is_the_same_document_as_premailer_over_everything(issue):
    fast = render.render(issue, Settings(contact="1 Example Road"))
    slow = render.to_html(fast.mjml, cached=False)
    assert _normalised(fast.html) == _normalised(slow)
    # and the content got its styles: a card title, a followed author, a chip
    assert re.search(r'class="nl-tlink" href="[^"]+" style="color:#111827;', fast.html)
    assert re.search(r'class="nl-followed" style="color:#4f46e5;font-weight:700"', fast.html)


def test_shared_cards_give_each_reader_the_same_email_as_a_fresh_render(monkeypatch):
    """A paper's card is rendered once for every reader who has it at the same place
    (render._card) and a card's inlined HTML is kept (Inliner): with both caches warm, each
    reader's email is the one a cold render gives, down to their own signed feedback
    links; a paper whose text holds a card's stand-in keeps it."""
    settings = Settings(secret="s", web_url="https://radar.example.org",
                        unsubscribe_url="https://radar.example.org", contact="1 Example Road")
    papers = load_papers()
    sneaky = replace(papers[0], title="Look @@nl-feedback-relevant@@ " +
                     render._STAND_IN.format("other"))
    readers = [Subscriber(f"r{i}@example.org", language=("en", "zh")[i % 2],
                          authors=("Taiming Lu",), topics=("diffusion models",))
               for i in range(6)]
    issues = [make_issue(sub=r, n=5 + i % 3, more=2, papers=[sneaky] + papers[i % 2:])
              for i, r in enumerate(readers)]
    warm = [render.render(i, settings) for i in issues + issues]
    cold = []
    for issue in issues:
        render._CARDS.clear()
        render._inliner.cache_clear()
        cold.append(render.render(issue, settings))
    assert [(r.html, r.text) for r in warm] == [(r.html, r.text) for r in cold + cold]
    links = [re.findall(r'https://radar\.example\.org/feedback\?[^"]+', r.html) for r in cold]
    assert all(links) and len({tuple(found) for found in links}) == len(readers)
    assert "Look @@nl-feedback-relevant@@" in warm[0].html
    assert render._STAND_IN.format("other") in warm[0].html
    # room for two cards only: still the same emails
    monkeypatch.setattr(render, "CARDS_KEPT", 2)
    monkeypatch.setattr(render, "INLINED_KEPT", 3)
    assert [render.render(i, settings).html for i in issues] == [r.html for r in cold]
    assert len(render._CARDS) <= 2


def test_inliner_follows_specificity_and_keeps_the_elements_own_style():
    inline = render.Inliner("a { color: red; } .x { color: blue; margin: 0 } "
                            "a.x { color: green } .y { margin: 4px }")
    assert inline('<a href="#">a</a>') == '<a href="#" style="color:red">a</a>'
    assert inline('<a class="x y" style="color: black">') == \
        '<a class="x y" style="color:black;margin:4px">'
    assert inline('<p class="x">') == '<p class="x" style="color:blue;margin:0">'
    assert inline("<p>plain</p><br>") == "<p>plain</p><br>"
    with pytest.raises(ValueError, match="'.card a' is not supported"):
        render.Inliner(".card a { color: red }")


# --- size: never clipped -----------------------------------------------------------------


def test_html_is_small():
    ten = render.render(make_issue(n=10), Settings())
    thirty = render.render(make_issue(n=30, more=13), Settings())
    assert render.html_size(ten) < 45_000
    assert render.html_size(thirty) < render.HTML_BUDGET < GMAIL_CLIP
    # the 30-paper issue fits whole: every paper in a card with its abstract
    assert len(titles(thirty.html)) == 30 and thirty.html.count('class="nl-abs"') == 30
    assert "13 more papers matched your filters" in thirty.html


def test_feedback_links_keep_the_issue_within_budget():
    """With a web URL each card carries two signed feedback links (in both parts); the
    30-paper issue still fits whole, every abstract kept."""
    thirty = render.render(make_issue(n=30, more=13), WEB)
    assert render.html_size(thirty) < render.HTML_BUDGET < GMAIL_CLIP
    assert len(titles(thirty.html)) == 30 and thirty.html.count('class="nl-abs"') == 30
    links = re.findall(r'href="(https://radar\.example\.org/feedback\?[^"]+)"', thirty.html)
    assert len(links) == 60 and len(set(links)) == 60
    assert thirty.text.count("https://radar.example.org/feedback?") == 60
    assert "Tell us" in thirty.html and "Tell us" not in render.render(
        make_issue(n=3), Settings()).html


def test_an_issue_over_budget_is_shortened_never_clipped():
    papers = load_papers()
    heavy = [replace(p, abstract=(p.abstract + " ") * 4, doi=f"10.1000/{p.id}" * 4,
                     code_url=f"https://github.com/example/{p.id}" * 4)
             for p in papers[:30]] + papers[30:]
    issue = make_issue(n=30, more=13, papers=heavy)
    unlimited = render.render(issue, Settings(), abstract_chars=3000, budget=None)
    assert render.html_size(unlimited) > GMAIL_CLIP  # what Gmail would have clipped
    r = render.render(issue, Settings(), abstract_chars=3000)
    assert render.html_size(r) < GMAIL_CLIP
    assert titles(r.html) == [m.paper.title for m in issue.matches]
    assert r.html.count(">Read more</a>") == 30


def test_papers_move_to_more_matches_when_short_abstracts_are_not_enough():
    issue = make_issue(n=30, more=13)
    r = render.render(issue, Settings(), budget=50_000)
    assert render.html_size(r) <= 50_000
    shown = titles(r.html)
    assert 10 <= len(shown) < 30
    assert shown == [m.paper.title for m in issue.matches[:len(shown)]]  # the best stay
    assert f"{43 - len(shown)} more papers matched your filters" in r.html
    text = " ".join(r.text.split())  # long titles wrap in the text part
    for m in issue.matches + issue.more:  # nothing is lost
        assert m.paper.title in unescape(r.html) and m.paper.title in text
    assert r.subject.endswith("43 new papers")


def test_budget_shortens_abstracts_before_moving_papers():
    issue = make_issue(n=30, more=13)
    full = render.render(issue, Settings(), budget=None)
    r = render.render(issue, Settings(), budget=render.html_size(full) - 4_000)
    assert len(titles(r.html)) == 30  # everyone still in a card ...
    assert r.html.count(">Read more</a>") > full.html.count(">Read more</a>")  # ... shorter


# --- speed -------------------------------------------------------------------------------


def test_forty_readers_reuse_the_compiled_layouts():
    settings = Settings()
    issues = [make_issue(n=10, sub=Subscriber(f"r{k}@example.org", name=f"R {k}",
                                                 language="zh" if k % 4 == 0 else "en",
                                                 topics=(f"topic {k}",)))
              for k in range(40)]
    render.render(issues[0], settings)
    render.render(issues[1], settings)  # both layouts (en, zh) compiled once
    compiled = render._compile.cache_info().misses
    sent = [bytes(render.build_message(issue, render.render(issue, settings), settings,
                                       datetime(2026, 11, 22, 7, tzinfo=UTC)))
            for issue in issues]
    # 40 readers, no layout through MJML and premailer again: only their content changed
    # (the speed itself is measured by `make bench`, not timed in a test)
    assert render._compile.cache_info().misses == compiled
    assert len({hashlib.sha256(m).digest() for m in sent}) == 40
    assert all(f"r{k}@example.org".encode() in m for k, m in enumerate(sent))


# --- words: languages, dates, digest -----------------------------------------------------


def test_chinese_issue_says_everything_in_chinese():
    r = render.render(make_issue("zh"), Settings())
    assert r.subject == "AcademicHub · 2026年11月22日 · 10 篇新论文"
    for phrase in ("交叉领域文献分析简报", "今日论文", "退订", "2026年11月22日",
                   "作者：Taiming Lu"):
        assert phrase in r.html
    assert "Today's papers" not in r.html and "Read more" not in r.html
    assert '<html lang="zh-Hans"' in r.html


def test_a_new_language_is_one_strings_file(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates)
    (templates / "i18n" / "de.toml").write_text(textwrap.dedent('''\
        language_name = "Deutsch"
        html_lang = "de"
        tagline = "Ihr Forschungsradar"
        subject = "{brand} · {date} · {count} neue Artikel"
        date_format = "{day}. {month_name} {year}"
        months = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
                  "September", "Oktober", "November", "Dezember"]
        chip_author = "Autor"
        papers_heading = "Heutige Artikel"
        [fields]
        cs = "Informatik"
        '''), encoding="utf-8")
    assert render.languages(templates) == ["de", "en", "zh"]
    r = render.render(make_issue("de"), Settings(), templates=templates)
    assert r.subject == "AcademicHub · 22. November 2026 · 10 neue Artikel"
    assert '<html lang="de"' in r.html
    for phrase in ("Ihr Forschungsradar", "HEUTIGE ARTIKEL", "Autor: Taiming Lu", "Informatik"):
        assert phrase in r.html
    assert "Ihr Forschungsradar" in r.text and "22. November 2026" in r.text
    assert "Read more" in r.html  # what the file does not say falls back to English
    assert "Ihr Forschungsradar" not in render.render(make_issue("en"), Settings()).html


def test_edits_to_templates_and_strings_show_on_the_next_render(tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates)
    assert "Your research radar" in render.render(make_issue(), Settings(),
                                                  templates=templates).html
    en = templates / "i18n" / "en.toml"
    en.write_text(en.read_text().replace("Your research radar", "Your paper radar"))
    header = templates / "partials" / "header.mjml.j2"
    header.write_text(header.read_text().replace("nl-h1", "nl-h1 nl-edited"))
    again = render.render(make_issue(), Settings(), templates=templates).html
    assert "Your paper radar" in again and 'class="nl-h1 nl-edited"' in again


def test_a_run_renders_every_issue_from_the_files_as_they_were_when_it_began(tmp_path):
    """Inside render.frozen (a run), templates and strings are read once: an edit made
    half way through shows from the next run on, not in half of this one's emails."""
    templates = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, templates)
    en = templates / "i18n" / "en.toml"
    card = templates / "partials" / "card.mjml.j2"
    with render.frozen():
        first = render.render(make_issue(), Settings(), templates=templates)
        en.write_text(en.read_text().replace("Your research radar", "Your paper radar"))
        card.write_text(card.read_text().replace("nl-title", "nl-title nl-edited"))
        assert render.render(make_issue(), Settings(), templates=templates).html == first.html
    after = render.render(make_issue(), Settings(), templates=templates).html
    assert "Your paper radar" in after and "nl-title nl-edited" in after


def test_extractive_digest_is_compact_and_cites_every_paper():
    issue = make_issue(n=30)
    r = render.render(issue, Settings())
    brief = r.html.split("CROSS-FIELD BRIEF")[1].split("TODAY&#39;S PAPERS")[0]
    quoted = re.findall(r'<a class="nl-cite" href="#p(\d\d)"[^>]*>\[\1\]</a> (?!<)', brief)
    assert 1 <= len(quoted) <= 5  # a compact digest: at most five quoted sentences
    cited = set()
    for first, last in re.findall(r'<a class="nl-cite" href="#p(\d\d)"[^>]*>\[\d\d\]</a>'
                                  r'(?:–<a class="nl-cite" href="#p(\d\d)")?', brief):
        cited.update(range(int(first), int(last or first) + 1))
    assert cited == set(range(1, 31))
    # runs of papers are cited as ranges, both ends linked to their cards
    assert re.search(r'>\[02\]</a>–<a class="nl-cite" href="#p11"[^>]*>\[11\]</a>', brief)
    assert "30 papers today across Computer science" in r.html
    assert "Also: [" in r.text and "[02]–[11]" in r.text


def test_wrap_is_textwrap_fill():
    for p in load_papers():
        for width, indent in ((78, ""), (78, "    "), (30, "  ")):
            assert render.wrap(p.abstract, width, indent) == textwrap.fill(
                " ".join(p.abstract.split()), width=width, subsequent_indent=indent,
                break_long_words=False, break_on_hyphens=False)


# --- header, cards, footer ---------------------------------------------------------------


def test_chips_cards_and_footer():
    settings = Settings(from_addr="AcademicHub <daily@academichub.example>",
                        reply_to="editors@academichub.example", secret="k",
                        unsubscribe_url="https://academichub.example",
                        contact="AcademicHub, 1 Example Road, Princeton NJ")
    r = render.render(make_issue(n=3), settings)
    chips = re.findall(r'<span class="nl-chip"[^>]*>([^<]*)&nbsp;<a class="nl-x" '
                       r'href="([^"]+)"[^>]*>×</a>', r.html)
    assert [c for c, _ in chips] == ["Author: Taiming Lu", "Topic: diffusion models"]
    assert chips[0][1] == ("mailto:editors@academichub.example?subject=Remove%20filter%20-"
                           "%20Author%3A%20Taiming%20Lu")
    card = r.html.split('class="nl-num"')[1]
    assert "01.</span>" in card and "arXiv (cs." in card and "June 12, 2026" in card
    assert re.search(r'class="nl-followed"[^>]*>Taiming Lu</span>', card)
    assert ">Read more</a>" in card and ">PDF</a>" in card
    footer = r.html.split('class="nl-foot')[1]
    assert "because ada@example.org subscribed" in footer
    assert ('href="mailto:editors@academichub.example?subject=Change%20my%20filters"'
            in footer)
    token = tokens.unsubscribe_token("k", "ada@example.org")
    assert (f'href="https://academichub.example/unsubscribe?email=ada%40example.org&amp;'
            f'token={token}"') in footer
    assert "AcademicHub, 1 Example Road, Princeton NJ" in footer
    assert "AcademicHub, 1 Example Road, Princeton NJ" in r.text
    assert f"Unsubscribe: https://academichub.example/unsubscribe?email=ada%40example.org" \
        f"&token={token}" in r.text


def test_empty_issue_says_so():
    sub = Subscriber("ada@example.org", authors=("Nobody Atall",))
    r = render.render(Issue(sub, date(2026, 11, 22), ()), Settings())
    assert "No new papers matched your filters today." in r.html
    assert "No new papers matched your filters today." in r.text
    assert r.subject == "AcademicHub · November 22, 2026 · 0 new papers"


# --- the message -------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "zh"])
def test_message_parts_decode_to_exactly_what_was_rendered(language):
    issue = make_issue(language, n=10, more=3)
    r = render.render(issue, Settings())
    raw = bytes(render.build_message(issue, r, Settings(),
                                     datetime(2026, 11, 22, 7, tzinfo=UTC)))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998  # RFC 5322's limit
    assert raw.isascii() and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and html is not None
    # the text part is what was rendered (CRLF on the wire, as SMTP and DKIM want)
    assert text.get_content().replace("\r\n", "\n") == r.text + ("" if r.text.endswith("\n")
                                                               else "\n")
    assert text["Content-Transfer-Encoding"] == "quoted-printable"
    # the HTML part is 7bit: non-ASCII as character references, long lines broken at
    # spaces; with those undone it is exactly what was rendered
    assert html["Content-Transfer-Encoding"] == "7bit"
    wire = html.get_content().replace("\r\n", "\n")
    assert len(wire.splitlines()) > len(r.html.splitlines())  # the long lines were broken
    assert "&#" in wire and wire.isascii()
    assert unref(wire).replace("\n", " ") == unref(r.html + "\n").replace("\n", " ")
    # and a parser sees the same elements, attributes and text
    assert dom(wire) == dom(r.html)
    # the preheader: what the inbox shows after the subject, hidden in the body
    assert r.preheader.startswith("13 new papers matched" if language == "en" else "今日有 13")
    hidden = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', r.html)
    assert hidden and hidden.group(1).startswith(str(markupsafe.escape(r.preheader)) +
                                                 "&#847;&zwnj;&nbsp;")


def unref(html: str) -> str:
    return re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), html)


def dom(html: str) -> tuple[list[tuple[str, dict[str, str]]], str]:
    root = lxml.html.fromstring(html)
    return ([(e.tag, dict(e.attrib)) for e in root.iter() if isinstance(e.tag, str)],
            " ".join(root.text_content().split()))


def test_an_html_line_with_nowhere_to_break_goes_quoted_printable():
    """Chinese text has no spaces: a paragraph longer than a line stays whole, under
    quoted-printable; spaces inside an attribute's value are never a break."""
    unbroken = "<p title=\"" + "a " * 600 + "\">" + "语" * 1200 + "</p>\n"
    assert headers.html_7bit(unbroken) is None
    assert headers.text_body(unbroken, "html")[0] == "quoted-printable"
    spaced = "<p class=\"x\" title=\"" + "a " * 300 + "\">" + "语 " * 600 + "</p>\n"
    seven = headers.html_7bit(spaced)
    assert seven is not None and seven.isascii()
    assert all(len(line) <= headers.LINE_LIMIT for line in seven.splitlines())
    assert 'title="' + "a " * 300 + '"' in seven  # the value kept its spaces
    assert unref(seven).replace("\n", " ") == spaced.replace("\n", " ")
    # references that would take the part past Gmail's clip: quoted-printable instead
    assert headers.html_7bit("<p>" + "语 " * (headers.HTML_BUDGET // 8) + "</p>\n") is None



# --- in a real browser -------------------------------------------------------------------


def inspect(target: str | Path, width: int, scheme: str = "light", height: int = 900,
            name: str = "") -> dict:
    """Open a file or URL in headless chromium; the screenshot stays in tests/artifacts."""
    chromium = require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = name or Path(str(target)).stem
    shot = ARTIFACTS / f"{stem}-{width}-{scheme}.png"
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "browser" / "inspect.mjs"), str(target), str(width),
         str(shot), scheme], capture_output=True, text=True, timeout=120,
        env={"CHROMIUM": chromium, "PATH": "/usr/bin:/bin", "NODE_PATH":
             str(ROOT / "node_modules")}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert shot.stat().st_size > 10_000
    seen = json.loads(done.stdout)
    assert seen["innerHeight"] == height
    return seen


def _luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("width", [375, 640])
@pytest.mark.parametrize("kind", ["extractive", "llm", "thirty"])
def test_what_a_person_sees_in_chromium(tmp_path, width, kind):
    issue = {"extractive": make_issue(), "llm": make_issue(brief=LLM_BRIEF),
             "thirty": make_issue(n=30, more=13)}[kind]
    path = tmp_path / f"issue-{kind}.html"
    path.write_text(render.render(issue, Settings()).html, encoding="utf-8")
    seen = inspect(path, width)
    assert seen["external"] == []  # nothing fetched from the network
    assert seen["scrollWidth"] <= seen["innerWidth"], "horizontal scrolling"
    assert seen["briefTop"] is not None and seen["firstPaperTop"] is not None
    assert seen["briefTop"] < seen["firstPaperTop"]
    if width == 640:  # desktop: the brief and the first paper's number above the fold
        assert seen["firstPaperBottom"] < seen["innerHeight"], seen


@pytest.mark.parametrize("width", [375, 640])
def test_dark_mode_stays_readable(tmp_path, width):
    path = tmp_path / "issue-dark.html"
    path.write_text(render.render(make_issue(), Settings()).html, encoding="utf-8")
    light, dark = inspect(path, width, "light"), inspect(path, width, "dark")
    assert light["colors"]["01."]["bg"] != dark["colors"]["01."]["bg"]
    assert _luminance(dark["colors"]["01."]["bg"]) < 0.05  # a dark card, not a light one
    for seen in (light, dark):
        for marker, colors in seen["colors"].items():
            # WCAG AA: 4.5:1 for body text, 3:1 for the small muted notes
            need = 3.0 if marker == "Extractive digest" else 4.5
            assert contrast(colors["color"], colors["bg"]) >= need, (marker, colors)


def test_plain_text_wraps_chinese_and_never_breaks_words_or_urls():
    zh = "本研究提出一种新的扩散模型训练方法，在多个基准上取得了显著提升，" * 4
    lines = render.wrap(zh, 40).splitlines()
    assert len(lines) > 3 and "".join(lines) == zh
    assert all(sum(2 if "\u4e00" <= c <= "\u9fff" or c in "，" else 1 for c in line) <= 40
               for line in lines)
    mixed = render.wrap("We study LLM 剪枝 with https://arxiv.org/abs/2606.14150 and more "
                        "words " * 3, 30, indent="  ")
    assert "https://arxiv.org/abs/2606.14150" in mixed  # a URL stays on one line
    assert "LLM" in mixed.replace("\n  ", " ")


def test_a_citation_in_the_brief_takes_the_reader_to_the_card_in_chromium(tmp_path):
    """Click "[05]" in the brief, as a reader would: the page jumps to paper 05's card."""
    chromium = require_chromium()
    quoted = tuple(" ".join(p.abstract.split()[:12]) for p in load_papers()[:6])
    brief = replace(LLM_BRIEF, themes=tuple(
        replace(th, quotes=tuple(quoted[c - 1] for c in th.cites)) for th in LLM_BRIEF.themes))
    html = tmp_path / "issue.html"
    html.write_text(render.render(make_issue(brief=brief), Settings()).html, encoding="utf-8")
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "browser" / "click_cite.mjs"), str(html), "05"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={"CHROMIUM": chromium, "PATH": "/usr/bin:/bin",
             "NODE_PATH": str(ROOT / "node_modules")})
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["label"] == "[05]" and seen["before"] == 0
    assert seen["title"] == f"\u201c{quoted[4]}\u201d"  # the evidence, on hover
    assert seen["hash"] == "#p05" and seen["cardNumber"] == "05."
    assert seen["scrollY"] > 0 and abs(seen["cardTop"]) < 2  # the card is at the top


ZH_BRIEF = Brief(
    kind="llm", model="openai/gpt-4o-mini",
    headline="小模型与世界模型：哪些可以迁移，哪些必须重新学习",
    themes=(Theme("模型压缩", "剪枝与蒸馏都复用了父模型。", (1, 3), ("q1", "q3")),
            Theme("世界模型", "生成式探索有助于具身规划。", (6,), ("q6",))),
    connections=(Theme("", "效率研究与具身智能在低成本的想象中相遇。", (3, 6), ("q3", "q6")),),
    per_paper=tuple(f"模型对第{n}篇论文的一句话点评。" for n in range(1, 11)))


def _visible(html: str) -> str:
    """What a reader of the HTML part can see or hear: text, titles and aria labels."""
    html = re.sub(r"(?is)<head\b.*?</head>|<!--.*?-->", "", html)
    said = " ".join(re.findall(r'(?:title|aria-label)="([^"]*)"', html))
    return unescape(re.sub(r"<[^>]+>", " ", html) + " " + said)


def test_a_chinese_issue_has_no_untranslated_template_string():
    """Every word the template itself says to a Chinese reader is Chinese, with Chinese
    punctuation: render Chinese issues with every part the template has (brief with
    connections and notes, digest, all four kinds of chip, more matches, links, footer),
    take out what came from the data (titles, authors, abstracts, badges, addresses, URLs,
    the model's name), and no English word or English punctuation mark is left."""
    settings = Settings(secret="k", unsubscribe_url="https://academichub.example",
                        contact="AcademicHub")
    sub = Subscriber("ada@example.org", name="Ada", language="zh", authors=("Taiming Lu",),
                     topics=("diffusion models",), categories=("cs.CV",),
                     exclude=("survey",))
    papers = load_papers()
    issues = [make_issue("zh", n=10, more=5, brief=ZH_BRIEF, sub=sub),
              make_issue("zh", n=10, more=5, sub=sub),
              make_issue("zh", n=0, sub=sub, brief=None)]
    data = {settings.brand, settings.brand.upper(), sub.email, sub.name, "openai/gpt-4o-mini",
            *(q for th in ZH_BRIEF.themes + ZH_BRIEF.connections for q in th.quotes),
            *sub.authors, *sub.topics, *sub.categories, *sub.exclude}
    for p in papers:
        # an author list is Latin text: its commas are the names', not the template's
        data |= {p.title, p.badge, p.url, p.pdf_url or "", *p.authors, p.venue or "",
                 ", ".join(p.authors[:render.MAX_AUTHORS]),
                 *(render.shorten(p.abstract, n)[0] for n in (render.ABSTRACT_CHARS, 0)),
                 render.shorten(first_sentence(p.abstract), render.DIGEST_CHARS)[0]}
        if p.doi:
            data.add(f"https://doi.org/{p.doi}")
    squashed = sorted({re.sub(r"\s+", "", d) for d in data if d}, key=len, reverse=True)
    for issue in issues:
        r = render.render(issue, settings)
        for part in (r.text, _visible(r.html), r.subject, r.preheader):
            left = re.sub(r"\s+", "", part)
            for d in squashed:
                left = left.replace(d, "")
            left = re.sub(r"(?:https?://|mailto:)\S*?(?=[\u3000-\u9fff（）]|$)", "", left)
            left = left.replace("AcademicHub", "")  # the product's name, in every language
            words = set(re.findall(r"[A-Za-z]{2,}", left)) - {"PDF", "DOI", "unsubscribe"}
            assert not words, (words, left[:3000])
            # no ASCII punctuation touching Chinese text: the template's own marks are
            # full-width (：，。（）)
            cjk = r"[\u3400-\u9fff]"
            bad = re.findall(rf"{cjk}[:;,.!?()]|[:;,.!?()]{cjk}", left)
            assert not bad, (bad, left[:3000])
