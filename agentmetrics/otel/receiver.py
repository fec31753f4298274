"""``agentmetrics serve``: an OTLP/HTTP trace receiver that writes into one database.

``POST /v1/traces`` takes an ``ExportTraceServiceRequest`` as ``application/x-protobuf``
or ``application/json``, optionally ``Content-Encoding: gzip``, and stores it through
:func:`agentmetrics.otel.ingest.ingest_spans`. Answers follow the OTLP/HTTP
specification, in the request's encoding:

- 200 with an ``ExportTraceServiceResponse``: empty, or with ``partial_success``
  (``rejected_spans``, ``error_message``) when some spans were rejected;
- 400 with a ``google.rpc.Status`` (code 3, INVALID_ARGUMENT, and the reason) for a
  body that is not a valid request (nothing of it is stored);
- 413 for a body over ``max_body`` bytes (before or after decompression), 415 for
  another content type or encoding, 411 without a ``Content-Length``;
- 503 with ``Retry-After`` when the database cannot take the write now (another
  writer held the lock over ``busy_timeout_ms``, 2 s by default, well before an OTLP
  client gives up on the request; it retries later), and when the server is full:
  over ``max_connections`` open connections, or a body that would take the bytes
  buffered by all requests together over ``max_buffered`` (twice ``max_body`` by
  default);
- 404 for any other path, 405 for another method on ``/v1/traces``.

Each connection has a thread; their writes are serialised in the process, each in short
transactions, so trackers writing to the same file wait at most a fraction of a second.
Ctrl-C or SIGTERM stops the server within :data:`STOP_SECONDS`: connections idle or
still sending are closed at once, a request being stored stops between two
transactions (answered 503 with ``Retry-After``: re-sending spans changes nothing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import os
import signal
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from sqlite_utils import Database

from ..errors import AgentMetricsError, InvalidValue, MissingDependency, StorageError
from ..store.db import ensure_database
from .ingest import batch_sizer, decode_request, ingest_spans

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4318
DEFAULT_MAX_BODY = 32 * 1024 * 1024  # bytes, compressed or not
DEFAULT_MAX_CONNECTIONS = 256
TRACES_PATH = "/v1/traces"
RETRY_AFTER = 5  # seconds a client is asked to wait when the database or server is busy
STOP_SECONDS = 1.5  # how long stopping waits for the requests being stored
# How long a closing connection reads (and drops) what its client still sends, so the
# client reads our answer rather than a reset (a lingering close).
LINGER_SECONDS = 1.0
# How long a request waits for another writer's lock before the client is told to
# retry: well inside the 10 s OTLP exporters wait for an answer.
BUSY_TIMEOUT_MS = 2_000
# The google.rpc.Code a Status body carries for each HTTP status we answer with.
RPC_CODES = {400: 3, 404: 5, 405: 12, 411: 3, 413: 8, 415: 3, 500: 13, 503: 14}

log = logging.getLogger("agentmetrics")

_JSON, _PROTOBUF = "application/json", "application/x-protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _protobuf(*fields: tuple[int, int | str | bytes | None]) -> bytes:
    """A protobuf message of varint (int) and length-delimited (str, bytes) fields."""
    out = bytearray()
    for number, value in fields:
        if value is None or value == 0 or value in ("", b""):
            continue  # proto3 leaves default values out
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            raw = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(raw)) + raw
    return bytes(out)


def export_response(rejected: int, error_message: str, media: str) -> bytes:
    """An ``ExportTraceServiceResponse``, with ``partial_success`` if spans were rejected."""
    if media == _PROTOBUF:
        partial = _protobuf((1, rejected), (2, error_message)) if rejected else None
        return _protobuf((1, partial)) if partial is not None else b""
    if not rejected:
        return b"{}"
    # int64 fields are strings in the protobuf JSON mapping.
    partial = {"rejectedSpans": str(rejected), "errorMessage": error_message}
    return json.dumps({"partialSuccess": partial}).encode()


def status_body(code: int, message: str, media: str) -> bytes:
    """A ``google.rpc.Status`` message."""
    if media == _PROTOBUF:
        return _protobuf((1, code), (2, message))
    return json.dumps({"code": code, "message": message}).encode()


def _full_response(message: str) -> bytes:
    """A whole HTTP 503 answer, written before a connection over the cap is read."""
    body = status_body(RPC_CODES[503], message, _JSON)
    head = (
        f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {_JSON}\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Budget:
    """The bytes all requests together may hold buffered (bodies, decompressed bodies)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Callable[[int], bool]]:
        """A ``take(n)`` that reserves ``n`` more bytes if they fit (False if not); all
        it took is given back on leaving the block."""
        taken = 0

        def take(size: int) -> bool:
            nonlocal taken
            with self._lock:
                if self.held + size > self.limit:
                    return False
                self.held += size
            taken += size
            return True

        try:
            yield take
        finally:
            with self._lock:
                self.held -= taken


