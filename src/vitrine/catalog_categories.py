"""Category names as a reader compares them: without case, accents or underscores
(:func:`category_key`, kept for a store's names by :func:`stored_key`), in a reader's order,
the categories named alike counted (twins), and the sentences on twins and on products whose
table category is not their folder's."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from vitrine.fold import fold

CATEGORY_NAMES_KEPT = 1 << 17
"""Category names whose folded forms are kept (:func:`stored_key`,
``vitrine.web.categories``): a store's are folded again after each write, 1.3 s of the
interpreter at 60,000 categories, where only the new ones need it."""


def category_key(category: str) -> str:
    """What two spellings of one category share: no case, no accents, underscores as
    spaces, spaces trimmed and single ("Relógio_Feminino", " relogio feminino")."""
    return " ".join(fold(category.replace("_", " ")).split())


@functools.lru_cache(maxsize=CATEGORY_NAMES_KEPT)
def stored_key(category: str) -> str:
    """:func:`category_key` of a stored category's name, kept; never of a typed one (a
    page's filter: every filter a client sent was kept, 801 MB for 131,072 of 512
    characters)."""
    return category_key(category)


def reader_order(counts: dict[str, int]) -> dict[str, int]:
    """Categories' counts in the order a reader expects them, case, accents and underscores
    aside, as the pages' category field lists them ("Óculos" came after "x_tenis": the
    store's code-point order, helper-230)."""
    return {c: counts[c] for c in sorted(counts, key=lambda c: (stored_key(c), c))}


def categories_by_key(known: Iterable[str]) -> dict[str, list[str]]:
    """``known`` categories by :func:`category_key`: those a filter written in another case,
    without accents or with spaces for underscores may mean."""
    keyed: dict[str, list[str]] = {}
    for category in known:
        keyed.setdefault(stored_key(category), []).append(category)
    return keyed


def named_alike(category: str, keyed: dict[str, list[str]]) -> list[str]:
    """The categories of ``keyed`` (:func:`categories_by_key`) that ``category`` names in
    another case, without accents or with spaces for underscores; none for one that is only
    underscores or spaces ("_" is no other spelling of "no category")."""
    key = category_key(category)
    return keyed.get(key, []) if key else []


def counted_twins(counts: dict[str, int]) -> list[list[dict]]:
    """:func:`category_twins` of categories counted already (a store's)."""
    groups: dict[str, dict[str, int]] = {}
    for category, count in counts.items():
        groups.setdefault(stored_key(category), {})[category] = count
    return sorted(([{"category": c, "products": n} for c, n in sorted(group.items())]
                   for group in groups.values() if len(group) > 1),
                  key=lambda twins: twins[0]["category"])


def category_twins_note(groups: list[list[dict]], shown: int = 3) -> str:
    """One sentence on :func:`category_twins`'s groups, naming the first few; empty if
    none."""
    if not groups:
        return ""
    named = "; ".join(" and ".join(f"{t['category']!r} ({t['products']})" for t in group)
                      for group in groups[:shown])
    more = f"; and {len(groups) - shown} more" if len(groups) > shown else ""
    return (f"Categories that differ only in case, accents or spaces are shown as separate "
            f"ones: {named}{more}. Write each alike in the product table (or name its folder "
            "so).")


def recategorised_note(items: list[dict], shown: int = 3) -> str:
    """One sentence on :func:`recategorised`'s products, naming the first few; empty if none."""
    if not items:
        return ""
    named = ", ".join(f"{i['product_id']} ({i['category']!r}, folder {i['folder']!r})"
                      for i in items[:shown])
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return (f"{len(items)} product(s) take their category from the product table, not from "
            f"their photo's folder: {named}{more}.")
