"""HTTP guards shared by the REST API and the web pages: security headers, upload size limits,
the API key check, and turning any error into a one-sentence ``{"detail": ...}``."""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from urllib.parse import quote

from fastapi import HTTPException, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitrine.catalog import SIMILAR_SUFFIX
from vitrine.web.text import limit_number
from vitrine.write_ticket import TICKET, WriteTicket

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes allowed on top of the photo for multipart boundaries and the text fields."""

CSP = ("default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
"""Only this server's own files; ``blob:`` images are previews of the shopper's own photo."""

DOCS_CSP = ("default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com; "
            "style-src 'self' https://cdn.jsdelivr.net; "
            "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
"""FastAPI's /docs page loads Swagger UI from its CDN with one inline script."""

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
"""FastAPI's pages, and only they (any page under /docs… got the looser CSP, a 404 too)."""


def root_of(scope: Scope) -> str:
    """The path prefix a reverse proxy serves the app under (``VITRINE_ROOT_PATH``,
    :class:`RootPath`), "" for none."""
    return scope.get("app_root_path", scope.get("root_path", "")).rstrip("/")


def own_path(scope: Scope) -> str:
    """The request's path as the app's routes see it: without that prefix."""
    root, path = root_of(scope), scope["path"]
    return path[len(root):] if root and path.startswith(root + "/") else path


CORS_EXPOSED = ("Retry-After", "Server-Timing")
"""The headers an allowed origin's page may read (when to retry, a search's timings)."""


def cors_headers(allowed: list[str], scope: Scope) -> dict[str, str]:
    """The CORS headers of an answer made outside the CORS middleware (a 500 or 503 of the
    server's error handler, a request cut off as the server stops), as the middleware would
    have sent them: a shop's page could otherwise read none of them, only a network error."""
    origin = Headers(scope=scope).get("origin")
    if not origin or not allowed or ("*" not in allowed and origin not in allowed):
        return {}
    headers = {"Access-Control-Allow-Origin": "*" if "*" in allowed else origin,
               "Access-Control-Expose-Headers": ", ".join(CORS_EXPOSED)}
    if "*" not in allowed:
        headers["Vary"] = "Origin"
    return headers


def security_headers(path: str) -> dict[str, str]:
    """The headers every response carries (the CSP depends on the path)."""
    return {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
            "referrer-policy": "same-origin",
            "content-security-policy": DOCS_CSP if path in DOCS_PATHS else CSP,
            "cross-origin-opener-policy": "same-origin"}


class SecurityHeaders:
    """Pure ASGI middleware adding security headers to every HTTP response. (A 500 is
    answered outside every middleware; the app's handler for it adds them itself.) An error
    it sees (a 4xx; a 5xx raised as HTTPException: the handler's 500 and a stopping
    server's 503, not cacheable by default, are not) also says ``Vary: Accept``: it is a
    page for a browser (``Accept: text/html``) and JSON otherwise, and a shared cache in
    front (a 404 and a 405 are cacheable without a Cache-Control) served one client's form
    to the other."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(k.encode(), v.encode()) for k, v in security_headers(own_path(scope)).items()]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                if message.get("status", 200) >= 400:
                    varies = b",".join(v for n, v in headers if n.lower() == b"vary").lower()
                    if b"accept" not in {part.strip() for part in varies.split(b",")}:
                        headers.append((b"vary", b"Accept"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RootPath:
    """Pure ASGI middleware telling the app the path prefix a reverse proxy serves it under
    (``VITRINE_ROOT_PATH``), which the proxy stripped: as the ASGI spec has it, the scope's
    ``root_path`` and the start of its ``path``, which Starlette's routing strips once (with
    the prefix left out of ``path``, its routing stripped a request's own first segment when
    the prefix was that segment, ``/search``: the search page was a 404, helper-229; and a
    request still carrying the prefix was served, past the write guard's check). The app's
    own checks read the path without it (:func:`own_path`); the pages and /docs start their
    links with it. Set on the request's own scope, not a copy: the handler of a 500 (outside
    every middleware) reads it too."""

    def __init__(self, app: ASGIApp, root_path: str):
        self.app = app
        self.root_path = root_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            # as the ASGI spec (and uvicorn --root-path) has it: the path includes root_path,
            # which Starlette's routing strips exactly once
            scope["root_path"] = self.root_path
            scope["path"] = self.root_path + scope["path"]
            if scope.get("raw_path") is not None:
                scope["raw_path"] = self.root_path.encode() + scope["raw_path"]
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse (413) request bodies over ``max_body`` bytes: at once when the Content-Length
    says so, before reading any of it, else while counting the bytes as they are read (the
    error then goes through the app's handlers). Each uploaded file is checked again against
    the upload limit by :func:`read_upload`."""

    def __init__(self, app: ASGIApp, max_body: int, upload_limit: int,
                 page: Callable[[Scope], Awaitable[Response | None]] | None = None):
        self.app = app
        self.max_body = max_body
        self.upload_limit = upload_limit
        self.page = page  # the 413 as a web page, for a browser's request; None: JSON

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body:
            response = await self.page(scope) if self.page is not None else None
            if response is None:
                response = JSONResponse({"detail": too_large_sentence(self.upload_limit)},
                                        status_code=413)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise HTTPException(413, too_large_sentence(self.upload_limit))
            return message

        await self.app(scope, counting_receive, send)


