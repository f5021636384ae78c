"""The web app: REST API under ``/api``, product photos under ``/images`` and the web pages,
one FastAPI application over one store. ``create_app`` loads the model once; every endpoint
that decodes or embeds a photo is a plain ``def``, run in the thread pool, never on the event
loop. Changing the store (POST/PATCH/DELETE ``/api/products``) needs ``Authorization: Bearer
<key>`` with the key from ``VITRINE_API_KEY``; POST with an existing ``product_id`` replaces
it."""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import json
import logging
import os
import re
import sqlite3
import sys
from pathlib import Path
from stat import S_ISREG
from typing import Annotated, BinaryIO, Literal

import anyio
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    Security,
)
from fastapi import UploadFile as Upload
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette import convertors, routing
from starlette.convertors import register_url_convertor
from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Scope

from vitrine import __version__
from vitrine.api_models import (
    CategoryGuessOut,
    ErrorOut,
    Health,
    ProductEdit,
    ProductOut,
    ProductPage,
    SavedOut,
    SearchOut,
    SimilarOut,
    product_out,
    result_out,
)
from vitrine.catalog import CATEGORY_MAX, SIMILAR_SUFFIX, id_problem, parse_price
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.errors import (
    CatalogError,
    ImageError,
    ServerBusy,
    StoreBusy,
    StoreError,
    resources_refused,
)
from vitrine.image_checks import browser_jpeg
from vitrine.images import BROWSER_SUFFIXES, animated, thumbnail_jpeg
from vitrine.recommend import ProductNotFound
from vitrine.service import VitrineService
from vitrine.service_uploads import image_suffix
from vitrine.service_writes import NewProduct
from vitrine.store.base import StoredProduct
from vitrine.store.search_key import listing_order
from vitrine.web import guards
from vitrine.web.pages import check_web_files, install_pages, wants_html

K_MIN, K_MAX = 1, 100
PAGE_MAX = 200
OFFSET_MAX = 1_000_000_000
CARD_SIDE = 448
"""Longest side of the photo copies the cards show (224 CSS pixels at twice the density)."""
SMALL_PHOTO_BYTES = 96_000
"""Photos up to this size are sent as they are, even to a card."""
VIEW_PHOTO_BYTES = 600_000
"""Photos up to this size are sent as they are to a product page (``size=view``); a larger
one gets the view copy (a phone's 12-MP JPEG, 5.6 MB, was sent whole for a box 420 px
wide)."""
THUMBNAILS_KEPT = 1024
"""Card copies kept in memory (about 20-40 KB each)."""
VIEW_SIDE = 2048
"""Longest side of the copy sent for a photo in a format browsers cannot show (TIFF, HEIC),
and to a product page for a large one."""
ANIMATED_SUFFIXES = frozenset({".gif", ".png", ".webp"})
"""Browser formats that may hold an animation, which a product page gets as it is."""
VIEW_COPIES_KEPT = 64
"""Such copies kept in memory (a few hundred KB each)."""
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
"""A photo that cannot be opened for these is there: the server is at its open-file limit
(503 and Retry-After, where a 404 told browsers and crawlers the photo was gone)."""


KParam = Annotated[int, Query(ge=K_MIN, le=K_MAX, description="Number of results (1–100).")]
CategoryParam = Annotated[str | None, Query(max_length=CATEGORY_MAX,
                                            description="Only products of this category.")]
ImageParam = Annotated[Upload, File(description="The photo (JPEG, PNG, WebP, GIF, BMP, TIFF, "
                                                "AVIF, HEIC).",
                                    # (OpenAPI 3.1's contentMediaType alone: generated
                                    # clients sent the photo as a text field, a 422)
                                    json_schema_extra={"format": "binary"})]
PHOTO = {"image/*": {"schema": {"type": "string", "format": "binary"}}}
"""A photo answer's content, as a client generator reads it (bytes; without a schema a
generated client took a photo for an unexpected status)."""
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
WRITE_ERRORS = errors(401, 403, 409)
SAVED = {"model": SavedOut, "description": "Saved, but the server stopped before it could "
                                           "answer with the product (a DELETE: deleted)."}
