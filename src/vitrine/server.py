"""Running the web app with uvicorn: in the foreground (``vitrine serve``, ``vitrine demo``) or
in a background thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vitrine.cli_run import stdout_to_null, stop_signals
from vitrine.errors import VitrineError

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI


def _unbracketed(host: str) -> str:
    """``[::1]`` as the README writes IPv6 hosts (and browsers do): the address inside."""
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _ipv6(host: str) -> bool:
    """Whether ``host`` is an IPv6 address (written in brackets before a port)."""
    import ipaddress

    try:
        return ipaddress.ip_address(host.split("%")[0]).version == 6
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` (port 0 picks a free one; a host name on its first address
    that can be bound, IPv4 before IPv6); a port in use is one clear error."""
    if not host.strip():  # (`--host "$HOST"` unset listened on every address)
        raise VitrineError("--host is empty; name the address to listen on (127.0.0.1: this "
                           "machine only; 0.0.0.0: every network).")
    host = _unbracketed(host.strip())
    if re.fullmatch(r"\[.*\]:\d*|[^:]*:\d*", host):  # (an IPv6 address has two colons)
        raise VitrineError(f"--host {host} holds a port; pass the address alone, and the port "
                           "with --port.")
    shown = f"[{host}]:{port}" if _ipv6(host) else f"{host}:{port}"
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise VitrineError(f"cannot listen on {shown} ({getattr(exc, 'strerror', exc)}); "
                           "pass another --host.") from None
    # IPv4 first (localhost listened on 127.0.0.1, where health checks look, before host
    # names were resolved; some systems list ::1 first), then each address in turn
    found.sort(key=lambda info: info[0] != socket.AF_INET)
    sock: socket.socket | None = None
    error: OSError | None = None  # said when no address can be bound: a port in use first
    for family, *_, where in found:
        try:
            # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only
            # when their protocol says TCP (with proto 0, Nagle + delayed ACK add ~40 ms to
            # every response)
            candidate = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        except OSError as exc:  # (no IPv6 in this kernel, say)
            error = error or exc
            continue
        candidate.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            candidate.bind(where)
        except OSError as exc:
            candidate.close()
            if exc.errno == errno.EADDRINUSE:  # a server is there: not another address
                error = exc
                break
            error = error or exc
            continue
        sock = candidate
        break
    if sock is None:
        reason = getattr(error, "strerror", None) or error or "no address"
        raise VitrineError(f"cannot listen on {shown} ({reason}); pass another --port "
                           "or --host.")
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    """The address to open: this machine's own for a socket bound to every address
    (`--host 0.0.0.0` printed "http://0.0.0.0:8000", which some browsers do not open; the
    exposure note says that other machines can reach it)."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def exposure_note(host: str, api_key: str | None, bound: str | None = None) -> str | None:
    """A warning when ``host`` is not a loopback address: other machines can then reach the
    pages and the API (and, with an API key, try it)."""
    import ipaddress

    host = _unbracketed(host.strip())
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:  # the short IPv4 forms the system reads too (127.1)
            ip = ipaddress.ip_address(socket.inet_aton(host))
        except OSError:  # a host name: the address it was bound to (``bound``) tells
            ip = ipaddress.ip_address(bound.split("%")[0]) if bound else None
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    if host.lower() == "localhost" or ip is not None and (ip.is_loopback or (
            mapped is not None and mapped.is_loopback)):
        return None
    writes = ("writes need the VITRINE_API_KEY bearer key" if api_key else
              "writes stay refused while VITRINE_API_KEY is unset")
    return (f"note: listening on {host}, so other machines can browse and search this store; "
            f"{writes}.")


def ready_message(address: str, root_path: str = "") -> str:
    """The line a started server prints. With ``root_path`` (VITRINE_ROOT_PATH, --root-path)
    its pages work only through the proxy that forwards that prefix: their links, styles and
    /docs' API description all start with it (the address printed alone led to pages
    without their styles and a /docs that failed: helper-221)."""
    if root_path:
        return (f"Vitrine is serving at {address} for the reverse proxy that forwards "
                f"{root_path}/ to it: open the pages at the proxy's {root_path}/ (REST API "
                f"docs: {root_path}/docs, drawn by Swagger UI from its CDN; offline: "
                f"{root_path}/openapi.json); press Ctrl+C to stop.")
    return (f"Vitrine is serving at {address} (REST API docs: {address}/docs, drawn by "
            f"Swagger UI from its CDN; offline: {address}/openapi.json); press Ctrl+C to stop.")


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    import uvicorn

    from vitrine.web.guards import Stopping

    # (a browser's request cut off gets the 503 as a page: create_app's)
    stopping = Stopping(_Timed(app), page=getattr(app.state, "stopping_page", None),
                        cors_origins=getattr(app.state, "cors_origins", None))
    config = uvicorn.Config(stopping, log_level=log_level,
                            access_log=log_level == "info", timeout_graceful_shutdown=5)
    for handler in logging.getLogger("uvicorn.access").handlers:  # (set up by the Config)
        handler.setFormatter(_TimedLine(handler.formatter or logging.Formatter()))
        handler.handleError = _access_log_failed(handler)  # type: ignore[method-assign]
    return uvicorn.Server(config)


_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "vitrine_request_started", default=None)
"""When the request being answered came in (``time.perf_counter``): uvicorn runs each
request in a task of its own, in a new context, and logs its access line in it."""


class _Timed:
    """Notes when each HTTP request came in, for its access-log line (:class:`_TimedLine`).
    Not reset after: the stopping guard around it logs its own 503 with it too."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            _STARTED.set(time.perf_counter())
        await self.app(scope, receive, send)


