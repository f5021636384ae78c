"""Price and attribute filters that run inside the vector query (issue 6), on both stores:
the embedded store's SQLite row ids (:meth:`ProductFilter.sql`), Milvus's filter expression
(:meth:`ProductFilter.milvus`)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vitrine.store.milvus_support import quote


@dataclass(frozen=True)
class ProductFilter:
    """Products priced from ``min_price`` to ``max_price`` (both included; a product without
    a price matches no bound) holding every one of ``attributes`` (key, value) exactly. An
    empty filter (nothing set) filters nothing and is false."""

    min_price: float | None = None
    max_price: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("min_price", "max_price"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int | float) \
                        or not math.isfinite(value):
                    raise ValueError(f"{name.replace('_', ' ')} must be a finite number, "
                                     f"not {value!r}.")
                object.__setattr__(self, name, float(value))
        if self.min_price is not None and self.max_price is not None \
                and self.min_price > self.max_price:
            raise ValueError(f"the minimum price ({self.min_price:g}) is above the maximum "
                             f"price ({self.max_price:g}).")
        pairs = tuple((str(k), str(v)) for k, v in self.attributes)
        if any(not k for k, _ in pairs):
            raise ValueError("an attribute filter needs a key (KEY=VALUE).")
        object.__setattr__(self, "attributes", pairs)

    def __bool__(self) -> bool:
        return self.min_price is not None or self.max_price is not None \
            or bool(self.attributes)

    def admits(self, price: float | None, attributes: dict) -> bool:
        """Whether a product of ``price`` and ``attributes`` is one the filter lets through,
        as the stores' queries tell (a Milvus page checks the rows of an order it kept)."""
        if (self.min_price is not None or self.max_price is not None) and price is None:
            return False
        if self.min_price is not None and price < self.min_price \
                or self.max_price is not None and price > self.max_price:
            return False
        return all(attributes.get(key) == value for key, value in self.attributes)

    def sql(self, indexed: bool = False) -> tuple[str, list]:
        """A WHERE clause over the ``products`` table, testing a row (a catalogue page's
        rows tested in the listing's order), and its parameters. ``indexed``: the store's
        attribute index is there whole (:mod:`vitrine.store.attribute_index`), and each
        attribute is looked up there by the row's id and the key (its primary key). Else
        it is read from the JSON object, ``json.dumps``'s: a key read by its quoted JSON
        path, or, one that is written there escaped, found through ``json_each``."""
        clauses, params = self._prices()
        for key, value in self.attributes if indexed else ():
            clauses.append("EXISTS (SELECT 1 FROM product_attributes AS a WHERE "
                           "a.id = products.id AND a.key = ? AND a.value = ?)")
            params += [key, value]
        for key, value in () if indexed else self.attributes:
            # (a quote or a backslash a JSON path cannot quote; an accent, a control
            # character: the stored key's "\u00ea", which SQLite 3.40's path compared as
            # written, so "Gênero" found nothing where Milvus found its products)
            if json.dumps(key)[1:-1] != key:
                clauses.append("EXISTS (SELECT 1 FROM json_each(products.attributes) "
                               "WHERE json_each.key = ? AND json_each.value = ? "
                               "AND json_each.type = 'text')")
                params += [key, value]
            else:  # (2.5 times faster: 59 against 146 ms over 100,000 products)
                clauses.append("json_extract(attributes, ?) = ?")
                params += [f'$."{key}"', value]
        return " AND ".join(clauses) or "1", params

    def ids_sql(self, indexed: bool = False) -> tuple[str, list]:
        """A query of the row ids of the products the filter lets through (in no order) and
        its parameters. ``indexed`` (as :meth:`sql`), with attributes: the first attribute's
        products in the price range, one range of the attribute index (key, value, price),
        each then looked up for the others by its id and their keys (the store puts the
        attribute of the fewest products first: :meth:`EmbeddedReads._filter_ids_sql`); no
        product's row or JSON read (every product's JSON parsed: 53-75 ms at 100,000
        products; ``benchmarks/filter_search.py``). Its rows are the text values, exact:
        what the JSON clauses of :meth:`sql` let through."""
        if not indexed or not self.attributes:
            clause, params = self.sql(indexed)
            return f"SELECT id FROM products WHERE {clause}", params
        prices, bounds = self._prices()
        (key, value), *others = self.attributes
        within = "".join(f" AND a0.{clause}" for clause in prices)
        also = "".join(" AND EXISTS (SELECT 1 FROM product_attributes AS a WHERE a.id = a0.id "
                       "AND a.key = ? AND a.value = ?)" for _ in others)
        return (f"SELECT a0.id FROM product_attributes AS a0 WHERE a0.key = ? AND "
                f"a0.value = ?{within}{also}",
                [key, value, *bounds, *(part for pair in others for part in pair)])

    def _prices(self) -> tuple[list[str], list]:
        clauses, params = [], []
        if self.min_price is not None:
            clauses.append("price >= ?")
            params.append(self.min_price)
        if self.max_price is not None:
            clauses.append("price <= ?")
            params.append(self.max_price)
        return clauses, params

    def milvus(self) -> list[str]:
        """The terms of a Milvus filter expression (joined with ``and``)."""
        terms = []
        if self.min_price is not None:
            terms.append(f"price >= {self.min_price!r}")
        if self.max_price is not None:
            terms.append(f"price <= {self.max_price!r}")
        terms += [f"attributes[{quote(k)}] == {quote(v)}" for k, v in self.attributes]
        return terms


MAX_ATTRIBUTES = 20
"""The most attributes one search is filtered by (each one more SQL clause or Milvus term:
an address of thousands of them is refused rather than sent to the store)."""


def parse_filter(min_price: str | float | None = None, max_price: str | float | None = None,
                 attrs: Sequence[str] = (), *,
                 names: tuple[str, str, str] = ("the minimum price", "the maximum price",
                                                "an attribute filter")
                 ) -> ProductFilter | None:
    """A filter from a command's or a request's values (``attrs``: ``KEY=VALUE``, split at
    the first ``=``), None when none is given; a ValueError of one sentence, naming
    the value as ``names`` call them, for a price that is no finite number, a minimum above
    the maximum, or an attribute without its key or separator."""
    prices: list[float | None] = []
    for name, value in zip(names[:2], (min_price, max_price), strict=True):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"{name} must be a number, not {value!r}.") from None
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, not {value!r}.")
        prices.append(value)
    if prices[0] is not None and prices[1] is not None and prices[0] > prices[1]:
        raise ValueError(f"{names[0]} ({prices[0]:g}) is above {names[1]} ({prices[1]:g}).")
    if len(attrs) > MAX_ATTRIBUTES:
        raise ValueError(f"{names[2]} is given {len(attrs)} times; at most "
                         f"{MAX_ATTRIBUTES} attributes can filter one search.")
    pairs = []
    for attr in attrs:
        cut = attr.find("=")
        if cut <= 0:
            raise ValueError(f"{names[2]} is written KEY=VALUE, not {attr!r}.")
        pairs.append((attr[:cut], attr[cut + 1:]))
    return ProductFilter(prices[0], prices[1], tuple(pairs)) or None