"""The 200 a write cut off after its change was made is answered with (guards.Stopping)."""
WRITE_ROUTES = frozenset({"add_product", "edit_product", "delete_product"})
"""The routes that change the store (a StoreError there is a 409, elsewhere a 503)."""
FORM_ROUTES = frozenset({"add_product", "search"})
"""The API routes whose body is a form with a photo (JSON sent there is said so)."""
BEARER = HTTPBearer(auto_error=False, description="The server's VITRINE_API_KEY.")
ADD_FIELDS = ("image", "product_id", "name", "category", "price", "description")
"""The form fields ``POST /api/products`` takes."""
SEARCH_FIELDS = ("image", "category")
"""The form fields ``POST /api/search`` takes (``k`` goes in the address)."""


def form_fields(taken: tuple[str, ...], in_address: tuple[str, ...] = ()):
    """A dependency refusing (422) a form that holds a field the route does not take, or
    one field twice: FastAPI ignores the one and reads the last copy of the other, so a
    misspelt field (``nome``, ``preco``: the catalogue table's Portuguese names) was dropped
    unsaid, and a product replaced so lost the name and price it had, answered 200; PATCH
    refuses an unknown field already. ``in_address``: the route's query parameters, said so
    when sent in the form. The form is FastAPI's own, parsed once (Starlette keeps it)."""
    allowed = ", ".join(taken[:-1]) + f" and {taken[-1]}"

    async def check(request: Request) -> None:
        if not request.headers.get("content-type", "").lower().startswith(
                ("multipart/form-data", "application/x-www-form-urlencoded")):
            return  # (JSON or no body: the route's own 422 says what to send)
        seen: dict[str, int] = {}
        for name, _ in (await request.form()).multi_items():
            seen[name] = seen.get(name, 0) + 1
        for name, count in seen.items():
            shown = name if len(name) <= 40 else name[:40] + "…"
            if name in in_address:
                raise HTTPException(422, f"'{shown}' is a query parameter of this address "
                                         f"(?{name}=…), not a form field.")
            if name not in taken:
                raise HTTPException(422, f"Unknown form field {shown!r}: this address "
                                         f"takes the fields {allowed}.")
            if count > 1:
                raise HTTPException(422, f"The form field {shown!r} was sent {count} "
                                         "times; send it once.")
    return check


class ProductIdConvertor(convertors.PathConvertor):
    """A product's id in a product's own address: a path, but not one ending with the
    similar products' suffix, which no product's id can (``id_problem``): so PATCH or
    DELETE of /api/products/X/similar is a 405, as any other method there, not a 404 for a
    product "X/similar" (helper-244)."""
    regex = f"(?!.*{re.escape(SIMILAR_SUFFIX)}\\Z).*"  # (the id's own end: a lookbehind at
    # the end saw the address's, and the product 'similar' had none: helper-260)


register_url_convertor("product_id", ProductIdConvertor())


def page_cursor(product: StoredProduct) -> str:
    """The cursor of the page after ``product``: its place in the listing's order (category,
    name, id), as URL-safe text."""
    place = json.dumps([product.category, product.name, product.product_id],
                       ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(place.encode()).decode().rstrip("=")


def _utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (a JSON escape makes a lone surrogate, which
    no store can compare: a 500)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def cursor_place(cursor: str) -> tuple[str, str, str, str]:
    """Where the page a cursor names starts (:func:`vitrine.store.search_key.listing_order`
    of the product before it); a 422 for text no page gave."""
    try:
        place = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError):  # (binascii.Error, a JSON or UTF-8 error; JSON
        place = None  # nested deeper than the interpreter recurses)
    if not (isinstance(place, list) and len(place) == 3
            and all(isinstance(text, str) and _utf8(text) for text in place)):
        raise HTTPException(422, "Invalid cursor: send a page's next_cursor as it came.")
    return listing_order(*place)


