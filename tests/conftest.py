"""Shared fixtures: every test gets its own database, outbox and config, and real loopback
servers (SMTP, HTTP, an OpenAI-compatible model) stand in for the outside world."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonshape
import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def require(ok: bool, reason: str) -> None:
    """Skip when a system tool is missing; in CI (.ci/run) fail instead, nothing may skip."""
    if ok:
        return
    if os.environ.get("NEWSLETTER_TESTS_REQUIRE_ALL"):
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def require_node_tool(name: str) -> Path:
    path = ROOT / "node_modules" / ".bin" / name
    require(shutil.which("node") is not None, "needs Debian package nodejs (node)")
    require(path.exists(), f"needs npm package {name!r}: run 'npm ci' (make test does)")
    return path


def require_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "needs Debian package chromium (apt-get install chromium)")
    require((ROOT / "node_modules" / "playwright-core").exists(),
            "needs npm package playwright-core: run 'npm ci' (make test does)")
    return str(found)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("NEWSLETTER_") and key != "NEWSLETTER_TESTS_REQUIRE_ALL":
            monkeypatch.delenv(key)
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NEWSLETTER_DB", str(tmp_path / "newsletter.db"))
    monkeypatch.setenv("NEWSLETTER_OUTBOX", str(tmp_path / "outbox"))
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(tmp_path / "newsletter.toml"))
    monkeypatch.setenv("NEWSLETTER_SOURCES", "sample")
    monkeypatch.setenv("NEWSLETTER_NOW", "2026-11-22T09:00:00+00:00")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    return tmp_path


def invoke(*args: str, input: str | None = None, ok: bool = True) -> Result:
    """Run the CLI in-process. Every --json output that is printed is checked against its
    documented shape (docs/json/), whatever the test itself looks at."""
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=not ok)
    if ok:
        assert result.exit_code == 0, result.output
    if "--json" in args and result.stdout:
        jsonshape.check(cli, list(args), result.stdout)
    return result


# --- SMTP ---------------------------------------------------------------------------------


@dataclass
class SMTPServer:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[Any] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # rcpt -> "550 reason"

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer("127.0.0.1", 0)

    class Handler:
        async def handle_RCPT(self, srv: Any, session: Any, envelope: Any, address: str,
                              options: Any) -> str:
            if address in server.reject:
                return server.reject[address]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, srv: Any, session: Any, envelope: Any) -> str:
            server.envelopes.append(envelope)
            server.messages.append(
                message_from_bytes(envelope.content, policy=policy.default))  # type: ignore
            return "250 Message accepted"

    controller, server.port = start_smtp(Handler())
    try:
        yield server
    finally:
        controller.stop()


def start_smtp(handler: Any) -> tuple[Any, int]:
    """An aiosmtpd server with HANDLER on a free loopback port: (controller, port)."""
    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    return controller, port


# --- HTTP ---------------------------------------------------------------------------------

Route = Callable[[BaseHTTPRequestHandler, bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class HTTPServer:
    base: str
    routes: dict[str, Route | list[Route]]
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)

    def serve(self, path: str, body: bytes | str, status: int = 200,
              content_type: str = "application/xml; charset=utf-8",
              headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body

        def route(h: BaseHTTPRequestHandler, _: bytes) -> tuple[int, dict[str, str], bytes]:
            return status, {"Content-Type": content_type, **(headers or {})}, data

        self.routes[path] = route


class QuietHTTPServer(ThreadingHTTPServer):
    """A client hanging up before the answer is written (the size-cap and deadline tests do
    it on purpose) is not worth a traceback in the test run's output; other errors are."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):  # broken pipe, reset
            return
        super().handle_error(request, client_address)


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    state = HTTPServer("", {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            state.requests.append((self.command, self.path, dict(self.headers), body))
            route = state.routes.get(path)
            if isinstance(route, list):  # a queue of answers, the last one repeats
                route = route.pop(0) if len(route) > 1 else route[0]
            if route is None:
                status, headers, data = 404, {"Content-Type": "text/plain"}, b"not found"
            else:
                status, headers, data = route(self, body)
            if status < 0:  # a route may ask us to hang up without answering
                self.close_connection = True
                return
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    httpd = QuietHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def chat_completion(content: str, prompt_tokens: int = 120, completion_tokens: int = 80
                    ) -> bytes:
    """A response body in the exact shape OpenAI's /v1/chat/completions returns."""
    return json.dumps({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1763800000,
        "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }).encode()


@pytest.fixture
def llm_server(http_server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """An OpenAI-compatible server on loopback; the real litellm request path talks to it."""
    monkeypatch.setenv("NEWSLETTER_LLM_MODEL", "openai/test-model")
    monkeypatch.setenv("NEWSLETTER_LLM_API_BASE", http_server.base + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    return http_server


# What the loopback model answers: a brief built from the papers each request carries, with
# real quotes from their abstracts, or with some quotes fabricated or taken from the wrong
# paper; the grounding check must keep the first and drop the others.
HEADLINE = {"en": "Smaller models and world models: what transfers, and what has to be learned",
            "zh": "小模型与世界模型：哪些可以迁移，哪些必须重新学习"}
THEMES = {"en": [("Compression", "Pruning and distillation both reuse a parent model."),
                 ("World models", "Generative exploration helps embodied planning."),
                 ("Training recipes", "Open recipes make strong baselines cheaper.")],
          "zh": [("模型压缩", "剪枝与蒸馏都复用了父模型。"),
                 ("世界模型", "生成式探索有助于具身规划。"),
                 ("训练方案", "开放的方案让强基线更便宜。")]}
CONNECTION = {"en": "Efficiency work and embodied AI meet in cheap imagination.",
              "zh": "效率研究与具身智能在低成本的想象中相遇。"}
NOTE = {"en": "Paper {n} in one sentence, by the model.", "zh": "模型对第{n}篇论文的一句话点评。"}
FABRICATED = "diffusion models move beyond image synthesis into every field of science"


def sent_papers(body: bytes) -> list[dict[str, Any]]:
    """The papers a brief request carries (the JSON between <papers> tags)."""
    user = json.loads(body)["messages"][1]["content"]
    return json.loads(user.split("<papers>\n")[1].split("\n</papers>")[0])  # type: ignore


def brief_answer(papers: list[dict[str, Any]], mode: str = "faithful", lang: str = "en"
                 ) -> dict[str, Any]:
    """A brief in the schema the prompt asks for. ``mode``: faithful (every quote real),
    fabricated (theme 2's quote invented), wrong_paper (theme 2's quote is real but from
    paper 1, not the paper it cites), mostly_fabricated (4 of 5 claims' quotes invented)."""
    def quote(k: int, start: int = 0) -> str:
        return " ".join(papers[k - 1]["abstract"].split()[start:start + 12])

    def claim(text: str, cites: list[int], fake: bool = False, title: str | None = None,
              from_paper: int | None = None) -> dict[str, Any]:
        evidence = [{"paper": k, "quote": FABRICATED if fake else quote(from_paper or k,
                                                                        3 * i)}
                    for i, k in enumerate(cites)]
        return {**({"title": title} if title is not None else {}), "text": text,
                "cites": cites, "evidence": evidence}

    n = len(papers)
    two, last = min(2, n), n
    most = mode == "mostly_fabricated"
    (t1, x1), (t2, x2), (t3, x3) = THEMES[lang]
    return {
        "headline": claim(HEADLINE[lang], [1], fake=most),
        "themes": [
            claim(x1, sorted({1, two}), title=t1),
            claim(x2, [last], title=t2, fake=mode in ("fabricated", "mostly_fabricated"),
                  from_paper=1 if mode == "wrong_paper" else None),
            claim(x3, [two], title=t3, fake=most),
        ],
        "connections": [claim(CONNECTION[lang], sorted({1, last}), fake=most)],
        "papers": [{"paper": k, "note": NOTE[lang].format(n=k)} for k in range(1, n + 1)],
    }


def model_answers(mode: str = "faithful", lang: str | None = None,
                  edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                  prompt_tokens: int = 120, completion_tokens: int = 80) -> Route:
    """A /chat/completions route answering each request with :func:`brief_answer` for its
    own papers (in the language the system prompt asks for, unless ``lang``)."""
    def route(h: BaseHTTPRequestHandler, body: bytes) -> tuple[int, dict[str, str], bytes]:
        system = json.loads(body)["messages"][0]["content"]
        language = lang or ("zh" if "Simplified Chinese" in system else "en")
        answer = brief_answer(sent_papers(body), mode, language)
        if edit:
            answer = edit(answer)
        return 200, {"Content-Type": "application/json"}, chat_completion(
            json.dumps(answer, ensure_ascii=False), prompt_tokens, completion_tokens)

    return route


def llm_calls(server: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(body) for method, path, _, body in server.requests
            if path.endswith("/chat/completions")]


def read_outbox(folder: Path) -> dict[str, EmailMessage]:
    out = {}
    for eml in sorted(folder.glob("*.eml")):
        # the files hold CRLF line ends, as sent; read their text with plain newlines
        raw = eml.read_bytes().replace(b"\r\n", b"\n")
        msg = message_from_bytes(raw, policy=policy.default)
        out[str(msg["To"].addresses[0].addr_spec)] = msg  # type: ignore[union-attr]
    return out


def parts(msg: EmailMessage) -> tuple[str, str]:
    """(text, HTML) of a message; the HTML with the character references and line breaks
    of its 7bit encoding (headers.html_7bit) undone, so it reads as rendered."""
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), as_rendered(html.get_content())


def as_rendered(html: str) -> str:
    """A 7bit HTML part as the page it encodes: references to non-ASCII characters back
    to the characters, and the breaks made at spaces back to spaces (white space is
    white space to HTML; the skeleton's own line ends become spaces too)."""
    html = re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))) if int(m.group(1)) > 127
                  else m.group(0), html)
    return html.replace("\r\n", "\n").rstrip("\n").replace("\n", " ") + "\n"


# --- IMAP (Debian's dovecot, started for the test) -------------------------------------


@dataclass
class IMAPServer:
    host: str
    port: int
    user: str
    password: str
    root: Path

    @property
    def url(self) -> str:
        return f"imap://{self.user}:{self.password}@{self.host}:{self.port}/INBOX"

    def deliver(self, raw: bytes) -> None:
        import imaplib

        conn = imaplib.IMAP4(self.host, self.port)
        conn.login(self.user, self.password)
        conn.append("INBOX", None, None, raw)
        conn.logout()

    def unseen(self) -> int:
        import imaplib

        conn = imaplib.IMAP4(self.host, self.port)
        conn.login(self.user, self.password)
        conn.select("INBOX")
        _, data = conn.search(None, "UNSEEN")
        conn.logout()
        return len((data[0] or b"").split())


@pytest.fixture
def imap_server() -> Iterator[IMAPServer]:
    import grp
    import pwd
    import tempfile

    dovecot = shutil.which("dovecot") or ("/usr/sbin/dovecot"
                                          if Path("/usr/sbin/dovecot").exists() else None)
    require(dovecot is not None, "needs Debian package dovecot-imapd (a real IMAP server)")
    assert dovecot is not None
    # not under pytest's tmp (mode 0700): dovecot's own user must be able to enter it
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    (root / "run").mkdir()
    (root / "mail").mkdir()
    os.chmod(root, 0o755)
    os.chmod(root / "run", 0o755)
    os.chmod(root / "mail", 0o777)
    me = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    if os.getuid() == 0:  # dovecot will not run its login process as root
        internal, login, mail_user, mail_group = "dovecot", "dovenull", "dovecot", "dovecot"
    else:
        internal = login = mail_user = me
        mail_group = group
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "dovecot.conf"
    config.write_text(f"""protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/run
log_path = {root}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_internal_group = {mail_group}
default_login_user = {login}
mail_location = maildir:{root}/mail/%u
first_valid_uid = 0
passdb {{
  driver = static
  args = password=test-password
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
""")
    # dovecot forks into the background: give it no pipes to hold open
    with open(root / "start.log", "wb") as log:
        subprocess.run([dovecot, "-c", str(config)], check=True, stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, timeout=30)
    server = IMAPServer("127.0.0.1", port, "newsletter", "test-password", root)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        yield server
    finally:
        subprocess.run([dovecot, "-c", str(config), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


# --- newsletter serve: the real Uvicorn server, in its own process ------------------------


@dataclass
class Endpoint:
    base: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_kb(self) -> int:
        """The server process's peak resident memory so far (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM")


@pytest.fixture
def serve_endpoint(isolated: Path) -> Iterator[Callable[..., Endpoint]]:
    """Start ``newsletter serve --port 0`` (Uvicorn) on 127.0.0.1 with the test's
    environment; returns a factory taking extra command-line arguments."""
    started: list[Endpoint] = []

    def start(*args: str) -> Endpoint:
        log_path = isolated / f"serve-{len(started)}.log"
        log = open(log_path, "wb")
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "newsletter"), "serve", "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(os.environ))
        deadline = time.monotonic() + 20
        while True:
            found = re.search(r"Serving on (http://\S+)", log_path.read_text(errors="replace"))
            if found:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("newsletter serve did not start:\n"
                                     + log_path.read_text(errors="replace"))
            time.sleep(0.05)
        endpoint = Endpoint(found.group(1), proc, log_path)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.proc.terminate()
        try:
            endpoint.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            endpoint.proc.kill()
