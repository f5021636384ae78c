"""How the web app answers an error: what each error status means in OpenAPI
(:func:`errors`), and the exception handlers :func:`vitrine.api.create_app` installs, which
say every error in one sentence, as JSON or as a page for a browser, with the server's
folders hidden from the client (:func:`hide_folders`)."""

from __future__ import annotations

import logging
import sqlite3
import sys
from pathlib import Path

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette import routing
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from vitrine.api_models import ErrorOut
from vitrine.config import Settings
from vitrine.errors import (
    CatalogError,
    ImageError,
    ServerBusy,
    StoreBusy,
    StoreError,
    resources_refused,
)
from vitrine.recommend import ProductNotFound
from vitrine.web import guards
from vitrine.web.pages import wants_html

SHOWN_ID_MAX = 200
"""Most characters of an unknown product id an error repeats (a 70,000-character address
came back whole)."""


def errors(*statuses: int) -> dict:
    """The OpenAPI answers of ``statuses``, each an :class:`ErrorOut` sentence."""
    return {status: {"model": ErrorOut, "description": ERRORS[status]} for status in statuses}


ERRORS = {
    400: "The photo cannot be read (corrupt, or not an image), or the form is malformed or "
         "cut off before its end.",
    401: "The 'Authorization: Bearer <key>' header is missing or wrong.",
    403: "Changing the catalogue is disabled on this server (no VITRINE_API_KEY).",
    404: "No such product, or no photo of it.",
    409: "The store refused the change (its folder gone, its disk full); nothing changed.",
    413: "The request body (the upload) is larger than VITRINE_MAX_UPLOAD_BYTES.",
    422: "A parameter or field is missing, of the wrong type or out of range.",
    503: "The server cannot answer right now (stopping, short of memory, its store "
         "unreadable or indexed anew with another model); try again after Retry-After "
         "seconds. A write answered so changed nothing (one the server, stopping, cut off "
         "after its change was made is answered 200 with a 'detail' saying it was saved)."}
"""What each error status means (the body is always ``{"detail": sentence}``)."""
WRITE_ROUTES = frozenset({"add_product", "edit_product", "delete_product"})
"""The routes that change the store (a StoreError there is a 409, elsewhere a 503)."""
FORM_ROUTES = frozenset({"add_product", "search"})
"""The API routes whose body is a form with a photo (JSON sent there is said so)."""


def folder_names(*locations: str | Path | None) -> list[tuple[str, str]]:
    """(path, name) pairs that hide the store's folder (or Milvus Lite file), and any other
    folder of ``locations`` (VITRINE_UPLOAD_DIR), in what a client reads, longest path first:
    the server's paths are no business of an anonymous client's. Worked out once (resolving
    touches the disk)."""
    pairs = []
    for location in locations:
        text = str(location)
        if location is None or "://" in text and not text.startswith("milvus-lite://"):
            continue  # (a Milvus server's address names no file of this machine)
        text = text.removeprefix("milvus-lite://")
        folder = Path(text).expanduser().resolve()
        paths = {str(folder)} | ({text} if "/" in text.rstrip("/") else set())
        pairs += [(path, folder.name) for path in paths]
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def hide_folders(sentence: str, store: str | Path | list[tuple[str, str]]) -> str:
    """A store error as a client may read it: the store's folder (and VITRINE_UPLOAD_DIR) by
    its name only."""
    for path, name in store if isinstance(store, list) else folder_names(store):
        sentence = sentence.replace(path, name)
    return sentence


BODY_UNREADABLE = "There was an error parsing the body"
"""FastAPI's 400 detail for a request body it could not decode."""


def unreadable_json(cause: BaseException | None) -> str:
    """What is wrong with a JSON body FastAPI could not parse (its 400 "There was an error
    parsing the body", raised from json.loads' error): every one was said to be not UTF-8,
    also 1,000 nested brackets of UTF-8."""
    if isinstance(cause, UnicodeDecodeError):  # (saved as Windows-1252)
        return "The request body is not valid JSON (it must be UTF-8 text)."
    if isinstance(cause, RecursionError):  # (about 1,000 levels of brackets)
        return "The request body's JSON is nested too deeply to be read."
    if isinstance(cause, ValueError) and "digits" in str(cause):  # (an integer's limit)
        return (f"The request body's JSON holds a number with too many digits (more than "
                f"{sys.get_int_max_str_digits():,}).")
    return "The request body is not valid JSON."


