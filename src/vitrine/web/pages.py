"""The web page: catalogue, product page with similar products, and search by photo.

Server-rendered with Jinja2 (autoescaped) and one small script that adds drag and drop and
in-place results; every page works without JavaScript. Portuguese by default, English with
``?lang=en``. Handlers are plain ``def`` (run in the thread pool), like the API's. The
addresses the pages write are made by :mod:`vitrine.web.links`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from vitrine.catalog import CATEGORY_MAX, reader_order
from vitrine.config import Settings
from vitrine.errors import ImageError, ServerBusy, StoreError, VitrineError
from vitrine.fold import fold
from vitrine.image_checks import MAX_PHOTO_SIDE
from vitrine.images import MIN_QUERY_SIDE
from vitrine.service import VitrineService
from vitrine.store.base import Match, StoredProduct
from vitrine.web import guards
from vitrine.web.categories import (
    CategoryNames,
    category_names,
    largest,
    near_categories,
)
from vitrine.web.filters_form import (
    NO_FILTER,
    catalogue_listing,
    filter_context,
    read_filter,
)
from vitrine.web.links import (
    PAGE_MAX,
    catalogue_back,
    image_url,
    page_url,
    product_path,
    root_path,
)
from vitrine.web.text import (
    ERROR_KEYS,
    TEXT,
    category_label,
    format_chance,
    format_price,
    limit_number,
    number,
    percent,
    pick_lang,
    products_count,
)

HERE = Path(__file__).parent
PAGE_SIZE = 24
SIMILAR_K = 10
SEARCH_K = 10
SEARCH_WAIT_S = 60
"""How long the page's script waits for a photo's results before it says the server did not
answer (a search takes well under a second; a hung server left "Searching…" for ever)."""
CATEGORY_SELECT_MAX = 100
"""Up to this many categories the pages' category field is a list of them all; a store with
more gets a text field suggesting the largest this many (20,000 options made each page 1.5 MB
and the list unusable)."""
JSON_PREFIXES = ("/api/", "/images/", "/healthz", "/openapi.json", "/static/")
FRAGMENT_HEADER = "Vitrine-Fragment"
"""Marks the results block the search page's script puts in place: an HTML answer without it
(a reverse proxy's own 502 or 504 page) is not this server's and is said as a failure, not
put among the results."""

LangParam = Annotated[str | None, Query(description="pt (default) or en.")]


def wants_html(request: Request) -> bool:
    """True for a browser asking for a page (errors then render as a page, not JSON)."""
    return (not guards.own_path(request.scope).startswith(JSON_PREFIXES)
            and "text/html" in request.headers.get("accept", ""))


class AskedAgain(StaticFiles):
    """The pages' style sheet and script, at addresses that stay the same from one version to
    the next: ``no-cache``, so a browser asks each time (a 304 while unchanged). Without it a
    browser may reuse them for a tenth of their age unasked, and after an upgrade run the new
    pages with the old script (helper-221)."""

    def file_response(self, *args, **kwargs) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "no-cache"
        return response


def _decimal(amount: int, unit: int, lang: str) -> str:
    """A limit, ``amount / unit`` (:func:`limit_number`), as the page's language writes it:
    '5,2' in Portuguese, '5.2' in English; its whole part grouped as every other number of
    the pages ('2.500' in Portuguese, '2,500' in English: it read '2500 MB')."""
    whole, point, part = limit_number(amount, unit).partition(".")
    grouped = number(TEXT[lang], int(whole))
    return grouped + ("," if lang == "pt" else ".") + part if point else grouped


def summary(product: StoredProduct) -> str:
    """The description, or the product's attributes when it has none."""
    return product.description or " · ".join(v for v in product.attributes.values() if v)


def category_field(service: VitrineService, choices: dict[str, object] | None = None
                   ) -> dict[str, object]:
    """What the pages' category field shows: ``categories`` (name: products) to choose from,
    every named one in the store's order up to ``CATEGORY_SELECT_MAX``; past that,
    ``category_typed`` and the ``CATEGORY_SELECT_MAX`` largest (most products first, then by
    name) as suggestions of a text field, which writes a category (``typed_name``) by the
    name the pages show when that names it alone (:func:`typed_name`). Made once per count
    of the store's categories (:meth:`VitrineService.derived`): the counts of 20,000
    categories copied and picked from on every page took a few milliseconds each
    (helper-182). ``choices``: :func:`category_choices` of the counts a page read already
    (its total then agrees with the field's counts: helper-235)."""
    field = choices if choices is not None else service.derived(category_choices)
    if not field["category_typed"]:
        return field
    names = service.derived(category_names)
    return {**field, "typed_name": lambda category: typed_name(names, category)}


def category_choices(categories: dict[str, int]) -> dict[str, object]:
    """The categories a page's category field offers, and whether it is typed
    (:func:`category_field`)."""
    named = {name: n for name, n in categories.items() if name}
    if len(named) <= CATEGORY_SELECT_MAX:
        # in the order a reader expects, without case, accents or underscores: the store's
        # code-point order put "anel", "Ímã" and "Óculos" after "Zíper" (helper-222)
        return {"categories": reader_order(named), "category_typed": False}
    return {"categories": largest(named, CATEGORY_SELECT_MAX), "category_typed": True}


@dataclass(frozen=True)
class PageCategory:
    """A page's category filter: ``name`` as the store spells it ("" for none); for a
    category the store does not have, ``unknown`` and the stored ones ``near`` it."""

    name: str = ""
    unknown: bool = False
    near: tuple[str, ...] = ()


def typed_name(names: CategoryNames, category: str) -> str:
    """A stored category as a typed category field writes it: by the name the pages show
    ("Relogio feminino" for relogio_feminino), which :func:`page_category` finds again, when
    that name (in any case, without accents) is this category's alone; else (two categories
    shown alike, or one the store does not have) as it is spelled."""
    shown = category_label(category)
    return shown if names.named.get(fold(shown)) == [category] else category


def page_category(service: VitrineService, category: str | None) -> PageCategory:
    """A page's category filter as the store spells it: as
    :meth:`VitrineService.stored_category` finds it, and also without the spaces around it,
    in any case, without accents, or by the name the pages show ("Relógio masculino" for
    relogio_masculino), when exactly one category is so named. Otherwise it is kept as
    typed, marked unknown, with up to ``vitrine.web.categories.NEAR_CATEGORIES`` stored
    categories that contain it or are spelled close to it (the largest first)."""
    typed = (category or "").strip()
    if not typed:
        return PageCategory()
    for spelling in dict.fromkeys((category, typed)):  # (the app's own links keep the spaces
        found, held, _ = service.resolved_category(spelling)  # of a folder named " x_y ")
        if held:
            return PageCategory(found)  # (one row read; counting scans a Milvus collection)
    categories, names = service.categories_and(category_names)
    wanted = fold(typed)  # in any case, without accents, as name search compares
    named = names.named.get(wanted, [])
    if len(named) == 1:
        return PageCategory(named[0])
    return PageCategory(found, unknown=True, near=tuple(near_categories(wanted, categories,
                                                                        names)))


def _addressed(request: Request) -> str:
    """The category in a photo search's address (the no-JavaScript form carries the one it
    was shown with there), for an answer given without reading the form; the form's own
    field, when read, is the shopper's choice."""
    return request.query_params.get("category", "")[:CATEGORY_MAX]


class Pages:
    """Renders templates with the language's words and helpers."""

    def __init__(self, service: VitrineService, settings: Settings):
        self.service = service
        self.settings = settings
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(
            product_path=product_path, percent=percent, summary=summary,
            category_label=category_label, products_count=products_count, number=number,
            category_max=CATEGORY_MAX, search_wait_ms=SEARCH_WAIT_S * 1000)

    def max_mb(self, lang: str) -> str:
        """The upload limit in MB, as the page's language writes it ('0,3' in Portuguese)."""
        return _decimal(self.settings.max_upload_bytes, 1_000_000, lang)

    def photo_refused(self, exc: ImageError, lang: str) -> str:
        """The sentence for an uploaded file the search cannot use, by what is wrong."""
        t = TEXT[lang]
        if exc.kind == "pixels":
            return t["photo_pixels"].format(
                mp=_decimal(self.settings.max_image_pixels, 1_000_000, lang))
        if exc.kind == "side":
            return t["photo_side"].format(side=number(t, MAX_PHOTO_SIDE))
        if exc.kind == "small":
            return t["photo_small"].format(side=MIN_QUERY_SIDE)
        return t[{"damaged": "damaged_photo", "empty": "empty_photo"}.get(exc.kind,
                                                                         "bad_photo")]

    def render(self, request: Request, name: str, lang: str, status: int = 200,
               **context: object) -> HTMLResponse:
        t = TEXT[lang]
        other = "en" if lang == "pt" else "pt"
        params: dict[str, object] = {k: request.query_params.getlist(k) if k == "attr" else v
                                     for k, v in request.query_params.items() if k != "lang"}
        # the path as the browser sent it (still encoded): a decoded id can hold '?' or '#'
        raw = request.scope.get("raw_path") or quote(request.url.path, safe="/").encode()
        # one leading slash: '//other.site/x' would make the link leave for another site
        root = root_path(request)  # (starts every address the page writes)
        path = "/" + raw.decode("latin-1").removeprefix(root).lstrip("/\\")
        if request.method == "POST":  # a photo's results: the search form, in the same scope
            params = {"category": context.get("category") or None}
        params.update(context.pop("keep", {}))  # (what the other language's page keeps too)
        return self.templates.TemplateResponse(request, name, {
            "t": t, "lang": lang, "root": root,
            "url": lambda p, /, **q: root + page_url(p, lang, **q),
            "image_url": lambda product_id, size=None: root + image_url(product_id, size),
            "price": lambda v: format_price(v, lang),
            "chance": lambda p: format_chance(p, lang),
            "switch_url": root + page_url(path, other, **params),
            "max_bytes": self.settings.max_upload_bytes,
            "max_mb": self.max_mb(lang), "filters": NO_FILTER,
            **context}, status_code=status)

    def error(self, request: Request, status: int, sentence: str) -> HTMLResponse:
        """The error page, in the page's language: its own sentence for the usual statuses
        (``sentence``, the API's English one, is kept for the others on English pages)."""
        lang = pick_lang(request.query_params.get("lang"))
        t = TEXT[lang]
        key = ERROR_KEYS.get(status)
        if key == "bad_request" and getattr(request.state, "form_fields", False):
            key = "bad_form"  # (a field of the form, not the address)
        message = (t[key].format(mb=self.max_mb(lang)) if key
                   else sentence if lang == "en" else t["other_error"])
        # a photo search that failed (a POST: its category is in the form, not the address):
        # the other language's search form keeps it (the address's, when the form was not
        # read)
        searched = getattr(request.state, "search_category", None)
        if searched is None:
            searched = _addressed(request)
        keep = {"category": searched or None, **read_filter(request.query_params, lang).query
                } if request.method == "POST" else {}
        return self.render(request, "error.html", lang, status, status_code=status,
                           message=message, keep=keep)

    def search_results(self, request: Request, lang: str, fragment: bool, status: int,
                       **context: object) -> HTMLResponse:
        """The search page with its results block, or (``fragment``) the block alone; the
        filter fields show ``filters`` (else the address's: the form carries them there)."""
        filters = context.setdefault("filters", read_filter(request.query_params, lang))
        status = 400 if filters.error and status == 200 else status  # type: ignore[attr-defined]
        context["clear_url"] = root_path(request) + page_url(
            "/search", lang, category=context.get("category"))
        if not fragment or filters.error:  # type: ignore[attr-defined]
            # (the fields a bad filter marks, named by the results block's sentence too:
            # the page's script marks them by it)
            context.update(filter_context(self.service, filters))  # type: ignore[arg-type]
        if fragment:
            context.pop("category", None)
            response = self.render(request, "_results.html", lang, status, **context)
            response.headers[FRAGMENT_HEADER] = "results"
            return response
        return self.render(request, "search.html", lang, status, active="search",
                           **category_field(self.service), **context)

    def too_large(self, request: Request, category: str | None = None) -> HTMLResponse:
        """413 for a page request: the search page says the photo is too large (whether the
        app or, from the Content-Length, the body guard refused it), other pages the error.
        ``category``: the form's, once it was read; else the one the form's address carries
        (the body guard reads none of the body)."""
        lang = pick_lang(request.query_params.get("lang"))
        if guards.own_path(request.scope) != "/search":
            return self.error(request, 413, "")
        return self._search_message(request, lang, 413,
                                    TEXT[lang]["too_large"].format(mb=self.max_mb(lang)),
                                    _addressed(request) if category is None else category)

    def cut_off(self, request: Request) -> HTMLResponse:
        """400 for a photo search whose form ended before its closing boundary (the upload
        cut off on its way: guards.WholeForm); the category its address carries stays
        chosen."""
        lang = pick_lang(request.query_params.get("lang"))
        return self._search_message(request, lang, 400, TEXT[lang]["cut_off"],
                                    _addressed(request))

    def no_file(self, request: Request, category: str = "") -> HTMLResponse:
        """422 for a photo search whose form the framework refused: no photo chosen (a form
        sent without JavaScript holds an empty file part); ``category`` stays chosen."""
        lang = pick_lang(request.query_params.get("lang"))
        return self._search_message(request, lang, 422, TEXT[lang]["no_file"], category)

    def _search_message(self, request: Request, lang: str, status: int, message: str,
                        category: str = "") -> HTMLResponse:
        # the category as the form's results have it (a name typed "Relógio feminino" kept
        # chosen as relogio_feminino)
        try:
            chosen = page_category(self.service, category)
        except StoreError:  # (the refusal said as before, the category as typed)
            chosen = PageCategory(category or "")
        return self.search_results(request, lang, request.query_params.get("fragment") == "1",
                                   status, matches=None, message=message, guess=None,
                                   guess_linked=False, category=chosen.name, chosen=chosen)


def check_web_files() -> None:
    """The web pages' files must be in a folder (Vitrine imported from a zip: a traceback);
    checked before the server loads its model and opens its store (helper-185)."""
    if not (HERE / "static").is_dir():
        raise VitrineError(f"the web pages' files are not in a folder ({HERE}: Vitrine "
                           "imported from a zip?); install Vitrine unpacked (pip install) to "
                           "serve them.")


def install_pages(app: FastAPI, service: VitrineService, settings: Settings) -> None:
    """Add the page routes and the static files to ``app``."""
    pages = Pages(service, settings)
    app.state.render_error = pages.error
    app.mount("/static", AskedAgain(directory=HERE / "static"), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse,
                   include_in_schema=False)
    def catalogue(request: Request, lang: LangParam = None,
                  category: Annotated[str | None, Query(max_length=CATEGORY_MAX)] = None,
                  q: Annotated[str | None, Query(max_length=200)] = None,
                  page: Annotated[int, Query(ge=1, le=PAGE_MAX)] = 1) -> Response:
        lang = pick_lang(lang)
        query = (q or "").strip()
        asked = read_filter(request.query_params, lang)  # (a bad one: said on the page, 400)
        chosen = page_category(service, category)
        category = chosen.name or None  # as the store spells it
        categories, choices = service.categories_and(category_choices)
        listed = catalogue_listing(service, category, query, page, PAGE_SIZE, asked,
                                   categories)
        return pages.render(request, "catalogue.html", lang, active="catalogue",
                            # past the end: no such page (a 200 is a page crawlers keep)
                            status=400 if asked.error else 404 if page > 1 and not
                            listed["products"] else 200, **listed,
                            **category_field(service, choices), category=category or "",
                            q=query, page=page, chosen=chosen,
                            **filter_context(service, asked))

    @app.api_route("/products/{product_id:path}", methods=["GET", "HEAD"],
                   response_class=HTMLResponse, include_in_schema=False)
    def product_page(request: Request, product_id: str, lang: LangParam = None,
                     same: bool = True) -> Response:
        """A product and its similar products, from its own category (the reference design
        showing a women's watch men's sneakers was a flaw to mend) or, with ``same=0``, from
        every category. A product with no category gets them from every one."""
        lang = pick_lang(lang)
        asked = read_filter(request.query_params, lang)  # (a bad one: said on the page, 400)
        product, matches = (service.product(product_id), None) if asked.error else \
            service.similar(product_id, SIMILAR_K, same_category=same, where=asked.where)
        back, came = catalogue_back(request, lang)
        scope = None if same else 0  # (kept in the links to the similar products)
        response = pages.render(request, "product.html", lang, 400 if asked.error else 200,
                                active="product", product=product, matches=matches, same=same,
                                back=back, came=came, scope=scope,
                                keep={"back": came or None, "same": scope},
                                shared_by=service.placeholders().sharing(product),
                                same_photo=service.copies().same_photo,
                                **filter_context(service, asked))
        # the way back is read from the Referer: a shared cache must not give one shopper's
        # (or an attacker's) to the next
        response.headers["Vary"] = "Referer"
        return response

    @app.api_route("/search", methods=["GET", "HEAD"], response_class=HTMLResponse,
                   include_in_schema=False)
    def search_form(request: Request, lang: LangParam = None,
                    category: Annotated[str | None, Query(max_length=CATEGORY_MAX)] = None
                    ) -> Response:
        """The search form, with ``category`` chosen in "Buscar em" (the language toggle of a
        results page keeps it); one the store lacks is said, as the results say it."""
        chosen = page_category(service, category)
        return pages.search_results(request, pick_lang(lang), False, 200, matches=None,
                                    message=None, category=chosen.name, chosen=chosen)

    @app.post("/search", response_class=HTMLResponse, include_in_schema=False)
    def search_photo(request: Request, image: Annotated[UploadFile, File()],
                     category: Annotated[str, Form(max_length=CATEGORY_MAX)] = "",
                     lang: LangParam = None, fragment: bool = False,
                     min_price: Annotated[str, Form()] = "",
                     max_price: Annotated[str, Form()] = "",
                     attr: Annotated[list[str] | None, Form()] = None) -> Response:
        """Results (only of ``category`` when one is chosen, of the form's price and attribute
        filter) as a full page (form without JavaScript) or, with ``fragment=1``, as the HTML
        of the results block that the page script puts in place."""
        lang = pick_lang(lang)
        asked = read_filter({"min_price": min_price, "max_price": max_price, "attr": attr},
                            lang)
        matches: list[Match] | None = None
        guess, linked, same_photo = None, False, None
        message, status = None, 200
        request.state.search_category = category  # (an error page's toggle keeps it)
        chosen = page_category(service, category)
        category = request.state.search_category = chosen.name
        if asked.error:  # (said before the photo is read: no search to run)
            return pages.search_results(request, lang, fragment, 400, matches=None,
                                        message=None, category=category, chosen=chosen,
                                        filters=asked, keep=asked.query)
        try:
            data = guards.read_upload(image, settings.max_upload_bytes)
            matches, _, guess = service.search_photo(data, SEARCH_K, category or None,
                                                     resolved=True, where=asked.where)
            # link the category only if the store holds some of it (one-row lookup, not a
            # count of every category: that scans a Milvus collection)
            linked = guess is not None and service.has_category(guess.category)
            same_photo = service.copies().same_photo
        except ImageError as exc:
            message, status = pages.photo_refused(exc, lang), 400
        except ServerBusy:  # (said as such, not as the error page's 503: "the catalogue
            # is not available")
            message, status = TEXT[lang]["searches_busy"], 503
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            return pages.too_large(request, category)  # the form was read: keep its choice
        response = pages.search_results(request, lang, fragment, status, matches=matches,
                                        message=message, guess=guess, guess_linked=linked,
                                        category=category, chosen=chosen, filters=asked,
                                        keep=asked.query, same_photo=same_photo)
        if status == 503:
            response.headers["Retry-After"] = "2"
        return response

    app.state.render_too_large = pages.too_large
    app.state.render_cut_off = pages.cut_off
    app.state.render_no_file = pages.no_file
