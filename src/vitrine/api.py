"""The web app: REST API under ``/api``, product photos under ``/images`` and the web pages,
one FastAPI application over one store. ``create_app`` loads the model once; every endpoint
that decodes or embeds a photo is a plain ``def``, run in the thread pool, never on the event
loop. Changing the store (POST/PATCH/DELETE ``/api/products``) needs ``Authorization: Bearer
<key>`` with the key from ``VITRINE_API_KEY``; POST with an existing ``product_id`` replaces
it."""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import threading
from pathlib import Path
from stat import S_ISREG
from typing import Annotated, BinaryIO, Literal

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from vitrine import __version__
from vitrine.api_errors import _install_error_handlers, errors
from vitrine.api_models import Health
from vitrine.api_routes import _api_router
from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.errors import ImageError
from vitrine.image_checks import browser_jpeg
from vitrine.images import BROWSER_SUFFIXES, animated, thumbnail_jpeg, turned_as_browsers_show
from vitrine.recommend import ProductNotFound
from vitrine.service import VitrineService
from vitrine.service_uploads import image_suffix
from vitrine.web import guards
from vitrine.web.pages import check_web_files, install_pages, wants_html

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
TURNS_KEPT = 4096
"""Photo versions whose :func:`turned_as_browsers_show` answer is kept (a few dozen bytes
each): asked at each request, a 304 too, it read the whole file every time, and decoded every
pixel of a PNG with an XMP orientation (Photoshop's tiff:Orientation 1): 37 ms a 1,400 px
photo, a product page's photo 203 -> 28 requests a second, its 304s 491 -> 32."""
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
"""A photo that cannot be opened for these is there: the server is at its open-file limit
(503 and Retry-After, where a 404 told browsers and crawlers the photo was gone)."""
PHOTO = {"image/*": {"schema": {"type": "string", "format": "binary"}}}
"""A photo answer's content, as a client generator reads it (bytes; without a schema a
generated client took a photo for an unexpected status)."""
FORM_BODIES = ("Body_search", "Body_add_product")
"""The OpenAPI schemas of the forms with a photo (named by their routes' operation ids)."""
BYTERANGES = {"multipart/byteranges": {"schema": {"type": "string", "format": "binary"}}}
"""A 206 to a Range header asking for several parts (``bytes=0-99,200-299``), as Starlette
answers it: the parts in one multipart body, not an ``image/*``."""


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


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operationId: its name (``search``, ``add_product``), which a
    generated client names its functions and body classes by (FastAPI's own,
    ``search_api_search_post``, made ``BodySearchApiSearchPost``)."""
    return route.name


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

    turns: dict[tuple[str, int], bool] = {}
    turns_lock = threading.Lock()

    def shown_turned(fh: BinaryIO, version: str, limit: int) -> bool:
        """:func:`turned_as_browsers_show` of the photo open in ``fh``, once a version."""
        with turns_lock:
            kept = turns.get((version, limit))
        if kept is None:
            fh.seek(0)
            kept = turned_as_browsers_show(fh, limit)
            with turns_lock:
                turns[version, limit] = kept
                while len(turns) > TURNS_KEPT:  # (the oldest first)
                    del turns[next(iter(turns))]
        return kept

    @app.get("/images/{product_id:path}", tags=["images"],
             response_class=FileResponse, responses={
                 200: {"content": PHOTO},
                 206: {"content": {**PHOTO, **BYTERANGES}, "description": "The part of "
                       "the photo a Range header asked for (several parts: "
                       "multipart/byteranges)."},
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
            version = file_version(path, stat)
            if as_is and size is not None and fmt in (".jpg", ".png", ".webp"):
                # (a WebP's EXIF turn, an XMP one: browsers show it as stored, its vector
                # and card copy are upright: the upright copy to the pages too)
                as_is = shown_turned(fh, version, small)
            kind = "" if as_is else "-card" if size == "card" else "-view"
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

    def openapi() -> dict:
        """FastAPI's document, with the photo forms closed (``additionalProperties: false``):
        a field they do not take (``nome``, ``k``) is a 422 (api_routes.form_fields), which
        the form bodies FastAPI writes did not say."""
        if app.openapi_schema is None:
            schemas = FastAPI.openapi(app)["components"]["schemas"]
            for body in FORM_BODIES:
                schemas[body]["additionalProperties"] = False
        return app.openapi_schema

    app.openapi = openapi
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
    # around every refusal made before the body is read: its connection closes, not drained
    app.add_middleware(guards.CloseUnread)
    if settings.root_path:  # outermost: every middleware's page and the 500's see it
        app.add_middleware(guards.RootPath, root_path=settings.root_path)
    return app
