"""A store's categories as a person types them, compared with the names the pages show:
the stored categories near one the store does not have, which the pages and
`vitrine similar --category` suggest alike."""

from __future__ import annotations

import difflib
import functools
import heapq
from dataclasses import dataclass

from vitrine.catalog import CATEGORY_NAMES_KEPT, stored_key
from vitrine.fold import fold
from vitrine.web.text import category_label

NEAR_CATEGORIES = 8
"""Stored categories suggested for one the store does not have."""
CLOSE_SPELLING_MAX = 1_000
"""A category the store does not have is compared letter by letter (difflib) with this many
stored ones at most, the largest (then by name): all of them up to this many; compared with
each of 20,000, a misspelt one took 0.4 s of CPU a page, the server's one interpreter held."""


def largest(categories: dict[str, int], n: int) -> dict[str, int]:
    """The ``n`` largest named categories: most products first, then by name (as a reader
    orders them, as the pages' category field lists them)."""
    return dict(heapq.nsmallest(n, ((name, count) for name, count in categories.items()
                                    if name), key=lambda item: (
        -item[1], stored_key(item[0]), item[0])))


@dataclass(frozen=True)
class CategoryNames:
    """A store's categories as a typed one is compared with them, made once per count of
    them (:func:`category_names`)."""

    forms: list[tuple[str, str, str]]
    """Each named category, its name folded (without the spaces around it) and its shown
    name folded."""
    named: dict[str, list[str]]
    """Either folded form to the categories so named."""
    spelled: dict[str, str]
    """Shown names folded, of the ``CLOSE_SPELLING_MAX`` largest categories, to their
    category: the names a typed one is compared with letter by letter."""


def category_names(categories: dict[str, int], spelled: int | None = None
                   ) -> CategoryNames:
    """What a typed category is compared with, kept with the counts
    (:meth:`VitrineService.categories_and`): folding a store's 20,000 names again for each
    page took 0.1 s of CPU. Letter by letter with the ``spelled`` largest
    (``CLOSE_SPELLING_MAX`` by default: a server's bound; a command compares them all)."""
    forms = [(c, *_folded(c)) for c in categories if c]
    named: dict[str, list[str]] = {}
    for c, folded, shown in forms:
        for form in dict.fromkeys((folded, shown)):
            named.setdefault(form, []).append(c)
    compared = largest(categories, CLOSE_SPELLING_MAX if spelled is None else spelled)
    return CategoryNames(forms, named,
                         {shown: c for c, _, shown in forms if c in compared})


@functools.lru_cache(maxsize=CATEGORY_NAMES_KEPT)
def _folded(category: str) -> tuple[str, str]:
    """A category's name and shown name, folded (kept: the names of every category were
    folded again after each write)."""
    return fold(category.strip()), fold(category_label(category))


def near_categories(wanted: str, categories: dict[str, int], names: CategoryNames
                    ) -> list[str]:
    """Up to ``NEAR_CATEGORIES`` of ``categories`` (their counts; ``names``:
    :func:`category_names` of them) that ``wanted``, a category the store does not have as
    typed, without the spaces around it, then :func:`fold`-ed, may mean: those whose name
    or shown name holds it (in any case, without accents), else those spelled close to it
    (a letter wrong or missing: "relogo feminino"); the largest first, then by name."""
    if not wanted:
        return []
    near = [c for c, folded, shown in names.forms if wanted in folded or wanted in shown]
    if not near:
        near = [names.spelled[f]
                for f in difflib.get_close_matches(wanted, names.spelled, NEAR_CATEGORIES)]
    near.sort(key=lambda c: (-categories[c], c))
    return near[:NEAR_CATEGORIES]