def _json_body(request: Request) -> bool:
    """Whether the request says its body is JSON, as FastAPI reads it: ``application/json``
    or ``application/…+json``, in any case."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    main, _, sub = kind.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


def _install_error_handlers(app: FastAPI, settings: Settings,
                            routes: list[routing.BaseRoute], store: str | Path) -> None:
    # not in the async handler below: resolving reads the disk (the upload folder: its photo
    # that cannot be saved named its path)
    hidden = folder_names(store, settings.upload_dir)

    def error(request: Request, status: int, sentence: str,
              headers: dict | None = None) -> Response:
        if wants_html(request):
            try:
                page = app.state.render_error(request, status, sentence)
            except Exception:  # noqa: BLE001 - an error page that cannot be drawn (a bug):
                # the sentence as JSON rather than the server's bare 500 without the security
                # headers (a page's own error raised again drawing it: helper-181)
                logging.getLogger("vitrine.api").exception("the error page could not be drawn")
            else:
                page.headers.update(headers or {})
                return page
        return JSONResponse({"detail": sentence}, status_code=status, headers=headers)

    def stopping_page(scope: Scope) -> Response | None:
        """The 503 of a browser's request cut off as the server stops (guards.Stopping), as
        a page in its language; None for JSON. Drawn in the event loop, as the other error
        pages (no store read: the worker threads may be busy with what is cut off)."""
        request = Request(scope)
        if not wants_html(request):
            return None
        return app.state.render_error(request, 503, guards.STOPPING)

    app.state.stopping_page = stopping_page
    app.state.cors_origins = settings.cors_origins  # (the stopping server's answers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 413 and wants_html(request):  # also one raised reading the form
            # (off the event loop, as every page: it counts the categories, a scan of a
            # Milvus collection)
            return await anyio.to_thread.run_sync(app.state.render_too_large, request)
        if exc.detail == guards.CUT_OFF and wants_html(request) and \
                guards.own_path(request.scope) == "/search":  # (said on the search page, as
            # a photo refused)
            return await anyio.to_thread.run_sync(app.state.render_cut_off, request)
        if exc.status_code == 400 and exc.detail == BODY_UNREADABLE and _json_body(request):
            # FastAPI's, for JSON that json.loads refused other than as a syntax error: a
            # 422 as any JSON not valid, saying what is wrong
            return error(request, 422, unreadable_json(exc.__cause__))
        sentence = guards.http_error_sentence(exc.status_code, exc.detail,
                                              settings.max_upload_bytes)
        headers = getattr(exc, "headers", None)
        allowed = _allowed_methods(routes, request.scope) if exc.status_code == 405 else []
        if allowed:  # Starlette names only the first route's (static files: its own stand)
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return error(request, exc.status_code, sentence, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.method == "POST" and guards.own_path(request.scope) == "/search" \
                and wants_html(request) and any(e["loc"][-1:] == ("image",) for e in exc.errors()):
            form = exc.body if isinstance(exc.body, FormData) else FormData()
            category = form.get("category")
            # (in a worker thread: the page reads the store's categories, not in the loop)
            return await anyio.to_thread.run_sync(
                app.state.render_no_file, request,
                category if isinstance(category, str) else "")
        json_body = _json_body(request)
        if json_body and getattr(request.scope.get("route"), "name", None) in FORM_ROUTES:
            return error(request, 422, "This address takes a form (multipart/form-data) with "
                                       "the photo in the field 'image', not JSON.")
        # (a page names the form, not the address, when only its fields were wrong)
        request.state.form_fields = all(e["loc"][:1] == ("body",) for e in exc.errors())
        return error(request, 422, guards.validation_sentence(exc, json_body=json_body))

    @app.exception_handler(ProductNotFound)
    async def not_found(request: Request, exc: ProductNotFound) -> Response:
        if request.path_params.get("product_id") == "":  # /api/products/ ("Product '' is
            return error(request, 404, "There is nothing at this address.")  # not in…")
        return error(request, 404, _sentence(exc.shown(SHOWN_ID_MAX)))

    @app.exception_handler(ImageError)
    async def bad_image(request: Request, exc: ImageError) -> Response:
        return error(request, 400, f"The uploaded file cannot be used as a photo: {exc.reason}")

    @app.exception_handler(CatalogError)  # a product the store cannot hold (a field too long)
    async def unfit(request: Request, exc: CatalogError) -> Response:
        return error(request, 422, _sentence(str(exc)))

    @app.exception_handler(ServerBusy)  # (photo searches beyond those the server takes)
    async def server_busy(request: Request, exc: ServerBusy) -> Response:
        return error(request, 503, str(exc), {"Retry-After": "2"})

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        """A write the store refused is a 409 (nothing changed); a read is a 503: the store
        cannot be used right now (indexed anew with another model under the server, its
        database unreadable), which no change to the request mends (/healthz said 409)."""
        sentence = _sentence(hide_folders(str(exc), hidden))
        if getattr(request.scope.get("route"), "name", None) in WRITE_ROUTES:
            # (another write holding the store, `vitrine index`: a client knows when to retry)
            return error(request, 409, sentence,
                         {"Retry-After": "2"} if isinstance(exc, StoreBusy) else None)
        return error(request, 503, sentence, {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        """A bug: one sentence (the traceback goes to the server's log), with the security
        headers, which the middleware cannot add to a 500. Memory or a thread the system
        refused is a 503 to try again (a burst of uploads under a container's limit), and so
        is a database that fails under the server."""
        if resources_refused(exc):
            response = error(request, 503, "The server is short of memory or threads right "
                                           "now; try again in a moment.",
                             {"Retry-After": "5"})
        elif type(exc) in (sqlite3.DatabaseError, sqlite3.OperationalError):  # (a page
            # damaged, or a read-only replica's file rewritten under it: opened anew at the
            # next request; not IntegrityError and the like, which are bugs)
            response = error(request, 503, "The store's database cannot be read right now "
                                           "(being rewritten, or damaged); the error is in "
                                           "the server's log.", {"Retry-After": "5"})
        elif isinstance(exc, PermissionError):  # (the store's folder made unreadable under
            # the server: not a bug, and over once its permissions are given back)
            response = error(request, 503, "The server is denied a file it needs right now "
                                           "(permission denied); the error is in its log.",
                             {"Retry-After": "5"})
        else:
            response = error(request, 500, "Something went wrong on the server; the error "
                                           "is in its log.")
        response.headers.update(guards.security_headers(guards.own_path(request.scope)))
        # (the CORS middleware sits inside the handler of this one: a shop's page could not
        # read a 500 or a 503, only an opaque network error)
        response.headers.update(guards.cors_headers(settings.cors_origins, request.scope))
        return response


def _allowed_methods(routes: list[routing.BaseRoute], scope) -> list[str]:
    """Every method one of ``routes`` answers at the request's address."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] is not routing.Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]
