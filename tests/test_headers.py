"""Headers as providers read them: checked on the raw bytes of every kind of message the
tool sends (an issue, the "nothing new" note, a confirmation request), and DKIM signatures
checked with dkimpy's own verifier."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import invoke, read_outbox
from test_render import make_issue

from newsletter import render
from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.lists import roster
from newsletter.lists.tokens import confirm_token, unsubscribe_token
from newsletter.mail import headers, signing
from newsletter.models import Subscriber

NOW = datetime(2026, 11, 22, 7, tzinfo=UTC)
REAL = Settings(from_addr="AcademicHub Daily <daily@academichub.example>", secret="k" * 32,
                unsubscribe_url="https://academichub.example/u",
                reply_to="Editors <editors@academichub.example>", feedback_id="academichub")


def head(raw: bytes) -> dict[str, list[bytes]]:
    """Header fields exactly as on the wire: name -> raw values (folds kept)."""
    block = raw.split(b"\r\n\r\n", 1)[0]
    out: dict[str, list[bytes]] = {}
    for field in re.split(rb"\r\n(?![ \t])", block):
        name, _, value = field.partition(b":")
        out.setdefault(name.decode().lower(), []).append(value[1:] if value[:1] == b" "
                                                         else value)
    return out


def issue_bytes(settings: Settings, empty: bool = False) -> bytes:
    issue = make_issue(n=0 if empty else 3)
    msg = render.build_message(issue, render.render(issue, settings), settings, NOW)
    return headers.to_bytes(msg)


def confirm_bytes(settings: Settings) -> bytes:
    sub = Subscriber("ada@example.org", name="Ada", language="en")
    msg, _ = roster.confirmation_message(sub, settings, confirm_token(settings.secret or "x",
                                                                      sub.email), NOW)
    return headers.to_bytes(msg)


@pytest.mark.parametrize("kind", ["issue", "empty"])
def test_list_headers_on_the_raw_bytes(kind):
    raw = issue_bytes(REAL, empty=kind == "empty")
    h = head(raw)
    token = unsubscribe_token(REAL.secret, "ada@example.org")
    mailto = (f"<mailto:daily@academichub.example?subject=unsubscribe%20ada%40example.org%20"
              f"{token}>").encode()
    web = (f"<https://academichub.example/u/unsubscribe?email=ada%40example.org&token={token}>"
           ).encode()
    # a list of <URI>, folded only between the URIs, never an encoded-word
    assert h["list-unsubscribe"] == [mailto + b",\r\n " + web]
    assert b"=?" not in b"".join(h["list-unsubscribe"])
    assert h["list-unsubscribe-post"] == [b"List-Unsubscribe=One-Click"]
    assert h["list-id"] == [b'"AcademicHub" <daily.academichub.example>']
    assert h["from"] == [b"AcademicHub Daily <daily@academichub.example>"]
    assert h["reply-to"] == [b"Editors <editors@academichub.example>"]
    assert h["to"] == [b"Ada <ada@example.org>"]
    assert h["date"] == [b"Sun, 22 Nov 2026 07:00:00 +0000"]
    assert h["mime-version"] == [b"1.0"]
    assert re.fullmatch(rb"<20261122\.[0-9a-f]{20}@academichub\.example>", h["message-id"][0])
    assert h["feedback-id"] == [f"20261122:{kind}:academichub".encode()]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))  # RFC 5322's hard limit
    # and the email package reads the same list back
    msg = message_from_bytes(raw, policy=policy.default)
    assert str(msg["List-Unsubscribe"]).replace("\r\n", "").split(", ") == \
        [mailto.decode(), web.decode()]


def test_same_issue_same_message_id_and_no_web_link_without_endpoint():
    settings = Settings(from_addr="daily@academichub.example", secret="s")
    first, again = issue_bytes(settings), issue_bytes(settings)
    assert head(first)["message-id"] == head(again)["message-id"]
    h = head(first)
    assert len(h["list-unsubscribe"]) == 1 and b"https" not in h["list-unsubscribe"][0]
    assert "list-unsubscribe-post" not in h  # one-click needs the https endpoint
    assert "feedback-id" not in h
    assert h["reply-to"] == [b"daily@academichub.example"]


def test_brand_with_quotes_and_non_ascii_in_list_id():
    quoted = Settings(from_addr="a@b.example", brand='The "Daily" · x')
    assert head(issue_bytes(quoted))["list-id"] == [b'"The \\"Daily\\"" <daily.b.example>']
    wide = Settings(from_addr="a@b.example", brand="学术日报 · x")
    value = head(issue_bytes(wide))["list-id"][0]
    assert value.startswith(b"=?utf-8?") and value.endswith(b" <daily.b.example>")


def test_a_long_subject_is_encoded_but_list_unsubscribe_never_is():
    settings = Settings(from_addr="Très Long Nom d'Expéditeur <daily@academichub.example>",
                        secret="k", unsubscribe_url="https://academichub.example/" + "x" * 60)
    raw = issue_bytes(settings)
    h = head(raw)
    assert b"=?utf-8?q?Tr=C3=A8s" in h["from"][0]  # a display name may be encoded
    value = h["list-unsubscribe"][0]
    assert value.startswith(b"<mailto:") and b"=?" not in value
    assert re.fullmatch(rb"<[^<>\s]+>,\r\n <[^<>\s]+>", value)


def test_confirmation_headers_come_from_the_same_place():
    raw = confirm_bytes(REAL)
    h = head(raw)
    assert h["from"] == [b"AcademicHub Daily <daily@academichub.example>"]
    assert h["reply-to"] == [b"Editors <editors@academichub.example>"]
    assert h["date"] == [b"Sun, 22 Nov 2026 07:00:00 +0000"]
    assert h["auto-submitted"] == [b"auto-generated"]
    assert re.fullmatch(rb"<confirm\.[0-9a-f]{20}@academichub\.example>", h["message-id"][0])
    assert h["feedback-id"] == [b"20261122:confirm:academichub"]
    assert "list-unsubscribe" not in h and "list-id" not in h  # not list mail


# --- DKIM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def verify(raw: bytes, record: str) -> bool:
    import dkim

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"mail2026._domainkey.academichub.example."
        return record.encode()

    return bool(dkim.verify(raw, dnsfunc=dns))


def test_dkim_sign_and_verify(rsa_pem, tmp_path: Path):
    path = tmp_path / "dkim.pem"
    path.write_bytes(rsa_pem)
    settings = Settings(from_addr=REAL.from_addr, secret="k", dkim_selector="mail2026",
                        dkim_private_key=str(path), unsubscribe_url=REAL.unsubscribe_url)
    key = signing.key_from_settings(settings)
    assert key is not None and key.domain == "academichub.example"
    assert "PRIVATE" not in repr(key)
    issue = make_issue(n=2)
    msg = render.build_message(issue, render.render(issue, settings), settings, NOW)
    raw = headers.to_bytes(msg, key)
    assert raw.startswith(b"DKIM-Signature: ")
    signed = re.search(rb"h=([^;]+);", raw.split(b"\r\n\r\n")[0].replace(b"\r\n", b""))
    assert signed is not None
    names = {n.strip().lower() for n in signed.group(1).split(b":")}
    assert {b"from", b"list-unsubscribe", b"list-unsubscribe-post", b"list-id"} <= names
    record = signing.dns_record(key)
    assert verify(raw, record)
    # a message already serialised (say, by a worker process) is signed the same way
    assert bytes(msg) == headers.to_bytes(msg) and verify(headers.to_bytes(bytes(msg), key),
                                                          record)
    assert headers.envelope_sender(bytes(msg)) == headers.envelope_sender(msg) == \
        "daily@academichub.example"
    # the PEM text itself works too, and signs the same way
    same = signing.key_from_settings(Settings(from_addr=REAL.from_addr, dkim_selector="mail2026",
                                              dkim_private_key=rsa_pem.decode()))
    assert same is not None and verify(headers.to_bytes(msg, same), record)
    # a changed byte breaks the signature; a record with another key does not verify it
    assert not verify(raw.replace(b"Ada", b"Adb", 1), record)
    assert not verify(raw.replace(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                                  b"List-Unsubscribe-Post: List-Unsubscribe=One-Clack"), record)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong = signing.dns_record(signing.DkimKey("mail2026", "academichub.example",
                                               stranger.private_bytes(
                                                   serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption())))
    assert wrong != record and not verify(raw, wrong)


def test_dkim_through_smtp_and_outbox(rsa_pem, smtp_server, monkeypatch, isolated):
    monkeypatch.setenv("NEWSLETTER_SMTP_URL", smtp_server.url)
    monkeypatch.setenv("NEWSLETTER_FROM_ADDR", "AcademicHub <daily@academichub.example>")
    monkeypatch.setenv("NEWSLETTER_SECRET", "s" * 32)
    monkeypatch.setenv("NEWSLETTER_DKIM_SELECTOR", "mail2026")
    monkeypatch.setenv("NEWSLETTER_DKIM_PRIVATE_KEY", rsa_pem.decode())
    invoke("subscribers", "add", "ada@example.org", "--topic", "diffusion")
    invoke("run", "--all")
    assert len(smtp_server.envelopes) == 1
    envelope = smtp_server.envelopes[0]
    assert envelope.mail_from == "daily@academichub.example"
    record = signing.dns_record(signing.key_from_settings(Settings(
        from_addr="a@academichub.example", dkim_selector="mail2026",
        dkim_private_key=rsa_pem.decode())))
    assert verify(envelope.content, record)  # exactly the bytes the server received
    assert b"\r\nList-Unsubscribe: <mailto:daily@academichub.example?subject=unsubscribe%20" \
        in envelope.content
    # the outbox gets the same signed bytes
    monkeypatch.delenv("NEWSLETTER_SMTP_URL")
    invoke("subscribers", "add", "bo@example.org", "--topic", "diffusion")
    invoke("run", "--all", "--only", "bo@example.org")
    eml = next((isolated / "outbox").glob("*bo@example.org.eml")).read_bytes()
    assert verify(eml, record)
    assert list(read_outbox(isolated / "outbox")) == ["bo@example.org"]


@pytest.mark.parametrize("env, message", [
    ({"dkim_selector": "s"}, "set NEWSLETTER_DKIM_PRIVATE_KEY"),
    ({"dkim_private_key": "x"}, "set NEWSLETTER_DKIM_SELECTOR"),
    ({"dkim_selector": "s", "dkim_private_key": "/nowhere/key.pem"},
     "neither a PEM private key nor a readable PEM file"),
    ({"dkim_selector": "s", "dkim_private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n"
      "-----END PRIVATE KEY-----"}, "cannot be read as an unencrypted PEM private key"),
])
def test_dkim_settings_are_checked_once(env, message):
    with pytest.raises(ConfigError, match=message):
        signing.key_from_settings(Settings(from_addr="a@academichub.example", **env))


def test_dkim_needs_a_real_domain(rsa_pem):
    with pytest.raises(ConfigError, match="needs a real domain"):
        signing.key_from_settings(Settings(dkim_selector="s",
                                           dkim_private_key=rsa_pem.decode()))
    key = signing.key_from_settings(Settings(dkim_selector="s", dkim_domain="Example.ORG",
                                             dkim_private_key=rsa_pem.decode()))
    assert key is not None and key.domain == "example.org"