async def utf8_json(request: Request) -> None:
    """A dependency refusing (422) a JSON body in UTF-16 or UTF-32, as one in Windows-1252
    is (README; RFC 8259 8.1: JSON between systems is UTF-8): ``json.loads`` reads those
    too, by their first bytes, so they were taken. A UTF-8 byte order mark is ignored, as
    the RFC lets a parser do. Run after FastAPI read the body (Starlette keeps it)."""
    if _json_body(request) and json.detect_encoding(await request.body()) not in (
            "utf-8", "utf-8-sig"):  # (the encoding json.loads read it in; one that is
        # not UTF-8 once read so is FastAPI's 400, said by http_error)
        raise HTTPException(422, "The request body is not valid JSON (it must be UTF-8 "
                                 "text).")


def _api_router(service: VitrineService, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["api"], responses=errors(422, 503))
    limit = settings.max_upload_bytes
    root = settings.root_path  # (the photos' addresses start with it)

    async def writer(key: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]
                     ) -> None:
        """The API key of a write (WriteGuard checked it before the body; this declares it
        to OpenAPI, as bearer authentication a client generator and /docs know). Async: a
        comparison, not worth a worker thread."""
        guards.check_api_key(settings.api_key, key and f"{key.scheme} {key.credentials}")

    @router.get("/products", response_model=ProductPage)
    def list_products(category: CategoryParam = None,
                      q: Annotated[str | None, Query(max_length=200,
                                                     description="Name or id contains.")] = None,
                      limit: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 50,
                      offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
                      cursor: Annotated[str | None, Query(
                          description="A page's `next_cursor`: the page after it, with "
                          "the same filters.")] = None) -> ProductPage:
        """Products in category order, then name order (as a reader sorts names: case and
        accents aside), filtered by category and by a part of the name or id. Page by
        ``next_cursor`` to walk a catalogue that changes meanwhile (by ``offset``, a product
        added or removed before the page moves the rest by one: one listed twice or
        missed)."""
        after = None
        if cursor:  # (an empty one, as a client writes the first page's: none)
            if offset:
                raise HTTPException(422, "Send offset or cursor, not both.")
            after = cursor_place(cursor)
        found, more = service.products(category=category, query=q, limit=limit, offset=offset,
                                       after=after)
        return ProductPage(products=[product_out(p, root) for p in found], limit=limit,
                           offset=offset, has_more=more,
                           next_cursor=page_cursor(found[-1]) if more else None)

    @router.get("/products/{product_id:path}" + SIMILAR_SUFFIX, response_model=SimilarOut,
                responses=errors(404))
    def similar(product_id: str, k: KParam = 5, category: CategoryParam = None) -> SimilarOut:
        """The ``k`` products most similar to a stored product (itself excluded)."""
        product, matches = service.similar(product_id, k, category)
        return SimilarOut(product=product_out(product, root),
                          results=[result_out(m, root) for m in matches])

    @router.get("/products/{product_id:product_id}", response_model=ProductOut,
                responses=errors(404))
    def get_product(product_id: str) -> ProductOut:
        return product_out(service.product(product_id), root)

    @router.post("/search", response_model=SearchOut, responses=errors(400, 413),
                 dependencies=[Depends(form_fields(SEARCH_FIELDS, ("k",)))])
    def search(image: ImageParam, response: Response, k: KParam = 5,
               category: CategoryParam = None,
               category_field: Annotated[str | None, Form(
                   alias="category", max_length=CATEGORY_MAX,
                   description="The same filter, sent as a form field.")] = None
               ) -> SearchOut:
        """The ``k`` products most similar to an uploaded photo (multipart field ``image``),
        only of ``category`` when given (in the address or as a form field; in both, they
        must name the same category, else 422). The ``Server-Timing`` header tells decode,
        model and search times."""
        if category and category_field and service.stored_category(category) != \
                service.stored_category(category_field):
            raise HTTPException(422, f"Two categories were sent ({category!r} in the address, "
                                     f"{category_field!r} in the form); send one.")
        matches, timings, guess = service.search_photo(guards.read_upload(image, limit), k,
                                                       category or category_field)
        response.headers["Server-Timing"] = timings.server_timing()
        return SearchOut(results=[result_out(m, root) for m in matches],
                         predicted_category=guess and CategoryGuessOut(**guess.as_dict()))

    @router.post("/products", response_model=ProductOut, status_code=201,
                 dependencies=[Depends(writer), Depends(form_fields(ADD_FIELDS))], responses={
                     200: {"model": ProductOut | SavedOut,
                           "description": "An existing product was replaced (or, the "
                                          "server stopping, the product saved: SavedOut)."},
                     **errors(400, 413), **WRITE_ERRORS})
    def add_product(
        image: ImageParam,
        response: Response,
        product_id: Annotated[str, Form(min_length=1, max_length=200)],
        name: Annotated[str, Form(max_length=300)] = "",
        category: Annotated[str, Form(max_length=CATEGORY_MAX)] = "",
        price: Annotated[str, Form(max_length=40, description="e.g. 129.90 or "
                                                               "'R$ 1.299,90'")] = "",
        description: Annotated[str, Form(max_length=5000)] = "",
    ) -> ProductOut:
        """Add a product with its photo, or replace the product with the same id
        (201 when new, 200 when replaced). Needs ``Authorization: Bearer <key>``."""
        product_id = product_id.strip()  # (as a catalogue table's cells: "  " was an id)
        problem = id_problem(product_id) if product_id else "it is empty"
        if problem:
            raise HTTPException(422, f"Invalid form field 'product_id': {problem}.")
        try:
            fields = NewProduct(product_id, name.strip(), category.strip(),
                                parse_price(price), description.strip())
        except CatalogError as exc:
            raise HTTPException(422, f"Invalid form field 'price': {exc}") from None
        stored, created = service.add_product(fields, guards.read_upload(image, limit))
        response.status_code = 201 if created else 200
        return product_out(stored, root)

    @router.patch("/products/{product_id:product_id}", response_model=ProductOut | SavedOut,
                  dependencies=[Depends(writer), Depends(utf8_json)],
                  responses={**errors(404, 413), **WRITE_ERRORS})
    def edit_product(product_id: str, edit: ProductEdit) -> ProductOut:
        """Change a product's name, category, price or description; its photo and its
        similar products stay (no forward pass). A product from the catalogue table gets the
        table's values back at the next ``vitrine index``. Needs ``Authorization: Bearer
        <key>``."""
        changes = {name: getattr(edit, name) for name in edit.model_fields_set}
        if not changes:
            raise HTTPException(422, "Send at least one of name, category, price and "
                                     "description.")
        for name in ("name", "category", "description"):
            if name in changes:
                changes[name] = changes[name].strip()
        if isinstance(changes.get("price"), str):
            try:
                changes["price"] = parse_price(changes["price"])
            except CatalogError as exc:
                raise HTTPException(422, f"Invalid field 'price': {exc}") from None
        return product_out(service.edit_product(product_id, changes), root)

    @router.delete("/products/{product_id:product_id}", status_code=204,
                   dependencies=[Depends(writer)],
                   responses={200: SAVED, **errors(404), **WRITE_ERRORS})
    def delete_product(product_id: str) -> Response:
        """Remove a product. Needs ``Authorization: Bearer <key>``."""
        service.delete_product(product_id)
        return Response(status_code=204)

    return router


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
                logging.getLogger(__name__).exception("the error page could not be drawn")
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


