"""Webhook notification: POST a JSON message, bounded in time, never leaking the URL."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..formatting import printable

NOTIFY_TIMEOUT = 5.0
NOTIFY_MAX_RESPONSE = 64 * 1024  # bytes of the webhook's answer read, at most


def redact_url(url: str) -> str:
    """Only the scheme and host of ``url``: a webhook URL carries its secret in the path,
    query or user part (Slack's token is in the path), so nothing more is ever shown."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return printable(f"{parts.scheme}://{host}{port}") if parts.scheme and host else "(a URL)"


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its ``user:password@`` part, and the Basic ``Authorization``
    header that carries it instead (urllib would look the whole part up as a host)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    user = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    bare = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urllib.parse.urlunsplit(bare), {"Authorization": f"Basic {token}"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report redirects instead of following them: urllib would resend the POST as a
    GET without its body, and the notification would be lost while looking sent."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def notify(url: str, message: dict[str, Any], timeout: float = NOTIFY_TIMEOUT) -> str | None:
    """POST ``message`` as JSON to ``url``; return None on success, else the problem.

    Credentials in the URL (``https://user:password@host/...``, percent-encoded) are
    sent as HTTP Basic authentication.

    Never raises for network trouble and never waits much longer than ``timeout``
    seconds in all, even for a server that trickles its answer. Only a 2xx answer is a
    success (a redirect is not followed); at most :data:`NOTIFY_MAX_RESPONSE` bytes of
    it are read. The problem never contains more of ``url`` than :func:`redact_url`.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return f"not an http(s) URL: {redact_url(url)}"
    bare, authorization = _without_credentials(url)
    request = urllib.request.Request(
        bare,
        data=json.dumps(message).encode("utf-8"),
        headers={
            "Content-Type": "application/json",
            "User-Agent": "agentmetrics",
            **authorization,
        },
        method="POST",
    )
    opener = urllib.request.build_opener(_NoRedirect)
    outcome: list[str | None] = []

    def send() -> None:
        try:
            with opener.open(request, timeout=timeout) as response:
                response.read(NOTIFY_MAX_RESPONSE)
            outcome.append(None)
        except urllib.error.HTTPError as e:
            e.close()
            if 300 <= e.code < 400:
                outcome.append(
                    f"HTTP {e.code}: a redirect, not followed (give the URL it redirects to)"
                )
            else:
                outcome.append(printable(f"HTTP {e.code} {e.reason}"))
        except urllib.error.URLError as e:
            outcome.append(printable(str(e.reason)))
        except OSError as e:  # timed out, connection reset
            outcome.append(printable(str(e) or type(e).__name__))
        except Exception as e:  # noqa: BLE001 - any failure to notify is reported, not fatal
            outcome.append(type(e).__name__)  # its message may quote the URL

    # urlopen's timeout applies per socket operation; the thread bounds the whole call.
    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    worker.join(timeout + 1)
    if not outcome:
        return f"timed out after {timeout:g}s"
    return outcome[0]
