"""`newsletter doctor` against real stand-ins on loopback: an SMTP server with STARTTLS and
AUTH (aiosmtpd), dovecot IMAP, an OpenAI-compatible model, the unsubscribe endpoint over
https, and a DNS server (built on dnspython's message API) holding the From domain's SPF,
DKIM and DMARC records. All pass once; then each check fails once, on purpose."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import chat_completion, invoke

from newsletter.config import Settings
from newsletter.mail import signing

DOMAIN = "academichub.org"  # never looked up outside: the DNS server is on loopback
SELECTOR = "mail2026"


# --- a certificate for 127.0.0.1, trusted through SSL_CERT_FILE ----------------------------


@dataclass
class Cert:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    files = Cert(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


@pytest.fixture
def tls(cert_files: Cert, monkeypatch: pytest.MonkeyPatch) -> Cert:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_files.cert))  # OpenSSL's own trust setting
    return cert_files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- SMTP with STARTTLS and AUTH ------------------------------------------------------------


@pytest.fixture
def smtp_tls(tls: Cert) -> Iterator[dict[str, Any]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    state: dict[str, Any] = {"received": []}

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            state["received"].append(envelope)
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == b"news" and \
            data.password == b"right-password"
        return AuthResult(success=ok)

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            tls_context=tls.server_context(), require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)
    controller.start()
    state["port"] = port
    try:
        yield state
    finally:
        controller.stop()


# --- DNS on loopback, from dnspython's message API -----------------------------------------


@dataclass
class DNSServer:
    port: int
    records: dict[str, list[str]] = field(default_factory=dict)  # name -> TXT strings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def dns_server() -> Iterator[DNSServer]:
    import dns.flags
    import dns.message
    import dns.rcode
    import dns.rdataclass
    import dns.rdatatype
    import dns.rrset

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    server = DNSServer(sock.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            query = dns.message.from_wire(wire)
            answer = dns.message.make_response(query)
            answer.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text().rstrip(".").lower()
            texts = server.records.get(name)
            if texts is None:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                quoted = []
                for text in texts:  # long values split in 255-byte strings, as in real zones
                    chunks = [text[i:i + 255] for i in range(0, len(text), 255)]
                    quoted.append(" ".join(f'"{c}"' for c in chunks))
                answer.answer.append(dns.rrset.from_text_list(
                    question.name, 300, dns.rdataclass.IN, dns.rdatatype.TXT, quoted))
            sock.sendto(answer.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(2)
        sock.close()


# --- the unsubscribe endpoint over https -----------------------------------------------------


@pytest.fixture
def endpoint_https(tls: Cert, isolated: Path) -> Iterator[str]:
    """The real endpoint (`newsletter serve`'s app) under Uvicorn, with TLS."""
    import time

    import uvicorn

    from newsletter.web import endpoint

    settings = Settings(db=str(isolated / "newsletter.db"), secret="s" * 32)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        endpoint.create_app(settings), host="127.0.0.1", port=port, log_config=None,
        access_log=False, lifespan="on", ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# --- everything together ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dkim_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def healthy(monkeypatch, smtp_tls, dns_server, imap_server, llm_server, endpoint_https,
            dkim_pem) -> dict[str, Any]:
    """A set-up where every check passes."""
    env = {
        "NEWSLETTER_FROM_ADDR": f"AcademicHub <daily@{DOMAIN}>",
        "NEWSLETTER_SECRET": "a-long-random-signing-secret",
        "NEWSLETTER_SMTP_URL": f"smtp+starttls://news@127.0.0.1:{smtp_tls['port']}",
        "NEWSLETTER_SMTP_PASSWORD": "right-password",
        "NEWSLETTER_IMAP_URL": imap_server.url,
        "NEWSLETTER_UNSUBSCRIBE_URL": endpoint_https,
        "NEWSLETTER_DKIM_SELECTOR": SELECTOR,
        "NEWSLETTER_DKIM_PRIVATE_KEY": dkim_pem,
        "NEWSLETTER_DNS_SERVER": dns_server.address,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    llm_server.serve("/v1/chat/completions", chat_completion('{"ok": true}'),
                     content_type="application/json")
    key = signing.key_from_settings(Settings(from_addr=env["NEWSLETTER_FROM_ADDR"],
                                             dkim_selector=SELECTOR, dkim_private_key=dkim_pem))
    assert key is not None
    dns_server.records.update({
        DOMAIN: ["v=spf1 ip4:192.0.2.0/24 -all", "google-site-verification=abc"],
        f"{SELECTOR}._domainkey.{DOMAIN}": [signing.dns_record(key)],
        f"_dmarc.{DOMAIN}": ["v=DMARC1; p=quarantine; rua=mailto:dmarc@" + DOMAIN],
    })
    return {"dns": dns_server, "llm": llm_server, "smtp": smtp_tls, "env": env}


def lines(output: str) -> dict[str, str]:
    out = {}
    for line in output.splitlines():
        state, _, rest = line.partition("  ")
        name, _, message = rest.strip().partition(" ")
        if state.strip() in ("ok", "warn", "FAIL", "skip"):
            out[name] = f"{state.strip()} {message.strip()}"
    return out


def test_everything_in_place(healthy):
    result = invoke("doctor")
    got = lines(result.output)
    assert list(got) == ["from", "secret", "smtp", "smtp-tls", "smtp-login", "spf", "dkim",
                         "dmarc", "imap", "unsubscribe", "llm"]
    assert all(v.startswith("ok ") for v in got.values()), result.output
    assert got["smtp-tls"] == "ok STARTTLS, certificate valid"
    assert got["smtp-login"] == "ok news logged in (nothing sent)"
    assert got["dkim"] == f"ok {SELECTOR}._domainkey.{DOMAIN} matches the signing key"
    assert got["dmarc"] == "ok p=quarantine"
    assert got["unsubscribe"].endswith("/unsubscribe answers (400)") or \
        got["unsubscribe"].endswith("/unsubscribe answers (403)"), got["unsubscribe"]
    assert result.output.rstrip().endswith("no problems found")
    assert healthy["smtp"]["received"] == []  # nothing was sent
    assert "right-password" not in result.output and "BEGIN" not in result.output
    record = invoke("doctor", "--dkim-record").output
    assert record.startswith(f"{SELECTOR}._domainkey.{DOMAIN} TXT \"v=DKIM1; k=rsa; p=")


def _break(name: str, healthy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    env, dns = healthy["env"], healthy["dns"]
    if name == "from":
        monkeypatch.setenv("NEWSLETTER_FROM_ADDR", "AcademicHub <newsletter@localhost>")
    elif name == "secret":
        monkeypatch.delenv("NEWSLETTER_SECRET")
    elif name == "smtp":
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp+starttls://news@127.0.0.1:{free_port()}")
    elif name == "smtp-tls":  # a server that offers no STARTTLS
        from aiosmtpd.controller import Controller

        port = free_port()
        controller = Controller(object(), hostname="127.0.0.1", port=port)
        controller.start()
        healthy["cleanup"] = controller.stop
        monkeypatch.setenv("NEWSLETTER_SMTP_URL", f"smtp+starttls://news@127.0.0.1:{port}")
    elif name == "smtp-login":
        monkeypatch.setenv("NEWSLETTER_SMTP_PASSWORD", "wrong-password")
    elif name == "spf":
        dns.records[DOMAIN] = ["google-site-verification=abc"]
    elif name == "dkim":  # the record holds another key
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        dns.records[f"{SELECTOR}._domainkey.{DOMAIN}"] = [
            signing.dns_record(signing.DkimKey(SELECTOR, DOMAIN, other))]
    elif name == "dmarc":
        del dns.records[f"_dmarc.{DOMAIN}"]
    elif name == "imap":
        monkeypatch.setenv("NEWSLETTER_IMAP_URL", env["NEWSLETTER_IMAP_URL"].replace(
            "test-password", "wrong"))
    elif name == "unsubscribe":
        monkeypatch.setenv("NEWSLETTER_UNSUBSCRIBE_URL",
                           env["NEWSLETTER_UNSUBSCRIBE_URL"].replace("https:", "http:"))
    elif name == "llm":
        healthy["llm"].serve("/v1/chat/completions",
                             '{"error": {"message": "Incorrect API key provided",'
                             ' "type": "invalid_request_error", "code": "invalid_api_key"}}',
                             status=401, content_type="application/json")


EXPECTED = {
    "from": "FAIL newsletter@localhost is not at a real domain - set NEWSLETTER_FROM_ADDR",
    "secret": "FAIL NEWSLETTER_SECRET is not set",
    "smtp": "FAIL cannot reach 127.0.0.1:",
    "smtp-tls": "FAIL 127.0.0.1:",  # ... does not offer STARTTLS
    "smtp-login": "FAIL news was refused (",
    "spf": f"FAIL {DOMAIN} has no SPF record",
    "dkim": f"FAIL the key at {SELECTOR}._domainkey.{DOMAIN} is not the public half",
    "dmarc": f"FAIL no DMARC record at _dmarc.{DOMAIN}",
    "imap": "FAIL cannot read the mailbox at 127.0.0.1",
    "unsubscribe": "FAIL http://127.0.0.1:",
    "llm": "FAIL openai/test-model did not answer (AuthenticationError",
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_check_fails_on_purpose(name, healthy, monkeypatch):
    _break(name, healthy, monkeypatch)
    try:
        result = invoke("doctor", ok=False)
    finally:
        if "cleanup" in healthy:
            healthy["cleanup"]()
    assert result.exit_code == 1, result.output
    got = lines(result.output)
    failing = [n for n, v in got.items() if v.startswith("FAIL")]
    assert got[name].startswith(EXPECTED[name]), result.output
    if name == "smtp":  # TLS and login cannot be checked without a server: not repeated
        assert failing == ["smtp"] and "smtp-tls" not in got
    elif name == "from":  # and DNS has no domain to look at
        assert failing == ["from"] and got["dns"].startswith("skip")
    else:
        assert failing == [name], result.output
    assert result.output.rstrip().endswith("1 problems")
    assert "Traceback" not in result.output


def test_dns_server_that_does_not_answer_is_one_line(healthy, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_DNS_SERVER", f"127.0.0.1:{free_port()}")
    result = invoke("doctor", "--timeout", "1", ok=False)
    got = lines(result.output)
    assert result.exit_code == 1
    assert got["dns"].startswith(f"FAIL DNS lookup of {DOMAIN} failed"), result.output