class PhotoFile(FileResponse):
    """A photo sent from a file opened before the response starts: a photo replaced or
    deleted meanwhile (through the API, by another server on the store) still goes out whole,
    as the version its headers describe. A malformed ``Range`` header is ignored and the whole
    file sent, as RFC 9110 asks (Starlette answers it with a plain-text 400)."""

    def __init__(self, file: BinaryIO, path: Path, **kwargs):
        super().__init__(path, stat_result=os.fstat(file.fileno()), **kwargs)
        self.file = file

    @contextlib.asynccontextmanager
    async def _open_file(self):  # Starlette's by path, here the file already open
        self.file.seek(0)
        yield anyio.AsyncFile(self.file)

    async def __call__(self, scope, receive, send) -> None:
        try:
            extensions = scope.get("extensions") or {}
            if "http.response.pathsend" in extensions:  # the server would open the path
                extensions = {k: v for k, v in extensions.items()
                              if k != "http.response.pathsend"}
                scope = {**scope, "extensions": extensions}
            wanted = Headers(scope=scope).get("range")
            if wanted is not None:
                try:
                    self._parse_range_header(wanted, self.stat_result.st_size)
                except MalformedRangeHeader:
                    scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                                  if k.lower() != b"range"]}
                except RangeNotSatisfiable:  # Starlette's 416 stands
                    pass
            await super().__call__(scope, receive, send)
        finally:
            self.file.close()