def _has_body(scope: Scope) -> bool:
    """Whether a request says it carries a body (a length other than 0, or chunks)."""
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() \
        not in ("", "0")


class CloseUnread:
    """Close the connection after a response sent before its request's body was read to its
    end: a write refused from its headers (401/403), an upload over the limit counted as it
    arrived (413), a POST to an address that takes none (404/405). uvicorn keeps such a
    connection open by reading the rest of the body and dropping it, as much as the client
    sends: a stranger's upload declared at 20 GB, or chunks without end, was received whole
    after its refusal."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        whole = False

        async def noting_receive() -> Message:
            nonlocal whole
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                whole = True  # (the last of the body, or the client gone)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not whole:
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, noting_receive, closing_send)


BLANK_START = 64 * 1024
"""How many bytes of a form's first message are looked at for its first boundary (blank lines
may come before it)."""
CUT_OFF = ("The upload was cut off: the form ends before its closing boundary; send it "
           "again.")


class WholeForm:
    """Refuse (400, :data:`CUT_OFF`) a ``multipart/form-data`` POST whose body ends before
    its closing boundary, once its last bytes are read: python-multipart drops a part left
    unfinished without a word, so an upload cut off on its way (a client or a proxy that
    sent less than the form, with a Content-Length to match) was a 422 saying the field
    'image' is required, and a field after the photo (the page's script sends the category
    there) was left out of a search unsaid. A body over the limit is BodyLimit's 413 first
    (this one sits inside it). Only a body that starts as a form does (its first boundary,
    then CRLF, after any blank lines, which the parser skips: helper-175) is judged: another
    (LF line ends, another boundary) is the parser's to refuse for what it is; and nothing is
    raised once the response has started (a file response reads the request to watch for a
    disconnect: helper-174)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind, params = (b"", {}) if scope["type"] != "http" or scope["method"] != "POST" \
            else parse_options_header(Headers(scope=scope).get("content-type", ""))
        boundary = params.get(b"boundary") if kind == b"multipart/form-data" else None
        if not boundary:  # (none: Starlette's own 400 says so)
            await self.app(scope, receive, send)
            return
        opening, closing = b"--" + boundary + b"\r\n", b"\r\n--" + boundary + b"--"
        head, tail, judged, started = b"", b"\r\n", False, False

        async def watching_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def checking_receive() -> Message:
            nonlocal head, tail, judged
            message = await receive()
            if message["type"] != "http.request" or judged or started:
                return message
            body = message.get("body", b"")
            if len(head) < len(opening):
                head = (head + body[:BLANK_START]).lstrip(b"\r\n")[:len(opening)]
                judged = not opening.startswith(head)  # (not framed so: the parser's to say)
            if not judged:
                judged = closing in tail + body[:len(closing)] or closing in body
                tail = (tail + body[-len(closing):])[-len(closing):]
                if not judged and not message.get("more_body", False):
                    raise HTTPException(400, CUT_OFF)
            return message

        await self.app(scope, checking_receive, watching_send)


STOPPING = "The server is stopping; try again in a moment."
"""The 503 of a request cut off as the server stops: nothing changed."""
SETTLE_POLL_S = 0.005
"""How often a write cut off looks again whether its change, being made, is done."""


