import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from email import message_from_bytes, policy

import pytest
from conftest import invoke
from test_render import inspect

from newsletter import render
from newsletter.config import Settings
from newsletter.web import preview_server

NOW = datetime(2026, 11, 22, 9, tzinfo=UTC)


@pytest.fixture
def ada(isolated):
    invoke("subscribers", "add", "ada@example.org", "--name", "Ada", "--author", "Taiming Lu",
           "--topic", "diffusion models")
    invoke("fetch")
    return isolated


def test_preview_html_default(ada):
    out = invoke("preview", "ada@example.org").output
    assert out.startswith("<!doctype html>")
    assert "fonts.googleapis.com" not in out
    assert '<meta name="color-scheme" content="light dark">' in out


@pytest.mark.parametrize("args, marker", [(["--format", "text"], "== Today's papers =="),
                                          (["--text"], "== Today's papers =="),
                                          (["--format", "mjml"], "<mjml lang=\"en\">")])
def test_preview_formats(ada, args, marker):
    out = invoke("preview", "ada@example.org", *args).output
    assert marker in out
    if "--text" in args:
        assert out == invoke("preview", "ada@example.org", "--format", "text").output


def test_preview_eml_to_file_records_nothing(ada, tmp_path):
    out = tmp_path / "issue.eml"
    result = invoke("preview", "ada@example.org", "--format", "eml", "--out", str(out))
    assert result.output == f"Wrote {out} (10 papers)\n"
    msg = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert msg["Subject"] == "AcademicHub · November 22, 2026 · 14 new papers"
    assert msg.get_content_type() == "multipart/alternative"
    # previewing sends nothing, so a second preview is the same issue
    again = tmp_path / "again.eml"
    invoke("preview", "ada@example.org", "--format", "eml", "--out", str(again))
    assert message_from_bytes(again.read_bytes(), policy=policy.default)["Message-ID"] == \
        msg["Message-ID"]
    assert not (ada / "outbox").exists()


def test_preview_date_is_that_day_at_the_send_hour_in_their_time_zone(isolated, tmp_path):
    invoke("subscribers", "add", "li@example.cn", "--topic", "diffusion models", "--lang",
           "zh", "--timezone", "Asia/Shanghai", "--send-hour", "8")
    invoke("fetch")
    out = tmp_path / "li.eml"
    invoke("preview", "li@example.cn", "--date", "2026-11-23", "--format", "eml",
           "--out", str(out))
    msg = message_from_bytes(out.read_bytes(), policy=policy.default)
    assert msg["Date"] == "Mon, 23 Nov 2026 08:00:00 +0800"
    assert msg["Subject"].startswith("AcademicHub · 2026年11月23日 · ")
    text = invoke("preview", "li@example.cn", "--date", "2026-11-23", "--text").output
    assert "2026年11月23日" in text and "== 今日论文 ==" in text


def test_preview_needs_an_email_or_serve(ada):
    result = invoke("preview", ok=False)
    assert result.exit_code == 1
    assert result.output == ("Error: give the EMAIL of a subscriber, or --serve to preview "
                             "everyone's issue in a browser\n")


def test_preview_unknown_subscriber(ada):
    result = invoke("preview", "nobody@example.org", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: no subscriber nobody@example.org")


# --- the preview server ------------------------------------------------------------------


@pytest.fixture
def templates(tmp_path):
    """A copy of the templates that a test may edit."""
    copy = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, copy)
    return copy