class _Stopped(Exception):
    """The server began stopping while a request was being stored."""


class _Full(Exception):
    """A request would take the bytes buffered over the server's limit."""


@dataclasses.dataclass
class Totals:
    """What the server took in since it started."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    failed_requests: int = 0


class Receiver(http.server.HTTPServer):
    """The OTLP/HTTP server; :meth:`serve_forever` runs it, :meth:`server_close` stops it.

    :param db: the database spans are written to (a path, created if needed, or a
      ``sqlite_utils.Database``)
    :param max_body: the largest body accepted, compressed and decompressed, in bytes
    :param busy_timeout_ms: how long a write waits for another writer before the
      request is answered with 503 and ``Retry-After``
    :param max_connections: connections served at once; more are answered 503
    :param max_buffered: bytes of bodies all requests together may hold (default twice
      ``max_body``); a request that would go over it is answered 503
    """

    request_queue_size = 64

    def __init__(
        self,
        db: str | os.PathLike[str] | Database,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        max_body: int = DEFAULT_MAX_BODY,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_buffered: int | None = None,
    ) -> None:
        max_buffered = 2 * max_body if max_buffered is None else max_buffered
        if max_buffered < max_body:
            raise InvalidValue(
                f"max_buffered ({max_buffered} bytes) must be at least max_body ({max_body})"
            )
        if max_connections < 1:
            raise InvalidValue(f"max_connections must be at least 1, got {max_connections}")
        self.db = ensure_database(db, busy_timeout_ms=busy_timeout_ms)
        self._owned = not isinstance(db, Database)
        self.max_body = max_body
        self.max_connections = max_connections
        self.busy_timeout_ms = busy_timeout_ms
        self.budget = _Budget(max_buffered)
        self.totals = Totals()
        self._write_lock = threading.Lock()
        self._batch_size = batch_sizer()  # used with the write lock held
        self._count_lock = threading.Lock()
        # Open connections: served (True) or being refused (False), and their threads.
        self._connections: dict[socket.socket, tuple[bool, threading.Thread]] = {}
        self._stopping = threading.Event()
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            if self._owned:
                self.db.close()
            raise AgentMetricsError(f"Cannot listen on {host}:{port}: {e.strerror or e}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def ingest(self, body: bytes | bytearray, media: str) -> tuple[int, str]:
        """Store one request's spans; return how many were rejected and why.

        :raises _Stopped: the server began stopping before all of them were stored
        """
        spans = decode_request(body, media)  # outside the lock: only writes take turns
        with self._write_lock:
            if self._stopping.is_set():
                raise _Stopped
            result = ingest_spans(
                self.db,
                self._until_stopped(spans),
                busy_timeout_ms=self.busy_timeout_ms,
                batch_size=self._batch_size,
            )
            self.totals.accepted += result.accepted
            self.totals.rejected += result.rejected
        if self._stopping.is_set() and result.accepted + result.rejected < len(spans):
            raise _Stopped
        return result.rejected, result.error_message

    def _until_stopped(self, spans: Iterable[Any]) -> Iterator[Any]:
        for span in spans:
            if self._stopping.is_set():
                return
            yield span

    def count(self, field: str) -> None:
        with self._count_lock:
            setattr(self.totals, field, getattr(self.totals, field) + 1)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread of its own, or answer 503 when full."""
        with self._count_lock:
            served = sum(1 for kept, _ in self._connections.values() if kept)
            serve = served < self.max_connections and not self._stopping.is_set()
            if not serve and len(self._connections) - served >= self.max_connections:
                request.close()  # too many being refused too: no answer at all
                return
            thread = threading.Thread(
                target=self._connection, args=(request, client_address, serve), daemon=True
            )
            self._connections[request] = (serve, thread)
        thread.start()

    def _connection(self, request: socket.socket, client_address: Any, serve: bool) -> None:
        try:
            if serve:
                self.finish_request(request, client_address)
            else:
                self.count("requests")
                self.count("failed_requests")
                request.sendall(_full_response("Too many connections: retry later"))
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            with self._count_lock:
                del self._connections[request]

    def shutdown_request(self, request: Any) -> None:
        """Close a connection after reading what its client still sends, up to
        :data:`LINGER_SECONDS`: closing with unread data would reset the connection,
        and the client could lose our answer."""
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                request.settimeout(left)
                if not request.recv(65536):
                    break
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is its own problem: no traceback here.
        log.debug("agentmetrics serve: error with %s", client_address, exc_info=True)

    def server_close(self) -> None:
        """Stop: close idle and sending connections, wait up to :data:`STOP_SECONDS` for
        the requests being stored (which stop between two transactions)."""
        self._stopping.set()
        super().server_close()  # no new connections
        with self._count_lock:
            connections = dict(self._connections)
        for connection in connections:
            # Wakes a thread waiting for its client's next bytes: it reads the end.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + STOP_SECONDS
        for _, thread in connections.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = sum(thread.is_alive() for _, thread in connections.values())
        if busy:
            # Their threads end with the process; a transaction cut short is rolled back.
            log.warning("agentmetrics serve: %d requests still running at exit", busy)
        elif self._owned:
            self.db.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client, not per batch
    timeout = 60  # seconds a silent connection is kept: a stalled client frees its thread

    def do_POST(self) -> None:
        if self.path.split("?")[0] != TRACES_PATH:
            self._other()
            return
        self.server.count("requests")
        media = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if media not in (_JSON, _PROTOBUF):
            self._discard()
            self._fail(
                415,
                f"Unsupported content type {media or '(none)'!r}: use {_PROTOBUF} or {_JSON}",
                _JSON,
            )
            return
        size = self._length(media)
        if size is None:
            return
        with self.server.budget.hold() as take:
            if not take(size):
                self._full(media)
                return
            body = self._body(size, media, take)
            if body is not None:
                self._store(body, media)

    def _store(self, body: bytes | bytearray, media: str) -> None:
        try:
            rejected, message = self.server.ingest(body, media)
        except MissingDependency as e:
            self._fail(415, str(e), _JSON)
            return
        except StorageError as e:
            self._fail(
                503,
                f"The database cannot take the spans now: {e}",
                media,
                {"Retry-After": str(RETRY_AFTER)},
            )
            return
        except _Stopped:
            message = "The server is stopping: send the spans again later"
            self._fail(503, message, media, {"Retry-After": str(RETRY_AFTER)}, close=True)
            return
        except (AgentMetricsError, ValueError) as e:
            self._fail(400, str(e), media)
            return
        except Exception as e:  # never let a request take the server down
            log.exception("agentmetrics serve: unexpected error")
            self._fail(500, f"Internal error: {type(e).__name__}", media)
            return
        self._reply(200, export_response(rejected, message, media), media)

    def _length(self, media: str) -> int | None:
        """The body's declared size; None once an error was answered."""
        limit = self.server.max_body
        length = self.headers.get("Content-Length")
        if length is None:
            self._fail(411, "A Content-Length is required", media, close=True)
            return None
        try:
            size = int(length)
            if size < 0:
                raise ValueError
        except ValueError:
            self._fail(400, f"Invalid Content-Length {length!r}", media, close=True)
            return None
        if size > limit:
            self._fail(
                413, f"The body is {size} bytes, over the limit of {limit}", media, close=True
            )
            return None
        return size

    def _full(self, media: str) -> None:
        budget = self.server.budget
        message = (
            f"The server holds {budget.held} bytes of requests, near its limit of"
            f" {budget.limit}: retry later"
        )
        self._fail(503, message, media, {"Retry-After": str(RETRY_AFTER)}, close=True)

    def _body(self, size: int, media: str, take: Callable[[int], bool]) -> bytes | bytearray | None:
        """The request's body, decompressed; None once an error was answered (or the
        client left). ``take`` reserves the decompressed bytes."""
        raw = self.rfile.read(size)
        if len(raw) < size:  # the client hung up, or the server is stopping
            self.close_connection = True
            return None
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return raw
        if encoding != "gzip":
            self._fail(415, f"Unsupported content encoding {encoding!r}: use gzip", media)
            return None
        limit = self.server.max_body
        try:
            body = _gunzip(raw, limit, take)
        except OverflowError:
            self._fail(413, f"The decompressed body is over the limit of {limit} bytes", media)
            return None
        except _Full:
            self._full(media)
            return None
        except (OSError, EOFError, zlib.error) as e:
            self._fail(400, f"The body is not valid gzip: {e}", media)
            return None
        return body

    def _discard(self) -> None:
        """Read and drop the body (as it comes: nothing of it is kept)."""
        length = self.headers.get("Content-Length")
        if not (length and length.isdigit() and int(length) <= self.server.max_body):
            self.close_connection = True
            return
        left = int(length)
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                self.close_connection = True
                return
            left -= len(chunk)

    def _other(self) -> None:
        self._discard()
        if self.path.split("?")[0] != TRACES_PATH:
            self._reply(404, status_body(RPC_CODES[404], f"No such path {self.path}", _JSON))
        elif self.command != "POST":
            message = f"{self.command} is not allowed: use POST"
            self._reply(405, status_body(RPC_CODES[405], message, _JSON), _JSON, {"Allow": "POST"})

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _other

    def _fail(
        self,
        status: int,
        message: str,
        media: str,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.server.count("failed_requests")
        if close:
            self.close_connection = True
        self._reply(status, status_body(RPC_CODES[status], message, media), media, headers)

    def _reply(
        self, status: int, body: bytes, media: str = _JSON, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("agentmetrics serve: %s %s", self.address_string(), format % args)


def _gunzip(raw: bytes, limit: int, take: Callable[[int], bool]) -> bytearray:
    """Decompress gzip data, refusing (OverflowError) more than ``limit`` bytes out and
    (:class:`_Full`) output ``take`` cannot reserve."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    data = raw
    while not decompressor.eof:
        chunk = decompressor.decompress(data, min(limit + 1 - len(out), 1 << 20))
        data = decompressor.unconsumed_tail
        if not take(len(chunk)):
            raise _Full
        out += chunk
        if len(out) > limit:
            raise OverflowError
        if not chunk and not data:
            raise EOFError("the gzip stream is truncated")
    return out


@contextlib.contextmanager
def _stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does (only the main thread can set a handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(
    db: str | os.PathLike[str] | Database,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_buffered: int | None = None,
    ready: Callable[[Receiver], None] | None = None,
) -> Totals:
    """Receive spans into ``db`` until Ctrl-C or SIGTERM; return what was received.

    The limits are :class:`Receiver`'s. ``ready`` is called with the listening server
    (its :attr:`Receiver.url` holds the port when ``port`` is 0).
    """
    server = Receiver(
        db,
        host,
        port,
        max_body=max_body,
        max_connections=max_connections,
        max_buffered=max_buffered,
    )
    try:
        with _stopping_on_sigterm():
            if ready is not None:
                ready(server)
            with contextlib.suppress(KeyboardInterrupt):
                server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return server.totals


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Receiver", "serve"]