def _add_head_routes(router: APIRouter) -> None:
    """HEAD beside each GET route (uptime monitors, link checkers), kept out of OpenAPI,
    which would list the operation twice."""
    for route in list(router.routes):
        if isinstance(route, APIRoute) and route.methods == {"GET"}:
            router.add_api_route(route.path.removeprefix(router.prefix), route.endpoint,
                                 methods=["HEAD"],
                                 response_model=route.response_model,
                                 response_class=route.response_class,
                                 include_in_schema=False)


def _allowed_methods(routes: list[routing.BaseRoute], scope) -> list[str]:
    """Every method one of ``routes`` answers at the request's address."""
    methods: set[str] = set()
    for route in routes:
        if route.matches(scope)[0] is not routing.Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its name (``search``, ``add_product``), which a
    generated client names its functions and body classes by (FastAPI's own,
    ``search_api_search_post``, made ``BodySearchApiSearchPost``)."""
    return route.name


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def file_version(path: Path, stat: os.stat_result) -> str:
    """A photo file's version, for its ETag and its copies: its path (a product moved to
    another file of the same time and size, as a supplier's zip unpacks them, kept the old
    one's), inode, times (the change time too: a file written with its old time kept) and
    size; not the device, which differs for one network share mounted on two servers."""
    key = f"{path}\0{stat.st_ino}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_size}"
    return hashlib.blake2b(os.fsencode(key), digest_size=12).hexdigest()


def create_app(settings: Settings, store: str | Path, *,
               embedder: Embedder | None = None) -> FastAPI:
    """Build the app over ``store`` (a folder, or a URI that ``open_store`` knows); loads the
    model now (pass ``embedder`` to share one already loaded). Raises StoreError/WeightsError
    with one sentence."""
    check_web_files()
    service = VitrineService(settings, store, embedder)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        service.close()

    max_body = settings.max_upload_bytes + guards.MULTIPART_OVERHEAD
    app = FastAPI(title="Vitrine", version=__version__, lifespan=lifespan,
                  description="Visually similar products from product photos.",
                  generate_unique_id_function=operation_id,
                  redirect_slashes=False)  # (its redirects named the Host header's site)

    @app.get("/healthz", response_model=Health, tags=["health"], responses=errors(503))
    def healthz() -> Health:
        """Healthy while the store can be read: its folder deleted or moved away (the server
        reads the open file still, and no write can succeed) or its database failing (see
        server_error) is a 503."""
        if not service.present():  # (Retry-After: a store indexed anew comes back)
            raise HTTPException(503, "The store is gone: its database is no longer where the "
                                     "server opened it.", headers={"Retry-After": "5"})
        return Health(status="ok", products=service.count(), model=service.embedder.spec.name)

    @functools.lru_cache(maxsize=THUMBNAILS_KEPT)
    def card_copy(path: str, version: str) -> bytes:  # the file version keys it
        return service.decoded(thumbnail_jpeg, Path(path), CARD_SIDE, settings.max_image_pixels)

    @functools.lru_cache(maxsize=VIEW_COPIES_KEPT)
    def view_copy(path: str, version: str) -> bytes:
        return service.decoded(thumbnail_jpeg, Path(path), VIEW_SIDE, settings.max_image_pixels)

    @app.get("/images/{product_id:path}", tags=["images"],
             response_class=FileResponse, responses={
                 200: {"content": PHOTO},
                 206: {"content": PHOTO, "description": "The part of the photo a "
                       "Range header asked for."},
                 304: {"description": "Not modified: If-None-Match names the photo's ETag."},
                 416: {"content": {"text/plain": {}}, "description": "The Range header asks "
                       "for bytes the photo does not have."},
                 **errors(404, 422, 503)})
    def product_image(product_id: str, request: Request,
                      size: Annotated[Literal["card", "view"] | None, Query(
                          description="'card': a copy at most 448 px on a side (JPEG), "
                          "what the page's cards show; 'view': one at most 2048 px on a "
                          "side, what a product page shows")] = None) -> Response:
        """The photo of a product; in a format browsers cannot show (TIFF, HEIC, …) a JPEG
        copy at most 2048 px on a side, made once per version of the file. Only stored
        products' photos are reachable. ``no-cache`` with an ETag: a browser asks again each
        time and gets 304 until the photo is replaced."""
        path = service.image_path(product_id)
        unreadable = ProductNotFound(product_id, "the photo of product {id} cannot be read.")
        busy = HTTPException(503, "The server has too many files open; try again in a moment.",
                             headers={"Retry-After": "1"})  # its limit, not the photo's fault
        try:  # opened now: a photo sent as it is is the version stat and format describe
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # (no wait on a FIFO)
        except OSError as exc:
            raise (busy if exc.errno in OUT_OF_FILES else unreadable) from None
        with contextlib.ExitStack() as unsent:
            unsent.callback(os.close, fd)  # PhotoFile closes it once sent
            stat = os.fstat(fd)
            if not S_ISREG(stat.st_mode):
                raise unreadable
            fh = os.fdopen(fd, "rb")
            unsent.pop_all()
            unsent.callback(fh.close)
            fmt = image_suffix(fh.read(256))  # by its bytes: a HEIC named .jpg
            shown = fmt in BROWSER_SUFFIXES
            if shown and fmt == ".jpg":  # (a lossless one no browser shows)
                fh.seek(0)
                shown = browser_jpeg(fh)
            small = SMALL_PHOTO_BYTES if size == "card" else VIEW_PHOTO_BYTES
            as_is = shown and (size is None or stat.st_size <= small)
            if shown and not as_is and size == "view" and fmt in ANIMATED_SUFFIXES:
                fh.seek(0)  # (an animation's copy is its first frame: a product's turning
                as_is = animated(fh)  # view was a still on its page)
            kind = "" if as_is else "-card" if size == "card" else "-view"
            version = file_version(path, stat)
            headers = {"Cache-Control": "no-cache", "ETag": f'"{version}{kind}"'}
            wanted = request.headers.get("if-none-match", "")
            if wanted.strip() == "*" or headers["ETag"] in wanted:
                return Response(status_code=304, headers=headers)
            if as_is:
                unsent.pop_all()
                return PhotoFile(fh, path, headers=headers,
                                 media_type="image/" + ("jpeg" if fmt == ".jpg" else fmt[1:]))
        copy = card_copy if size == "card" else view_copy
        try:
            jpeg = copy(str(path), version)
        except ImageError as exc:  # the stored file went bad or away: not the request's fault
            raise (busy if exc.errno in OUT_OF_FILES else unreadable) from None
        return Response(jpeg, media_type="image/jpeg", headers=headers)

    api = _api_router(service, settings)
    for router in (app.router, api):
        _add_head_routes(router)
    app.include_router(api)
    install_pages(app, service, settings)
    # FastAPI keeps an included router's routes apart from the app's own
    _install_error_handlers(app, settings, [*app.router.routes, *api.routes], store)

    async def too_large_page(scope) -> Response | None:
        request = Request(scope)
        if not wants_html(request):
            return None
        return await anyio.to_thread.run_sync(app.state.render_too_large, request)

    app.add_middleware(guards.WholeForm)  # (inside BodyLimit: a body too large is its 413)
    app.add_middleware(guards.BodyLimit, max_body=max_body,
                       upload_limit=settings.max_upload_bytes, page=too_large_page)
    app.add_middleware(guards.WriteGuard, api_key=settings.api_key)
    if settings.cors_origins:  # around the guards: their refusals are readable cross-origin
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization"],
                           # (a shop's page reads when to retry, and a search's timings)
                           expose_headers=list(guards.CORS_EXPOSED))
    app.add_middleware(guards.SecurityHeaders)
    if settings.root_path:  # outermost: every middleware's page and the 500's see it
        app.add_middleware(guards.RootPath, root_path=settings.root_path)
    return app