class Stopping:
    """A request still running when the server stops (uvicorn cancels it once its graceful
    shutdown time is over: a slow upload) is answered 503 to try again: uvicorn answered a
    plain-text 500 and logged a traceback, a bug's signs, for a server that was told to stop.
    A response already started is cut as before. ``page(scope)``: the 503 as a web page for a
    browser's request (a form sent without JavaScript), None for JSON.

    A write's endpoint runs on in its worker thread, which cannot be cancelled: it was
    answered 503 and then saved. Each write (:func:`is_write`) carries a
    :class:`~vitrine.write_ticket.WriteTicket`: cut off, the ticket is cancelled, so the
    change is not made (503: nothing changed), unless it was made already (or is being made:
    it is waited for), which the answer then says (200, where to read it), never to try
    again."""

    def __init__(self, app: ASGIApp,
                 page: Callable[[Scope], Response | None] | None = None,
                 cors_origins: list[str] | None = None):
        self.app = app
        self.page = page
        self.cors_origins = cors_origins or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        ticket = WriteTicket() if scope["type"] == "http" and is_write(
            scope["method"], own_path(scope)) else None
        token = TICKET.set(ticket)  # (copied into the endpoint's worker thread)
        try:
            await self.app(scope, receive, noting_send)
        except asyncio.CancelledError:
            if scope["type"] != "http" or started:
                raise
            task = asyncio.current_task()
            if task is not None:  # answered here: the cancellation is spent
                task.uncancel()
            if ticket is not None and await _settled(ticket):
                response = _saved(scope, ticket.product_id or "")
            else:
                response = self._stopping_page(scope) or JSONResponse(
                    {"detail": STOPPING}, status_code=503)
                response.headers["Retry-After"] = "5"
            response.headers.update({"Connection": "close",
                                     **security_headers(own_path(scope)),
                                     **cors_headers(self.cors_origins, scope)})
            await response(scope, receive, send)
        finally:
            TICKET.reset(token)

    def _stopping_page(self, scope: Scope) -> Response | None:
        if self.page is None:
            return None
        try:
            return self.page(scope)
        except Exception:  # noqa: BLE001 - a page that cannot be drawn: the JSON, said so
            logging.getLogger(__name__).exception("the error page could not be drawn")
            return None


async def _settled(ticket: WriteTicket) -> bool:
    """Cancel a write's ticket, waiting while its change is being made (the lock is held
    for the moment that takes; looked at again off the lock, so the event loop goes on);
    returns whether the change was made. A second cancellation (the loop closing) is no
    answer either: the change decides it."""
    task = asyncio.current_task()
    while (saved := ticket.try_cancel()) is None:
        try:
            await asyncio.sleep(SETTLE_POLL_S)
        except asyncio.CancelledError:
            if task is not None:
                task.uncancel()
    return saved


def _saved(scope: Scope, product_id: str) -> JSONResponse:
    """The answer to a write cut off after its change was made: what the endpoint's answer
    would have said, that it was saved (a DELETE, gone), and where to read it."""
    where = f"{root_of(scope)}/api/products/{quote(product_id, safe='')}"
    if scope["method"] == "DELETE":
        detail = (f"The product was deleted, but the server stopped before it could answer; "
                  f"GET {where} says 404 once the server is back.")
    else:
        detail = (f"The change was saved, but the server stopped before it could answer; "
                  f"GET {where} shows the product once the server is back.")
    return JSONResponse({"detail": detail, "saved": True, "product_id": product_id},
                        status_code=200)


def is_write(method: str, path: str) -> bool:
    """Whether a request is one of the API's writes: a POST to ``/api/products``, a PATCH
    or DELETE of a product. Another method or address is not asked for a key: it gets its
    404 or its 405 with ``Allow`` (a 401 told a client to authenticate for what no key
    makes work; a product's similar products are no product to change)."""
    if method == "POST":
        return path == "/api/products"
    return method in ("PATCH", "DELETE") and path.startswith("/api/products/") and \
        not path.removeprefix("/api/products/").endswith(SIMILAR_SUFFIX)


