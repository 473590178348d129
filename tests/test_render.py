"""What the reader sees: valid MJML, escaped content, both languages, a real browser."""

import json
import re
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import ROOT, require_chromium, require_node_tool

from newsletter import render
from newsletter.brief import extractive
from newsletter.config import Settings
from newsletter.models import Issue, Match, Paper, Subscriber
from newsletter.sources.sample import load_papers

ARTIFACTS = ROOT / "tests" / "artifacts"


def make_issue(language="en", n=10, more=0, papers=None):
    papers = papers or load_papers()
    sub = Subscriber("ada@example.org", name="Ada", language=language,
                     authors=("Taiming Lu",), topics=("diffusion models",))
    matches = tuple(Match(p, 1.0, ("topic: diffusion models",),
                          ("Taiming Lu",) if "Taiming Lu" in p.authors else ())
                    for p in papers[: n + more])
    shown = tuple(m.paper for m in matches[:n])
    return Issue(sub, date(2026, 11, 22), matches[:n], matches[n:], extractive(shown))


@pytest.mark.parametrize("language", ["en", "zh"])
def test_templates_pass_the_reference_mjml_validator_in_strict_mode(tmp_path, language):
    mjml = require_node_tool("mjml")
    source = render.render(make_issue(language, n=10, more=5), Settings()).mjml
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
    r = render.render(make_issue(papers=[p], n=1), Settings())
    assert "<b>x</b>" not in r.html and "&lt;b&gt;x&lt;/b&gt; &amp; y &lt; 3" in r.html
    assert "<script>x</script>" not in r.html
    assert "Bounds for <b>x</b> & y < 3" in r.text  # plain text stays plain


def test_html_has_no_remote_resources_and_keeps_doctype():
    html = render.render(make_issue(), Settings()).html
    assert html.startswith("<!doctype html>")
    assert "fonts.googleapis.com" not in html and "<link" not in html
    assert re.search(r"PingFang SC|Noto Sans CJK SC", html)  # a font stack for Chinese
    assert "prefers-color-scheme: dark" in html


def test_chinese_issue_says_everything_in_chinese():
    r = render.render(make_issue("zh"), Settings())
    assert r.subject == "AcademicHub · 2026年11月22日 · 10 篇新论文"
    for phrase in ("交叉领域文献分析简报", "今日论文", "退订"):
        assert phrase in r.html
    assert "Today's papers" not in r.html


def test_message_headers():
    issue = make_issue()
    settings = Settings(from_addr="AcademicHub <daily@academichub.example>", secret="k",
                        unsubscribe_url="https://academichub.example")
    r = render.render(issue, settings)
    msg = render.build_message(issue, r, settings, datetime(2026, 11, 22, 7, tzinfo=UTC))
    assert msg["From"] == "AcademicHub <daily@academichub.example>"
    assert msg["To"] == "Ada <ada@example.org>"
    assert msg["Subject"] == "AcademicHub · November 22, 2026 · 10 new papers"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = render.unsubscribe_token("k", "ada@example.org")
    assert msg["List-Unsubscribe"] == (
        f"<mailto:daily@academichub.example?subject=unsubscribe%20{token}>, "
        f"<https://academichub.example/unsubscribe?email=ada%40example.org&token={token}>")
    assert render.unsubscribe_token("k", "bob@example.org") != token
    again = render.build_message(issue, r, settings, datetime(2026, 11, 22, 8, tzinfo=UTC))
    assert again["Message-ID"] == msg["Message-ID"].replace("", "")
    assert msg["Message-ID"].endswith("@academichub.example>")


def _inspect(html_path: Path, width: int, scheme: str = "light") -> dict:
    chromium = require_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / f"{html_path.stem}-{width}-{scheme}.png"
    done = subprocess.run(
        ["node", str(ROOT / "tests" / "browser" / "inspect.mjs"), str(html_path), str(width),
         str(shot), scheme], capture_output=True, text=True, timeout=120,
        env={"CHROMIUM": chromium, "PATH": "/usr/bin:/bin", "NODE_PATH":
             str(ROOT / "node_modules")}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert shot.stat().st_size > 10_000
    return json.loads(done.stdout)


def _luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(a: str, b: str) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


@pytest.mark.parametrize("width", [375, 640])
def test_what_a_person_sees_in_chromium(tmp_path, width):
    path = tmp_path / "issue-en.html"
    path.write_text(render.render(make_issue(), Settings()).html, encoding="utf-8")
    seen = _inspect(path, width)
    assert seen["external"] == []  # nothing fetched from the network
    assert seen["scrollWidth"] <= seen["innerWidth"], "horizontal scrolling"
    assert seen["briefTop"] is not None and seen["firstPaperTop"] is not None
    if width == 640:  # desktop: the brief starts above the fold
        assert seen["briefTop"] < seen["innerHeight"]


def test_dark_mode_stays_readable(tmp_path):
    path = tmp_path / "issue-dark.html"
    path.write_text(render.render(make_issue(), Settings()).html, encoding="utf-8")
    light, dark = _inspect(path, 640, "light"), _inspect(path, 640, "dark")
    assert light["colors"]["01."]["bg"] != dark["colors"]["01."]["bg"]
    for seen in (light, dark):
        for marker, colors in seen["colors"].items():
            # WCAG AA: 4.5:1 for body text, 3:1 for the small muted notes
            need = 3.0 if marker == "Extractive digest" else 4.5
            assert _contrast(colors["color"], colors["bg"]) >= need, (marker, colors)
