"""The price and attribute filter of the search and product pages: read from the address (a
filtered list is a link) or from the search form, checked with one sentence in the page's
language for a bad value (a 400 on the page, never a 500), said back beside the results
("Preço até R$ 50,00 · colour: Red"), and the attribute lists the fields offer.

The filter is the API's and the command line's (:class:`vitrine.store.filters.ProductFilter`:
both prices included, a product without a price matches no bound, each attribute matched
exactly), in the API's address form: ``min_price``, ``max_price`` and ``attr=KEY=VALUE``
repeated, which the form's fields write as they are (a list of one key's values writes
``attr=colour=Red``; its "any" choice writes an empty ``attr``, which is no filter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from starlette.datastructures import ImmutableMultiDict

from vitrine.catalog import MAX_PRICE, parse_price
from vitrine.catalog_categories import reader_order
from vitrine.errors import CatalogError
from vitrine.store.filters import MAX_ATTRIBUTES, ProductFilter
from vitrine.web.text import TEXT, format_price

ATTRIBUTE_VALUES_MAX = 50
"""A key of at most this many values is offered as a list of them (the demo's ``colour``
has 32); one of more (a code, a free text) is not: a list of hundreds is unusable, and its
filter can still be written in the address."""
ATTRIBUTE_KEYS_MAX = 6
"""Lists offered at most, for the keys the most products hold (a form of 20 lists, one per
key a catalogue table's columns made, buried the price fields)."""
PRICE_TEXT_MAX = 40
"""A price field longer than this is no price (said so, cut, not echoed whole)."""
SHOWN_MAX = 40
"""How much of a refused value a sentence repeats."""
ATTRS_SHOWN_MAX = 100
"""Attributes a refused filter shows in its fields at most (the sentence says how many more
were sent: a resubmitted form leaves them out); those refused for being too many (over
:data:`MAX_ATTRIBUTES`) are all shown up to it, to choose which to drop (only the first 20
were, the rest left out of the next search unsaid: hunt395)."""


@dataclass(frozen=True)
class PageFilter:
    """A page's filter: its prices as the fields show them (a number a number field takes:
    '49.9' for '49,90' in the address), its ``KEY=VALUE`` attributes, the store's filter
    (None: nothing to filter), and, for a bad value, the sentence saying it (``error``) and
    what it is about: the ids of the price fields to mark (``invalid``) and the attribute
    values refused (``refused``: each not written KEY=VALUE, or every one when too many;
    the fields holding them are marked, by the server's page and by the page's script,
    which matches the values its own fields hold: ids numbered by the server named another
    field once the shopper had emptied one, hunt395)."""

    min_price: str = ""
    max_price: str = ""
    attrs: tuple[str, ...] = ()
    where: ProductFilter | None = None
    error: str | None = None
    invalid: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()
    summary: str = ""
    """What the filter keeps, as the results say it ("Preço até R$ 50,00 · colour: Red")."""

    @property
    def query(self) -> dict[str, object]:
        """The filter as an address's query (the page's own links carry it; empties left
        out by the pages' ``_url``)."""
        return {"min_price": self.min_price or None, "max_price": self.max_price or None,
                "attr": list(self.attrs) or None}


NO_FILTER = PageFilter()


@dataclass(frozen=True)
class AttributeField:
    """One attribute key's list: its values (as a reader orders them) and the one chosen."""

    key: str
    label: str
    values: list[str] = field(default_factory=list)
    chosen: str | None = None
    field_id: str = ""


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "…"


def _field_text(value: float) -> str:
    """A price as the field and the page's links write it: no exponent, no thousands, at
    most two decimals after a dot (never three digits after it: "1.125" would be read
    back as R$ 1.125, as :func:`_price` reads a price)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


class _Refused(ValueError):
    def __init__(self, sentence: str, *fields: str, refused: tuple[str, ...] = ()):
        super().__init__(sentence)
        self.fields = fields
        self.refused = refused


def _price(text: str | None, which: str, lang: str) -> float | None:
    """A price field: a number as the field sends it ('49.9'), or as a shopper writes one in
    reais ('49,90', 'R$ 1.299,90', '1.299': a dot or comma before exactly three digits
    groups thousands, as the catalogue table's prices are read; float() first read '1.299'
    as R$ 1,30), from 0 to ``MAX_PRICE``; blank is no bound."""
    t = TEXT[lang]
    text = (text or "").strip()
    if not text:
        return None
    name = t["min_price_name" if which == "min-price" else "max_price_name"]
    refused = _Refused(t["filter_not_price"].format(field=name, value=_shown(text)), which)
    if len(text) > PRICE_TEXT_MAX:
        raise refused
    try:
        value: float | None = parse_price(text)
    except CatalogError:  # ('-5', '1e300': said out of range below)
        try:
            value = float(text)
        except ValueError:
            raise refused from None
    if value is None or not math.isfinite(value):  # ('sob consulta', 'nan', 'inf')
        raise refused
    if not 0 <= value <= MAX_PRICE:  # (1e300: no price, and none the pages can write)
        raise _Refused(t["filter_price_range"].format(
            field=name, value=_shown(text), most=format_price(MAX_PRICE, lang)), which)
    return value


def _attributes(attrs: list[str], t: dict[str, str]) -> tuple[str, ...]:
    """The ``KEY=VALUE`` attributes without the lists' empty "any" and repeats."""
    kept = tuple(dict.fromkeys(a for a in attrs if a))
    if len(kept) > MAX_ATTRIBUTES:
        raise _Refused(t["filter_too_many"].format(n=len(kept), most=MAX_ATTRIBUTES),
                       refused=kept)
    bad = tuple(attr for attr in kept if not well_written(attr))
    if bad:
        raise _Refused(t["filter_bad_attribute"].format(value=_shown(bad[0])), refused=bad)
    return kept


def well_written(attr: str) -> bool:
    """Whether an attribute filter is written ``KEY=VALUE`` (a key before its first '=')."""
    return attr.find("=") > 0


def read_filter(values: ImmutableMultiDict | dict, lang: str) -> PageFilter:
    """The filter of an address's query or a form (``min_price``, ``max_price``, ``attr``
    repeated), with the sentence for the first bad value among them."""
    t = TEXT[lang]
    getlist = getattr(values, "getlist", None)
    attrs = list(getlist("attr")) if getlist else list(values.get("attr") or ())
    shown = {"min_price": str(values.get("min_price") or "").strip(),
             "max_price": str(values.get("max_price") or "").strip()}
    try:
        low = _price(values.get("min_price"), "min-price", lang)
        high = _price(values.get("max_price"), "max-price", lang)
        if low is not None and high is not None and low > high:
            raise _Refused(t["filter_price_order"].format(low=format_price(low, lang),
                                                          high=format_price(high, lang)),
                           "min-price", "max-price")
        kept = _attributes(attrs, t)
    except _Refused as refused:
        sent = tuple(dict.fromkeys(a for a in attrs if a))  # (a repeat filters nothing more)
        sentence = str(refused)
        if len(sent) > ATTRS_SHOWN_MAX:
            sentence += " " + t["filter_not_shown"].format(n=len(sent) - ATTRS_SHOWN_MAX)
        return PageFilter(shown["min_price"][:PRICE_TEXT_MAX],
                          shown["max_price"][:PRICE_TEXT_MAX], sent[:ATTRS_SHOWN_MAX], None,
                          sentence, refused.fields, refused.refused)
    pairs = tuple((a[:a.find("=")], a[a.find("=") + 1:]) for a in kept)
    where = ProductFilter(low, high, pairs) or None
    return PageFilter("" if low is None else _field_text(low),
                      "" if high is None else _field_text(high), kept, where,
                      summary=describe(where, lang) if where else "")


def describe(where: ProductFilter, lang: str) -> str:
    """What ``where`` keeps, in the page's language: "Preço de R$ 10,00 a R$ 50,00 ·
    colour: Red"."""
    t = TEXT[lang]
    low, high = where.min_price, where.max_price
    parts = []
    if low is not None and high is not None:
        parts.append(t["priced_between"].format(low=format_price(low, lang),
                                                high=format_price(high, lang)))
    elif low is not None:
        parts.append(t["priced_from"].format(low=format_price(low, lang)))
    elif high is not None:
        parts.append(t["priced_up_to"].format(high=format_price(high, lang)))
    parts += [f"{attribute_label(key)}: {value}" for key, value in where.attributes]
    return " · ".join(parts)


def attribute_label(key: str) -> str:
    """An attribute key as the product page shows it (``article_type``: "article type")."""
    return key.replace("_", " ")


def attribute_fields(values: dict[str, dict[str, int]], total: int, chosen: PageFilter
                     ) -> tuple[list[AttributeField], list[str]]:
    """The lists the filter offers, of the store's attribute ``values``
    (:meth:`VectorStore.attribute_values`; ``total``: products in the store): the
    :data:`ATTRIBUTE_KEYS_MAX` keys the most products hold, less a key whose one value every
    product holds (a list that filters nothing), each with its values and the one ``chosen``
    (a value the store lacks, from the address, is listed too: still chosen); and the
    ``chosen`` attributes no list shows, which the form carries as they are."""
    held = {key: sum(counts.values()) for key, counts in values.items()
            if key and "=" not in key  # (KEY=VALUE cannot name it)
            and (len(counts) > 1 or sum(counts.values()) < total)}
    keys = sorted(held, key=lambda key: (-held[key], key))[:ATTRIBUTE_KEYS_MAX]
    fields, rest = [], list(chosen.attrs)
    for key in keys:
        picked = next((a for a in rest if a.startswith(key + "=")), None)
        options = list(reader_order(values[key]))
        value = None
        if picked is not None:
            rest.remove(picked)
            value = picked[len(key) + 1:]
            if value not in values[key]:
                options.insert(0, value)
        label = attribute_label(key)
        fields.append(AttributeField(key, label[:1].upper() + label[1:], options, value,
                                     f"attr-{len(fields) + 1}"))
    return fields, rest


def _products(categories: dict[str, int]) -> int:
    return sum(categories.values())


def filter_context(service, chosen: PageFilter) -> dict[str, object]:
    """What the pages' filter fields show: ``filters`` (``chosen``), the attribute lists
    (``attr_fields``) and the chosen attributes no list shows (``hidden_attrs``), or, when
    the attributes were refused (``chosen.refused``), those shown as text fields
    (``typed_attrs``: their ids and values, the shopper's value kept to be mended); a field
    holding a refused value is marked (the template)."""
    fields, rest = attribute_fields(service.attribute_values(ATTRIBUTE_VALUES_MAX),
                                    service.derived(_products), chosen)
    if not chosen.refused:
        return {"filters": chosen, "attr_fields": fields, "hidden_attrs": rest,
                "typed_attrs": []}
    typed = [(f"attr-typed-{i}", value) for i, value in enumerate(rest, 1)]
    return {"filters": chosen, "attr_fields": fields, "hidden_attrs": [],
            "typed_attrs": typed}


def catalogue_listing(service, category: str | None, query: str, page: int, size: int,
                      asked: PageFilter, categories: dict[str, int]) -> dict[str, object]:
    """What the catalogue page lists at ``page`` (of ``size`` products) of ``category`` (as
    the store spells it; None: every one), name search ``query`` and filter ``asked``:
    ``products``, ``has_more``, ``total`` (from the store's ``categories`` counts, a
    filtered listing's counted by the store; None for a name search, not counted), the
    ``last`` page when the total is known, and whether a page ``before`` this one lists
    some. A bad filter (``asked.error``, said on the page) lists nothing."""
    if asked.error:
        return {"products": [], "has_more": False, "total": None, "last": None,
                "before": False}
    where = asked.where

    def listed(offset: int, limit: int) -> tuple[list, bool]:
        return service.products(category=category, query=query, limit=limit, offset=offset,
                                resolved=True, where=where)

    found, more = listed((page - 1) * size, size)
    if query:
        total = None
    elif where:
        total = service.count_products(category, where)
    else:
        total = categories.get(category, 0) if category else sum(categories.values())
    # pages in all, when the count is known (not for a name search): "Página 5 de 2"
    last = None if total is None else max(1, -(-total // size))
    # past the end of a name search: "previous" only if the page before has products
    before = bool(found) or last is None and page > 1 and bool(
        listed((page - 2) * size, 1)[0])
    return {"products": found, "has_more": more, "total": total, "last": last,
            "before": before}
