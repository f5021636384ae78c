"""The REST API's routes under ``/api`` (:func:`_api_router`, included by
:func:`vitrine.api.create_app`): products listed, looked up and searched by photo, and added,
edited and deleted with the API key; with what their requests are checked against on the way
in: the form fields each route takes, a product's own address, the listing's page cursors
and a JSON body's encoding."""

from __future__ import annotations

import base64
import json
import re
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Security
from fastapi import UploadFile as Upload
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette import convertors
from starlette.convertors import register_url_convertor

from vitrine.api_errors import _json_body, errors
from vitrine.api_models import (
    CategoryGuessOut,
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
from vitrine.errors import CatalogError
from vitrine.service import VitrineService
from vitrine.service_writes import NewProduct
from vitrine.store.base import StoredProduct
from vitrine.store.filters import ProductFilter, parse_filter
from vitrine.store.search_key import listing_order
from vitrine.web import guards

K_MIN, K_MAX = 1, 100
PAGE_MAX = 200
OFFSET_MAX = 1_000_000_000
KParam = Annotated[int, Query(ge=K_MIN, le=K_MAX, description="Number of results (1–100).")]
CategoryParam = Annotated[str | None, Query(max_length=CATEGORY_MAX,
                                            description="Only products of this category.")]
PRICE_NUMBER = ("a number as JSON writes it: a dot before the decimals, no thousands "
                "separator, so 49.906 is under R$ 50 and 1.299 under R$ 2, never thousands; "
                "'49,90' is a 422")
"""How the API reads a price bound (float(): a program's number). The pages take the same
names in their addresses and read a bound as a shopper types it in reais ('1.299' is
R$ 1.299: :mod:`vitrine.web.filters_form`), and write none that the two read otherwise."""
MinPriceParam = Annotated[str | None, Query(
    max_length=40, description=f"Only products priced at least this ({PRICE_NUMBER}; a "
                               "product without a price is left out).")]
MaxPriceParam = Annotated[str | None, Query(
    max_length=40, description=f"Only products priced at most this ({PRICE_NUMBER}).")]
AttrParam = Annotated[list[str] | None, Query(
    description="Only products whose attribute KEY is VALUE exactly, written KEY=VALUE "
                "(repeat it: each must hold).")]
ImageParam = Annotated[Upload, File(description="The photo (JPEG, PNG, WebP, GIF, BMP, TIFF, "
                                                "AVIF, HEIC).",
                                    # (OpenAPI 3.1's contentMediaType alone: generated
                                    # clients sent the photo as a text field, a 422)
                                    json_schema_extra={"format": "binary"})]
WRITE_ERRORS = errors(401, 403, 409)
SAVED = {"model": SavedOut, "description": "Saved, but the server stopped before it could "
                                           "answer with the product (a DELETE: deleted)."}
"""The 200 a write cut off after its change was made is answered with (guards.Stopping)."""
BEARER = HTTPBearer(auto_error=False, description="The server's VITRINE_API_KEY.")
ADD_FIELDS = ("image", "product_id", "name", "category", "price", "description")
"""The form fields ``POST /api/products`` takes."""
SEARCH_FIELDS = ("image", "category")
"""The form fields ``POST /api/search`` takes (``k`` and the price and attribute filters go
in the address)."""
FILTER_PARAMS = ("min_price", "max_price", "attr")
TOTAL_PARAM = ("Also count the products the listing holds in all (`total`; a name search, "
               "`q`, is not counted: null). Off by default: a filtered count reads every "
               "matching product's index entry (a few ms on a large store).")


def listing_total(service: VitrineService, category: str | None, query: str | None,
                  where: ProductFilter | None) -> int | None:
    """How many products ``GET /api/products`` lists in all, on every page: of ``category``
    and ``where`` as the store counts them (an unfiltered listing's from the category
    counts the pages share, :meth:`VitrineService.categories`); None for a name search
    (``query``), which no store counts."""
    if (query or "").strip():
        return None
    of = service.stored_category(category)
    if where:
        return service.count_products(of, where)
    counts = service.categories()
    return counts.get(of, 0) if of is not None else sum(counts.values())


def product_filter(min_price: str | None, max_price: str | None, attr: list[str] | None
                   ) -> ProductFilter | None:
    """The query's price and attribute filter (None: none sent); a 422 of one sentence for
    a price that is no number, a minimum above the maximum or an attr without '='."""
    try:
        return parse_filter(min_price or None, max_price or None, attr or (),
                            names=("min_price", "max_price", "attr"))
    except ValueError as exc:
        raise HTTPException(422, f"Invalid query parameter: {exc}") from None


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
                          "the same filters.")] = None,
                      min_price: MinPriceParam = None, max_price: MaxPriceParam = None,
                      attr: AttrParam = None,
                      total: Annotated[bool, Query(description=TOTAL_PARAM)] = False
                      ) -> ProductPage:
        """Products in category order, then name order (as a reader sorts names: case and
        accents aside), filtered by category, by a part of the name or id, by price (from
        ``min_price`` to ``max_price``) and by attributes ``attr=KEY=VALUE``, as similar
        and search are. Page by ``next_cursor`` to walk a catalogue that changes meanwhile
        (by ``offset``, a product added or removed before the page moves the rest by one:
        one listed twice or missed). With ``total=1``, also how many products the listing
        holds in all: a count a page does not pay for unasked (an attribute's first page of
        a 100,000-product store took 3.4 ms, 6.3 ms with its count)."""
        where = product_filter(min_price, max_price, attr)
        after = None
        if cursor:  # (an empty one, as a client writes the first page's: none)
            if offset:
                raise HTTPException(422, "Send offset or cursor, not both.")
            after = cursor_place(cursor)
        found, more = service.products(category=category, query=q, limit=limit, offset=offset,
                                       after=after, where=where)
        return ProductPage(products=[product_out(p, root) for p in found], limit=limit,
                           offset=offset, has_more=more,
                           next_cursor=page_cursor(found[-1]) if more else None,
                           total=listing_total(service, category, q, where) if total
                           else None)

    @router.get("/products/{product_id:path}" + SIMILAR_SUFFIX, response_model=SimilarOut,
                responses=errors(404))
    def similar(product_id: str, k: KParam = 5, category: CategoryParam = None,
                min_price: MinPriceParam = None, max_price: MaxPriceParam = None,
                attr: AttrParam = None) -> SimilarOut:
        """The ``k`` products most similar to a stored product (itself and its copies, the
        same photo under another id, excluded, and the products of placeholder photos), of
        ``category``, prices from ``min_price`` to ``max_price`` and attributes
        ``attr=KEY=VALUE`` only when given."""
        where = product_filter(min_price, max_price, attr)
        product, matches = service.similar(product_id, k, category, where=where)
        held, copies = service.placeholders(), service.copies()
        return SimilarOut(product=product_out(product, root),
                          results=[result_out(m, root, copies) for m in matches],
                          placeholder=held.sharing(product) > 0,
                          placeholders_left_out=held.left_out(product))

    @router.get("/products/{product_id:product_id}", response_model=ProductOut,
                responses=errors(404))
    def get_product(product_id: str) -> ProductOut:
        return product_out(service.product(product_id), root)

    @router.post("/search", response_model=SearchOut, responses={**errors(400, 413), 200: {
                     "headers": {"Server-Timing": {
                         "description": "decode, model and search times (ms).",
                         "required": True, "schema": {"type": "string"}}}}},
                 dependencies=[Depends(form_fields(SEARCH_FIELDS, ("k", *FILTER_PARAMS)))])
    def search(image: ImageParam, response: Response, k: KParam = 5,
               category: CategoryParam = None,
               category_field: Annotated[str | None, Form(
                   alias="category", max_length=CATEGORY_MAX,
                   description="The same filter, sent as a form field.")] = None,
               min_price: MinPriceParam = None, max_price: MaxPriceParam = None,
               attr: AttrParam = None) -> SearchOut:
        """The ``k`` products most similar to an uploaded photo (multipart field ``image``),
        only of ``category`` when given (in the address or as a form field; in both, they
        must name the same category, else 422), of prices from ``min_price`` to
        ``max_price`` and attributes ``attr=KEY=VALUE`` (in the address) only when given.
        The ``Server-Timing`` header tells decode, model and search times."""
        where = product_filter(min_price, max_price, attr)
        if category and category_field and service.stored_category(category) != \
                service.stored_category(category_field):
            raise HTTPException(422, f"Two categories were sent ({category!r} in the address, "
                                     f"{category_field!r} in the form); send one.")
        matches, timings, guess = service.search_photo(guards.read_upload(image, limit), k,
                                                       category or category_field,
                                                       where=where)
        response.headers["Server-Timing"] = timings.server_timing()
        copies = service.copies()
        return SearchOut(results=[result_out(m, root, copies) for m in matches],
                         predicted_category=guess and CategoryGuessOut(**guess.as_dict()),
                         placeholders_left_out=service.placeholders().left_out())

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
        similar products stay (no forward pass). A product a row of the catalogue's table
        names gets the row's values back at the next ``vitrine index``; one no row names (a
        catalogue without a table) keeps the edit. Needs ``Authorization: Bearer <key>``."""
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
