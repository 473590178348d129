"""One small HTTP GET for feeds: timeout, size cap, conditional headers. Standard library."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message

USER_AGENT = "AcademicHub-newsletter/0.1 (https://github.com/academichub/newsletter)"


class FetchError(Exception):
    """A one-line reason the URL could not be read."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Message
    body: bytes


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 20.0,
        max_bytes: int = 10_000_000) -> Response:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            body = resp.read(max_bytes + 1)
            if len(body) > max_bytes:
                raise FetchError(f"{url} is larger than {max_bytes / 1e6:.0f} MB")
            return Response(resp.status, resp.headers, body)
    except urllib.error.HTTPError as e:
        if e.code == 304:
            return Response(304, e.headers, b"")
        raise FetchError(f"HTTP {e.code} from {url}") from e
    except (TimeoutError, socket.timeout) as e:
        raise FetchError(f"timed out after {timeout:g} s: {url}") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError | socket.timeout):
            raise FetchError(f"timed out after {timeout:g} s: {url}") from e
        raise FetchError(f"cannot reach {url} ({e.reason})") from e
    except OSError as e:
        raise FetchError(f"cannot read {url} ({e})") from e