class _TimedLine(logging.Formatter):
    """uvicorn's access-log line (``formatter``'s) and the time the request took until its
    response began, ``in 12.3 ms`` (uvicorn logs it as the response starts: the app's work,
    not a large body's sending to a slow client); uvicorn wrote no time, so a slow request
    could not be seen. A line logged outside a request is left as it was."""

    def __init__(self, formatter: logging.Formatter):
        super().__init__()
        self.formatter = formatter

    def format(self, record: logging.LogRecord) -> str:
        started = _STARTED.get()
        line = self.formatter.format(record)
        if started is None:
            return line
        return f"{line} in {(time.perf_counter() - started) * 1000:.1f} ms"


def _access_log_failed(handler: logging.Handler) -> Callable[[logging.LogRecord], None]:
    """What the access log (on stdout) does when a line cannot be written: with its reader
    gone (`vitrine serve | head -1`, a script that read the address) or its disk full, stdout
    goes to /dev/null and the server serves on; each request printed a 110-line traceback
    (helper-158). Other failures are reported as logging reports them."""
    def handle_error(record: logging.LogRecord) -> None:
        failed = sys.exc_info()[1]
        if not isinstance(failed, OSError):
            logging.Handler.handleError(handler, record)
            return
        if failed.errno != errno.EPIPE:  # (a reader gone left on purpose; a full disk is told)
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"note: the access log cannot be written "
                                 f"({failed.strerror or failed}); it is discarded from now "
                                 "on.\n")
        stdout_to_null()
    return handle_error


def serve(app: FastAPI, sock: socket.socket, *,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Serve ``app`` on a socket from :func:`bind` until interrupted (Ctrl+C stops it
    cleanly); ``on_ready`` gets the address. Bind first, so a busy port fails before the
    model loads."""
    import asyncio

    server = _server(app, "info")
    if on_ready is not None:
        on_ready(address(sock))
    # uvicorn stops gracefully on SIGINT and SIGTERM; the terminal closing (SIGHUP) stops it
    # the same way (the command's own handler raised into uvicorn's loop: a traceback), and
    # is raised again once it has stopped, so that the process still ends by it
    hang_up = getattr(signal, "SIGHUP", None)
    if hang_up not in stop_signals():  # none here, or ignored (`nohup vitrine serve`)
        hang_up = None
    hung_up: list[int] = []

    def stop(signum: int, frame) -> None:
        hung_up.append(signum)
        server.should_exit = True  # what uvicorn's own handler does on SIGTERM

    def forced(record: logging.LogRecord) -> bool:
        """A second Ctrl+C stops the server at once, cancelling its tasks: not a failure to
        print a traceback for (Starlette's lifespan logs one). Nor is a response cut off as
        the server stops (a photo still being sent once the graceful time is over, or at
        that second Ctrl+C): uvicorn logged "Exception in ASGI application" with the
        CancelledError's 80-line traceback; its own line says it cancels the request."""
        if not (server.should_exit or server.force_exit):
            return True
        failed = record.exc_info[1] if record.exc_info else None
        return not (isinstance(failed, asyncio.CancelledError) or (
            server.force_exit and "CancelledError" in record.getMessage()))

    previous = signal.signal(hang_up, stop) if hang_up else None
    log = logging.getLogger("uvicorn.error")
    log.addFilter(forced)
    try:
        server.run(sockets=[sock])
    finally:
        log.removeFilter(forced)
        if hang_up:
            signal.signal(hang_up, previous if previous is not None else signal.SIG_DFL)
        sock.close()
    if hung_up:
        signal.raise_signal(hang_up)


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
            startup_timeout: float = 30.0, access_log: bool = False) -> Iterator[str]:
    """Serve ``app`` in a background thread; yields its base URL and stops it afterwards.
    With ``access_log``, logs as `vitrine serve` does (a line a request on stdout)."""
    sock = bind(host, port)
    server = _server(app, "info" if access_log else "warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="vitrine-server")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the web server did not start")
        time.sleep(0.02)
    try:
        yield address(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
