"""A request answered before its body was read (a write refused from its headers, an upload
over the limit counted as it arrives, a POST to an address that takes none) closes its
connection: uvicorn read and dropped the rest of such a body for as long as the client sent
it (a 20 GB upload declared by a stranger without a key was received whole)."""

from __future__ import annotations

import socket

KEY = "a-test-key-long-enough-0123"
PIECE = 64 * 1024
MOST = 256 * 1024 * 1024
"""What a client sends after the answer before the test gives up: the server drained it."""


def _app(settings, store, embedder, **changes):
    from vitrine.api import create_app

    return create_app(settings.model_copy(update=changes), store, embedder=embedder)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _answered_then_closed(port: int, head: bytes, chunked: bool) -> tuple[bytes, int]:
    """Send ``head``, then the body in pieces until the server has answered and the
    connection fails (or MOST bytes went after the answer); the answer's status line and how
    many bytes were sent after it."""
    piece = _chunk(b"z" * PIECE) if chunked else b"z" * PIECE
    answer, after = b"", 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            while after < MOST:
                if not answer:
                    sock.setblocking(False)
                    try:
                        answer = sock.recv(200)
                    except BlockingIOError:
                        pass
                    finally:
                        sock.settimeout(30)
                sock.sendall(piece)
                if answer:
                    after += len(piece)
        except OSError:  # the server closed the connection
            pass
        if not answer:
            answer = sock.recv(200)
    return answer.split(b"\r\n", 1)[0], after


def test_a_request_refused_before_its_body_is_read_closes_its_connection(
        settings, small_store, embedder):
    from vitrine.server import running

    app = _app(settings, small_store, embedder, api_key=KEY, max_upload_bytes=100_000)
    form = b"Content-Type: multipart/form-data; boundary=b\r\n"
    cases = [  # (the head, whether the body is chunked, the status)
        (b"POST /api/products HTTP/1.1\r\nHost: x\r\n" + form +
         b"Content-Length: 20000000000\r\n\r\n", False, b"401"),
        (b"POST /api/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n" + form +
         b"Transfer-Encoding: chunked\r\n\r\n", True, b"401"),
        (b"POST /api/search HTTP/1.1\r\nHost: x\r\n" + form +
         b"Transfer-Encoding: chunked\r\n\r\n" + _chunk(
             b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'),
         True, b"413"),
        (b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n", True, b"404"),
    ]
    with running(app) as base:
        port = int(base.rsplit(":", 1)[1])
        for head, chunked, status in cases:
            line, after = _answered_then_closed(port, head, chunked)
            assert line.split(b" ")[1:2] == [status], (head, line)
            assert after < MOST, f"{head[:40]!r}: the server read on after its answer"