@pytest.fixture
def server(ada, templates):
    invoke("subscribers", "add", "li@example.cn", "--name", "李伟", "--topic", "CRISPR",
           "--lang", "zh")
    log: list[str] = []
    srv = preview_server.make_server(Settings(db=str(ada / "newsletter.db")), lambda: NOW,
                                     port=0, templates=templates, log=log.append)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    srv.requests = log  # what the server logged, one line per request
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def test_server_index_lists_everyone_with_filters_and_links(server):
    status, ctype, page = get(server.url)
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert server.url.startswith("http://127.0.0.1:")
    for needle in ("ada@example.org", "Ada", "Author: Taiming Lu", "Topic: diffusion models",
                   "li@example.cn", "李伟", "简体中文", "主题: CRISPR", "2026-11-22",
                   '<a href="/issue/ada@example.org.html">HTML</a>',
                   '<a href="/issue/li@example.cn.txt">text</a>'):
        assert needle in page, needle
    assert server.requests[-1].startswith("127.0.0.1 \"GET / HTTP/1.1\" 200")


def test_server_issue_pages_are_the_issue(server, ada):
    status, ctype, html = get(server.url + "issue/ada@example.org.html")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert html == invoke("preview", "ada@example.org").output
    status, ctype, text = get(server.url + "issue/ada@example.org.txt")
    assert (status, ctype) == (200, "text/plain; charset=utf-8")
    assert text.startswith("AcademicHub · Curated Daily - Your research radar\n")
    assert "== Today's papers ==" in text
    assert "交叉领域文献分析简报" in get(server.url + "issue/li%40example.cn.html")[2]
    assert get(server.url + "issue/nobody@example.org.html")[:2] == (
        404, "text/plain; charset=utf-8")
    assert get(server.url + "nothing-here")[0] == 404


def test_server_shows_a_template_edit_on_reload(server, templates):
    before = get(server.url + "issue/ada@example.org.html")[2]
    assert "Your research radar" in before and "nl-edited" not in before
    header = templates / "partials" / "header.mjml.j2"
    header.write_text(header.read_text().replace('class="nl-h1"', 'class="nl-h1 nl-edited"'))
    strings = templates / "i18n" / "en.toml"
    strings.write_text(strings.read_text().replace("Your research radar", "Your paper radar"))
    after = get(server.url + "issue/ada@example.org.html")[2]
    assert 'class="nl-h1 nl-edited"' in after and "Your paper radar" in after
    assert "Your paper radar" in get(server.url + "issue/ada@example.org.txt")[2]
    # the real templates were not touched
    assert "Your research radar" in invoke("preview", "ada@example.org").output


def test_server_for_a_given_day(ada):
    srv = preview_server.make_server(Settings(db=str(ada / "newsletter.db")), lambda: NOW,
                                     port=0, day=date(2026, 11, 25))
    assert "on 2026-11-25 at each subscriber" in srv.page("/")[2]
    assert "November 25, 2026" in srv.page("/issue/ada@example.org.txt")[2]
    srv.server_close()


def test_preview_serve_command(ada):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "newsletter", "preview", "--serve",
                             "--port", "0"], stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ada)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        m = re.fullmatch(r"Serving issue previews on (http://127\.0\.0\.1:\d+/) - press "
                         r"Ctrl\+C to stop\n", line)
        assert m, line
        status, _, page = get(m.group(1))
        assert status == 200 and "ada@example.org" in page
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("width", [375, 640])
def test_served_preview_in_chromium(server, width):
    seen = inspect(server.url + "issue/ada@example.org.html", width, name="served-ada")
    assert seen["external"] == []
    assert seen["scrollWidth"] <= seen["innerWidth"], "horizontal scrolling"
    assert seen["briefTop"] < seen["firstPaperTop"]
    if width == 640:
        assert seen["firstPaperBottom"] < seen["innerHeight"], seen



@pytest.mark.parametrize("width", [375, 640])
def test_server_index_fits_a_phone(server, width):
    """No sideways scrolling in Chromium at phone widths (a long address wraps too)."""
    from test_render import inspect

    invoke("subscribers", "add", "a.very.long.address.for.testing.wrapping@example-university"
           ".edu", "--topic", '"protein structure prediction" OR AlphaFold OR "cryo-EM"')
    seen = inspect(server.url, width, name="preview-index")
    assert seen["scrollWidth"] <= width, seen
