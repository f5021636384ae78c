"""Placeholder photos: one photo ("image coming soon", a grey card) that many products share.

Its vector is that of a grey card, not of any product, and it sat near ordinary products':
on the demo catalogue with 40 products of one such card and 20 of the card with each one's
SKU written on it, they took places in the similar lists of ordinary products
(``benchmarks/placeholder_lists.py``). A photo that at least ``VITRINE_PLACEHOLDER_MIN``
products share, counted with its copies (:mod:`vitrine.copies`: the same file, or photos
`index`'s duplicate search grouped with it), is a placeholder: its products are left out of
every other product's similar products and of photo searches, inside the store's search
(``exclude_photos``, as a product's copies are), and are still listed and found by name in
the catalogue. Left out rather than shown once: which of the products is shown would be
arbitrary, and its card says nothing of what a shopper looks for. A photo that fewer share
(a real one: a product listed once a size, 5 to 12 products) is no placeholder: it is shown
once in a list, its best-scored product (:func:`vitrine.copies.one_a_photo`).

The products of one photo file (its sha256: an exact copy needs no search) are counted by
each `vitrine index` (:func:`vitrine.dedupe_store.shared_photos`; also one that searches no
duplicates, above ``VITRINE_DUP_MAX_PRODUCTS``: ``recount_every_shared``) and again by each
write through the API (:func:`vitrine.dedupe_store.recount_shared`), saved with the
duplicate groups: a product added with a placeholder's file is one more of it at once.
Photos of other bytes count as the last `index` that searched for duplicates grouped them:
one added through the API since is grouped at the next one that searches."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

from vitrine.copies import Copies
from vitrine.store.base import StoredProduct


@dataclass(frozen=True)
class Placeholders:
    """The placeholder photos of a store (sha256s, every photo of their duplicate groups)
    and how many products they are."""

    photos: frozenset[str] = frozenset()
    products: int = 0
    shared_by: dict[str, int] = field(default_factory=dict)
    """A placeholder photo's sha256 → how many products share it (its group's)."""

    def sharing(self, product: StoredProduct) -> int:
        """How many products share ``product``'s photo when it is a placeholder, else 0."""
        return self.shared_by.get(product.content_sha256, 0) if product.content_sha256 else 0

    def left_out(self, product: StoredProduct | None = None) -> int:
        """How many products a search leaves out as placeholders: all of them, but those
        of ``product``'s own photo (its copies, left out anyway)."""
        return self.products - (self.sharing(product) if product is not None else 0)


PLACEHOLDER_MIN = 20
"""``VITRINE_PLACEHOLDER_MIN``'s default (:class:`vitrine.config.Settings`)."""
NONE = Placeholders()
_made: weakref.WeakKeyDictionary[Copies, dict[int, Placeholders]] = \
    weakref.WeakKeyDictionary()
"""The placeholders of the groups a reader holds (:class:`vitrine.copies.CopiesReader` gives
the same groups until the saved bytes change), by ``at_least``."""


def placeholders(copies: Copies, at_least: int) -> Placeholders:
    """The photos of ``copies`` that at least ``at_least`` products share, counted with their
    copies (0, or below 2: none)."""
    if at_least < 2:
        return NONE
    kept = _made.setdefault(copies, {})
    if at_least not in kept:
        kept[at_least] = _count(copies, at_least)
    return kept[at_least]


def _count(copies: Copies, at_least: int) -> Placeholders:
    totals = copies.photo_totals()
    shared_by = {sha: n for group, n in totals.items() if n >= at_least for sha in group}
    return Placeholders(frozenset(shared_by), sum(n for n in totals.values() if n >= at_least),
                        shared_by)
