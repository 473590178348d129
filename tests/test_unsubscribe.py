"""Leaving the list: signed tokens, the mailbox sync over a real IMAP server (dovecot) and
hard bounces. The RFC 8058 one-click endpoint is tested in test_serve.py."""

from email.message import EmailMessage

import pytest
from conftest import invoke

from newsletter import store
from newsletter.lists.tokens import unsubscribe_token

SECRET = "test-signing-key"


@pytest.fixture
def people(isolated, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    for address in ("ada@example.org", "bob@example.org", "cy@example.org"):
        invoke("subscribers", "add", address, "--author", "Taiming Lu")
    return isolated


def mail(sender, subject, body="", to="newsletter@localhost"):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body or "unsubscribe")
    return bytes(msg)


def bounce(recipient, status="5.1.1", action="failed"):
    """A delivery status notification in RFC 3464's shape."""
    return (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: newsletter@localhost\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThis message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n--B--\r\n").encode()


def statuses(path):
    db = store.open_db(path / "newsletter.db")
    return {s.email: s.status for s in store.list_subscribers(db)}


def test_mailbox_sync_applies_unsubscribes_and_bounces(people, imap_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", imap_server.url)
    token = unsubscribe_token(SECRET, "ada@example.org")
    imap_server.deliver(mail("ada@example.org", f"unsubscribe {token}"))
    # the mailto in bob's issue names bob: forwarded, it still acts for bob, and only bob
    bob = unsubscribe_token(SECRET, "bob@example.org")
    imap_server.deliver(mail("forwarder@example.net", f"unsubscribe bob@example.org {bob}"))
    # a request without a valid token changes nothing
    imap_server.deliver(mail("cy@example.org", "unsubscribe 0123456789abcdef0123456789abcdef"))
    imap_server.deliver(bounce("cy@example.org"))
    imap_server.deliver(bounce("bob@example.org", status="4.2.2", action="delayed"))
    imap_server.deliver(mail("colleague@example.org", "Great issue today!", "thanks"))
    out = invoke("unsubscribes", "sync").output
    assert "unsubscribed ada@example.org" in out and "unsubscribed bob@example.org" in out
    assert "bounced      cy@example.org (5.1.1 550 5.1.1 user unknown)" in out
    assert ("rejected     unsubscribe request from cy@example.org: no valid token for that "
            "address") in out
    assert out.rstrip().endswith("2 unsubscribed, 1 bounced, 0 soft bounces, 0 complaints, "
                                 "0 confirmed, 1 rejected, 1 other messages left unread")
    assert statuses(people) == {"ada@example.org": "unsubscribed",
                                "bob@example.org": "unsubscribed", "cy@example.org": "bounced"}
    assert imap_server.unseen() == 1  # only the unrelated message stays unread
    assert "0 unsubscribed, 0 bounced" in invoke("unsubscribes", "sync").output
    out = invoke("run", "--all").output
    assert "Summary: 0 due" in out  # nobody left to send to


def test_a_token_acts_only_for_the_address_it_was_made_for(people, imap_server, monkeypatch):
    """dana replies with bob's token (say, from a forwarded issue): bob stays subscribed."""
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", imap_server.url)
    invoke("subscribers", "add", "dana@example.org", "--author", "Taiming Lu")
    bob = unsubscribe_token(SECRET, "bob@example.org")
    imap_server.deliver(mail("dana@example.org", f"Re: unsubscribe {bob}"))
    imap_server.deliver(mail("dana@example.org", f"unsubscribe dana@example.org {bob}"))
    imap_server.deliver(mail("bob@example.org", f"unsubscribe cy@example.org {bob}"))
    out = invoke("unsubscribes", "sync").output
    assert out.count("rejected     ") == 3, out
    assert "from dana@example.org: no valid token for that address" in out
    assert "from bob@example.org for cy@example.org: no valid token" in out
    assert set(statuses(people).values()) == {"active"}
    # the same token from bob's own address (an older issue's mailto) does act for bob
    imap_server.deliver(mail("bob@example.org", f"unsubscribe {bob}"))
    assert "unsubscribed bob@example.org" in invoke("unsubscribes", "sync").output
    assert statuses(people)["bob@example.org"] == "unsubscribed"
    assert statuses(people)["dana@example.org"] == "active"


def test_sync_needs_a_mailbox_setting(people):
    result = invoke("unsubscribes", "sync", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: set NEWSLETTER_IMAP_URL")


def test_wrong_imap_password_is_a_clear_error(people, imap_server, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_IMAP_URL", imap_server.url.replace("test-password", "nope"))
    result = invoke("unsubscribes", "sync", ok=False)
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot read the mailbox at 127.0.0.1")
    assert "nope" not in result.output


def test_paused_subscribers_get_nothing(people):
    invoke("subscribers", "pause", "bob@example.org")
    out = invoke("run", "--all", "--only", "bob@example.org").output
    assert "skipped    bob@example.org                    0 papers  subscriber is paused" in out


def test_the_morning_run_expires_unconfirmed_subscribers(people, monkeypatch):
    invoke("subscribers", "add", "late@example.org", "--topic", "CRISPR", "--confirm")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-30T09:00:00+00:00")
    out = invoke("run", "--all").output
    assert "Expired: 1 unconfirmed subscribers forgotten after 7 days" in out
    assert "late@example.org" not in statuses(people)
