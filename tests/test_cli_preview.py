from email import message_from_bytes, policy

import pytest
from conftest import invoke


@pytest.fixture
def ada(isolated):
    invoke("subscribers", "add", "ada@example.org", "--author", "Taiming Lu",
           "--topic", "diffusion models")
    invoke("fetch")
    return isolated


def test_preview_html_default(ada):
    out = invoke("preview", "ada@example.org").output
    assert out.startswith("<!doctype html>")
    assert "fonts.googleapis.com" not in out
    assert '<meta name="color-scheme" content="light dark">' in out


@pytest.mark.parametrize("fmt, marker", [("text", "== Today's papers =="),
                                         ("mjml", "<mjml lang=\"en\">")])
def test_preview_formats(ada, fmt, marker):
    assert marker in invoke("preview", "ada@example.org", "--format", fmt).output


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


def test_preview_unknown_subscriber(ada):
    result = invoke("preview", "nobody@example.org", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: no subscriber nobody@example.org")
