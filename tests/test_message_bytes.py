"""The run writes each message's bytes directly (headers.message_bytes); they must be the
message the email package writes for the same issue (render.build_message): the same header
lines byte for byte, the same parts, the same decoded text."""

import random
import re
import string
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.utils import formataddr

import pytest
from test_render import LLM_BRIEF, make_issue

from newsletter import render
from newsletter.config import Settings
from newsletter.mail import headers
from newsletter.models import Subscriber

NOW = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
BOUNDARY = re.compile(rb'boundary="([^"]+)"')

SETTINGS = [
    Settings(secret="s3cret", unsubscribe_url="https://news.example.org",
             contact="AcademicHub, 1 Example Road, Princeton NJ",
             from_addr="AcademicHub <daily@example.org>"),
    Settings(secret="s3cret", from_addr="学术雷达 Daily <daily@example.org>",
             reply_to="Editors <editors@example.org>", feedback_id="academichub",
             brand="学术雷达 · 每日"),
    Settings(from_addr="daily@localhost"),  # no secret: a mailto-only List-Unsubscribe
]
SUBSCRIBERS = [
    Subscriber("ada@example.org", name="Ada", language="en", authors=("Taiming Lu",)),
    Subscriber("li.wei@example.org", name="李伟", language="zh", topics=("protein",)),
    Subscriber("o'brien+news@example.org", name='Dr. "Pat" O\'Brien, PhD (Lab of '
               "Very Long Names and Affiliations, Department of Physics)", language="en"),
    Subscriber("x@example.org", name="", language="zh"),
]


def _header_block(data: bytes) -> bytes:
    head = data.split(b"\r\n\r\n", 1)[0]
    return BOUNDARY.sub(b'boundary="B"', head)


def _cases():
    for n, settings in enumerate(SETTINGS):
        for k, sub in enumerate(SUBSCRIBERS):
            issue = make_issue(sub.language, n=(0, 1, 10)[(n + k) % 3], more=k * 3, sub=sub,
                               brief=LLM_BRIEF if k % 2 else None)
            yield pytest.param(settings, issue, id=f"settings{n}-{sub.email}-{len(issue.matches)}")


@pytest.mark.parametrize(("settings", "issue"), list(_cases()))
def test_direct_bytes_are_the_email_packages_message(settings, issue):
    rendered = render.render(issue, settings)
    ours = render.message_bytes(issue, rendered, settings, NOW)
    theirs = bytes(render.build_message(issue, rendered, settings, NOW))
    # every header line but the multipart Content-Type (folded at another place) is the same
    strip_ct = re.compile(rb"\r\nContent-Type: multipart/alternative;[^\r]*\r\n( [^\r]*\r\n)?")
    assert strip_ct.sub(b"\r\n", _header_block(ours) + b"\r\n") == \
        strip_ct.sub(b"\r\n", _header_block(theirs) + b"\r\n")
    assert all(len(line) <= 998 for line in ours.split(b"\r\n"))
    assert b"\n" not in ours.replace(b"\r\n", b"")  # CRLF only, as SMTP and DKIM want
    a = message_from_bytes(ours, policy=policy.default)
    b = message_from_bytes(theirs, policy=policy.default)
    assert [(k, str(v)) for k, v in a.items() if k != "Content-Type"] == \
        [(k, str(v)) for k, v in b.items() if k != "Content-Type"]
    assert a.get_content_type() == "multipart/alternative"
    pa, pb = list(a.iter_parts()), list(b.iter_parts())
    assert [p.get_content_type() for p in pa] == ["text/plain", "text/html"]
    assert [(p.get_content_type(), p["Content-Transfer-Encoding"], p.get_content())
            for p in pa] == [(p.get_content_type(), p["Content-Transfer-Encoding"],
                              p.get_content()) for p in pb]
    plain, html = (p.get_content().replace("\r\n", "\n") for p in pa)
    assert plain.rstrip("\n") == rendered.text.rstrip("\n")
    # the HTML with its character references and broken lines undone (headers.html_7bit)
    assert pa[1]["Content-Transfer-Encoding"] == "7bit"
    assert unref(html).replace("\n", " ").rstrip() == \
        unref(rendered.html).replace("\n", " ").rstrip()
    assert not a.defects and not any(p.defects for p in pa)


def unref(html: str) -> str:
    return re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), html)


def test_a_resumed_delivery_keeps_its_message_id():
    issue = make_issue("en", n=3)
    settings = SETTINGS[0]
    rendered = render.render(issue, settings)
    data = render.message_bytes(issue, rendered, settings, NOW, "<20261121.abc@example.org>")
    assert b"\r\nMessage-ID: <20261121.abc@example.org>\r\n" in data
    assert data.count(b"Message-ID:") == 1


def test_the_boundary_is_in_no_part():
    text = "=" * 40 + "\n" + "a 7bit part that could hold a boundary-looking line\n"
    data = headers.message_bytes(SETTINGS[0], headers.Envelope(
        "ada@example.org", "Ada", "Subject", NOW, "<1@example.org>"),
        [("plain", text), ("html", "<p>x</p>")])
    boundary = BOUNDARY.search(data).group(1)
    parts = data.split(b"--" + boundary)
    assert len(parts) == 4 and parts[-1] == b"--\r\n"
    msg = message_from_bytes(data, policy=policy.default)
    assert [p.get_content().replace("\r\n", "\n") for p in msg.iter_parts()] == \
        [text, "<p>x</p>\n"]


def test_envelope_sender_reads_the_from_of_bytes():
    settings = SETTINGS[1]
    issue = make_issue("zh", n=2, sub=SUBSCRIBERS[1])
    data = render.message_bytes(issue, render.render(issue, settings), settings, NOW)
    assert b"From: =?utf-8?" in data  # an encoded display name, maybe folded
    assert headers.envelope_sender(data) == "daily@example.org"
    assert headers.envelope_sender(b"Subject: x\r\nfrom:\r\n  <a@b.example>\r\n\r\nFrom: no\r\n") \
        == "a@b.example"


def test_a_plain_to_line_is_written_as_the_email_package_writes_it():
    """The To line skips the header parser when it is plain ASCII words and an address:
    for 5,000 such values, random words and addresses, the line is the package's."""
    rng = random.Random(16)
    alpha = string.ascii_letters + string.digits
    checked = 0
    for _ in range(5_000):
        name = " ".join("".join(rng.choice(alpha) for _ in range(rng.randint(1, 12)))
                        for _ in range(rng.randint(0, 4)))
        local = "".join(rng.choice(alpha + "._+-") for _ in range(rng.randint(1, 20)))
        domain = ".".join("".join(rng.choice(alpha + "-") for _ in range(rng.randint(1, 10)))
                          for _ in range(rng.randint(2, 3)))
        value = formataddr((name, f"{local}@{domain}")) if name else f"{local}@{domain}"
        if headers._plain_address(value):
            checked += 1
            assert headers._folded("To", value) == f"To: {value}\r\n", value
    assert checked > 4_000
    # quoting, non-ASCII and long values go through the parser
    assert not headers._plain_address('"Lovelace, Ada" <ada@example.org>')
    assert not headers._plain_address("李伟 <li@example.cn>")
    assert not headers._plain_address("A " * 40 + "<a@example.org>")