class WriteGuard:
    """Check the API key of the requests that change the catalogue (:func:`is_write`) before
    any of their body is read: a stranger's 10 MB upload is refused
    from its headers (401/403), not received and then refused. The endpoints check again."""

    def __init__(self, app: ASGIApp, api_key: str | None):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_write(scope["method"], own_path(scope)):
            try:
                check_api_key(self.api_key, Headers(scope=scope).get("authorization"))
            except HTTPException as exc:
                response = JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                        headers=exc.headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def too_large_sentence(limit: int) -> str:
    return f"The upload is larger than the limit of {limit_number(limit, 1_000_000)} MB."


def read_upload(upload: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, read in chunks and refused (413) past ``limit`` bytes.
    Call from a sync endpoint (it reads the spooled file directly)."""
    upload.file.seek(0)
    chunks, total = [], 0
    while chunk := upload.file.read(1 << 20):
        total += len(chunk)
        if total > limit:
            raise HTTPException(413, too_large_sentence(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def check_api_key(configured: str | None, authorization: str | None) -> None:
    """403 when the server has no key (writes disabled); 401 when the request's Bearer key is
    missing or wrong. Compares in constant time."""
    if not configured:
        raise HTTPException(403, "Changing the catalogue is disabled on this server; set "
                                 "VITRINE_API_KEY to enable it.")
    scheme, _, given = (authorization or "").partition(" ")
    # a header's bytes, as sent (the server reads them as Latin-1): a Latin-1 key matches
    # from a client that sends it so (requests, fetch) or as UTF-8 (curl in a UTF-8 shell)
    sent = given.strip().encode("latin-1", "replace")
    latin, utf8 = (hmac.compare_digest(sent, configured.encode(form))
                   for form in ("latin-1", "utf-8"))
    if scheme.lower() != "bearer" or not (latin or utf8):
        raise HTTPException(401, "A valid 'Authorization: Bearer <key>' header is required.",
                            headers={"WWW-Authenticate": "Bearer"})


def http_error_sentence(status: int, detail: object, upload_limit: int) -> str:
    """One sentence for an HTTP error, replacing framework defaults such as 'Not Found'."""
    if status == 413:
        return too_large_sentence(upload_limit)
    if status == 400 and str(detail).startswith(("Part exceeded maximum size",  # Starlette's
                                                 "Field exceeded maximum size")):
        return ("A form field other than the photo is longer than 1 MB; send less text in "
                "it.")
    if isinstance(detail, str) and detail and detail != HTTPStatus(status).phrase:
        return detail
    return {404: "There is nothing at this address.",
            405: "This method is not allowed at this address."}.get(
        status, f"{HTTPStatus(status).phrase}.")


def _branch(error: dict) -> str:
    """The part of a union a validation error is about ('constrained-str'), or ''."""
    loc = tuple(error.get("loc", ()))
    return str(loc[2]) if len(loc) > 2 else ""


def validation_sentence(exc: RequestValidationError, *, json_body: bool = False) -> str:
    """One sentence for the first problem of a request that failed validation (its body a
    form, or with ``json_body`` a JSON object)."""
    errors = exc.errors()
    if not errors:
        return "The request is not valid."
    first = errors[0]
    if isinstance(first.get("input"), str):  # a union (price: number or text) said for the
        # text's branch when a text was sent ("should be a valid number" for a text too long)
        where = tuple(first.get("loc", ()))[:2]
        first = next((e for e in errors if tuple(e.get("loc", ()))[:2] == where
                      and _branch(e).endswith("str")), first)
    loc = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON ({first.get('ctx', {}).get('error', '')})."
    if loc == ["body"]:  # a JSON body (PATCH) that is not an object, or a form sent instead
        if not json_body:
            return ("The request body must be JSON, sent with Content-Type: application/json, "
                    "such as {\"price\": 129.9}.")
        return "The request body must be a JSON object of fields, such as {\"price\": 129.9}."
    where = {"query": "query parameter", "path": "path parameter",
             "body": "field" if json_body else "form field",
             "header": "header"}.get(loc[0] if loc else "", "field")
    # a field's own name, not the part of a union (price: number or text) that failed
    name = loc[1] if len(loc) > 1 else "request"
    message = str(first.get("msg", "is not valid")).rstrip(".")
    if "Expected UploadFile" in message:  # text sent where a file belongs
        return (f"Invalid {where} '{name}': send a file there (a part with a file name), "
                "not text.")
    return f"Invalid {where} '{name}': {message[:1].lower()}{message[1:]}."
