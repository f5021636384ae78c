"""The addresses the web pages write: a page's own, with its language and filter
(:func:`page_url`), a product's and its photo's, the path prefix a reverse proxy serves the
app under, and the way back from a product page to the catalogue page the shopper came
from (:func:`catalogue_back`)."""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qs, quote, urlencode, urlsplit

from fastapi import Request

from vitrine.catalog import CATEGORY_MAX
from vitrine.web import guards
from vitrine.web.filters_form import read_filter

PAGE_MAX = 100_000
"""The last catalogue page asked for that is answered (a larger number is a 422)."""


def page_url(path: str, lang: str, /, **params: object) -> str:
    """``path`` with ``params`` (those not None or "") and ``lang`` unless Portuguese as its
    query. Positional-only: a page's own query parameters are passed as ``params``, and one
    named ``path`` or ``lang`` (``/?path=x``) made every page a 500."""
    query = {k: v for k, v in params.items() if v not in (None, "")}
    if lang != "pt":
        query["lang"] = lang
    # (a list: a parameter repeated, the filter's attr=KEY=VALUE)
    return path + ("?" + urlencode(query, doseq=True) if query else "")


def image_url(product_id: str, size: str | None = None) -> str:
    """The address of a product's photo; ``size='card'`` asks for the small copy the
    catalogue and result cards show, ``size='view'`` for the one a product page shows (a
    large photo bounded, not sent whole)."""
    return "/images/" + quote(product_id, safe="") + (f"?size={size}" if size else "")


def product_path(product_id: str) -> str:
    return "/products/" + quote(product_id, safe="")


def root_path(request: Request) -> str:
    """The path prefix a reverse proxy serves the app under (``VITRINE_ROOT_PATH``: the
    scope's ``root_path``), "" for none: every address a page writes starts with it (the
    app's own paths, which its routes match and :func:`guards.own_path` gives, do not)."""
    return guards.root_of(request.scope)


def _referer(request: Request) -> SplitResult | None:
    """The request's ``Referer``, split; None for one that cannot be read as an address
    (``http://[::1``: urlsplit's ValueError made every product page a 500)."""
    try:
        return urlsplit(request.headers.get("referer", ""))
    except ValueError:
        return None


def catalogue_back(request: Request, lang: str) -> tuple[str, str]:
    """The catalogue page the shopper came from, with its category, name search, page and
    price and attribute filter (without it, page 2 of another list: hunt385), from the
    Referer (which this site sends to itself only), else the catalogue's first; and that
    page's query, which the product page's own links carry as ``back`` (after one of them
    the Referer is the product page: the way back led to the first page). Under a path
    prefix (:func:`root_path`) the catalogue's address is the prefix's."""
    root = root_path(request)
    if "back" in request.query_params:
        query = parse_qs(request.query_params["back"][:8000])  # (a category's 512
        # characters, percent-encoded: up to 12 each, 6,144 in all)
    elif (came := _referer(request)) is not None and came.netloc == request.url.netloc \
            and came.path == root + "/":
        query = parse_qs(came.query)
    else:
        query = {}
    kept: dict[str, object] = {k: query[k][0][:CATEGORY_MAX if k == "category" else 200]
                               for k in ("category", "q", "page") if k in query}
    page = str(kept.get("page", "1"))
    if not (page.isascii() and page.isdigit() and 1 <= int(page) <= PAGE_MAX):
        del kept["page"]  # (a page the catalogue refuses: '５', 10**20)
    chosen = read_filter({k: query.get(k, [None])[0] for k in ("min_price", "max_price")}
                         | {"attr": query.get("attr", [])}, lang)
    kept.update({k: v for k, v in chosen.query.items() if v and chosen.where})
    return root + page_url("/", lang, **kept), urlencode(kept, doseq=True)
