"""Recommender: the facade that the command line, the API and the web page use."""

from __future__ import annotations

import itertools
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrine.catalog import category_form, one_form
from vitrine.config import Settings
from vitrine.copies import (
    Copies,
    CopiesReader,
    hiding_search,
    one_a_photo,
    similar_without_copies,
)
from vitrine.errors import VitrineError
from vitrine.fold import searchable
from vitrine.manifest import kind_mismatch, mismatch_error
from vitrine.placeholders import Placeholders, placeholders
from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.filters import ProductFilter
from vitrine.store.search_key import listing_order

if TYPE_CHECKING:  # torch is imported only when a photo is embedded
    from vitrine.embed import CategoryGuess, Embedder


class ProductNotFound(VitrineError):
    """The product id is not in the store, or its photo cannot be served: ``sentence`` says
    which, ``{id}`` standing for the id."""

    def __init__(self, product_id: str, sentence: str = "product {id} is not in the store."):
        self.product_id, self.sentence = product_id, sentence
        super().__init__(self.shown())

    def shown(self, at_most: int | None = None) -> str:
        """The sentence, the id cut to ``at_most`` characters (a 404 repeating an id of
        megabytes)."""
        pid = self.product_id
        if at_most is not None and len(pid) > at_most:
            pid = pid[:at_most] + "…"
        return self.sentence.format(id=repr(pid))


ALIKE_PAGE = 200
"""Products a look-up of an id in another Unicode form reads at a time (:func:`spelled_alike`)."""
ALIKE_SPELLINGS = 32
"""Spellings of an id (:func:`spellings`) looked up one by one before a name search of it:
a search of a short or common id ("é", "relógio") read every product it named, a miss took
0.2 s of the embedded store (under the server's lock) and 0.6-3 s of Milvus at 20,000
products."""


def stored_product(store: VectorStore, product_id: str) -> StoredProduct | None:
    """The stored product ``product_id``, typed in either Unicode form or a mix of them: ids
    made from a Mac's file names are decomposed ("relo\u0301gio/1"), what a shopper or a
    terminal types is mostly composed, and an id made of both ("Café" typed, "São" a file's
    name) was found by neither. The id as given first, then the one stored id it is in
    another form (:func:`spelled_alike`); ProductNotFound when it is several (two files of a
    folder, two rows of a table, spelled alike but for their accents' form): which one is
    meant is not guessed. An id that is not text (a terminal's bytes that are not UTF-8) is
    in no store, which keeps UTF-8."""
    try:
        product_id.encode("utf-8")
    except UnicodeEncodeError:
        return None
    found = store.get(product_id)
    if found is not None or one_form(product_id):
        return found
    alike = spelled_alike(store, product_id)
    if len(alike) > 1:
        ids = ", ".join(ascii(p.product_id) for p in alike[:3]) + (", …" if len(alike) > 3
                                                                   else "")
        raise ProductNotFound(product_id, "product {id} is not in the store as written, and "
                              f"{len(alike)} stored ids differ from it only in how their "
                              f"accents are encoded ({_literal(ids)}); give one of them "
                              "exactly.")
    return alike[0] if alike else None


def spelled_alike(store: VectorStore, product_id: str) -> list[StoredProduct]:
    """The stored products whose id is ``product_id`` in one Unicode form (NFC: composed, as
    categories are kept), however each spells it: each of its :func:`spellings` looked up
    where they are few, else among those a name search of it finds, which ignores accents
    (:func:`vitrine.fold.searchable`), a page at a time."""
    if (forms := spellings(product_id)) is not None:
        found = [p for form in forms if form != product_id
                 and (p := store.get(form)) is not None]
        return sorted(found, key=lambda p: listing_order(p.category, p.name, p.product_id))
    if not searchable(product_id):  # (accents alone: a search of nothing lists them all)
        return []
    wanted, found, after = category_form(product_id), [], None
    while True:
        page = store.list_products(query=product_id, limit=ALIKE_PAGE, after=after)
        found += [p for p in page if category_form(p.product_id) == wanted]
        if len(page) < ALIKE_PAGE:
            return found
        after = listing_order(page[-1].category, page[-1].name, page[-1].product_id)


def spellings(product_id: str) -> list[str] | None:
    """The spellings of ``product_id`` each of whose letters is in one of its Unicode forms
    (a Mac's decomposed file name, a typed composed word, Windows' Vietnamese keyboard's "ê"
    and a combining dot below), or None where they are over :data:`ALIKE_SPELLINGS`."""
    letters, composed = [], unicodedata.normalize("NFC", product_id)
    for c in composed:  # (a letter: a character and the marks after it that stay apart)
        if letters and unicodedata.combining(c):
            letters[-1] += c
        else:
            letters.append(c)
    forms = [_letter_forms(letter) for letter in letters]
    if math.prod(map(len, forms)) > ALIKE_SPELLINGS:
        return None
    return ["".join(spelled) for spelled in itertools.product(*forms)]


def _letter_forms(letter: str) -> list[str]:
    """One letter (:func:`spellings`) composed, decomposed, and with some of its marks
    composed into it, the others after it."""
    apart = unicodedata.normalize("NFD", letter)
    forms = dict.fromkeys((letter, apart))
    base, marks = apart[0], apart[1:]
    if any(not unicodedata.combining(m) for m in marks):  # (Hangul: its jamo)
        return list(forms)
    for n in range(1, len(marks)):
        for chosen in itertools.combinations(range(len(marks)), n):
            head = unicodedata.normalize("NFC", base + "".join(marks[i] for i in chosen))
            if len(head) == 1:
                forms[head + "".join(m for i, m in enumerate(marks) if i not in chosen)] = None
    return list(forms)


def _literal(text: str) -> str:
    """``text`` in a :class:`ProductNotFound` sentence, which is a format string."""
    return text.replace("{", "{{").replace("}", "}}")


class Recommender:
    """Similar products by product id or by photo. Builds its embedder only when a photo
    query needs one, and checks it is the model that made the store's vectors."""

    def __init__(self, store: VectorStore, settings: Settings,
                 embedder: Embedder | None = None):
        self.store = store
        self.settings = settings
        self._embedder = embedder
        self._copies = CopiesReader()

    @property
    def embedder(self) -> Embedder:
        stored = self.store.manifest()
        if self._embedder is None:
            from vitrine.embed import Embedder

            if refused := kind_mismatch(self.store.location, stored, self.store.model_folder(),
                                        self.settings.model, self.settings.backbone):
                raise refused
            self._embedder = Embedder.from_settings(self.settings)
        if stored is not None and stored != self._embedder.manifest:
            raise mismatch_error(self.store.location, stored, self._embedder.manifest,
                                 self.store.model_folder(), self._embedder.model_dir)
        return self._embedder

    def placeholders(self) -> Placeholders:
        """The store's placeholder photos (:mod:`vitrine.placeholders`), which similar
        products and photo searches leave out: of ``VITRINE_PLACEHOLDER_MIN`` products."""
        return placeholders(self._copies(self.store),
                            getattr(self.settings, "placeholder_min", 0))

    def copies(self) -> Copies:
        """The store's photo groups and their products (:mod:`vitrine.copies`): a list shows
        one product a photo, and says how many others share it (:meth:`Copies.same_photo`)."""
        return self._copies(self.store)

    def forget_copies(self) -> None:
        """Read the groups again at the next list (a write's counts were saved after its
        products: a list read between them kept the groups before it)."""
        self._copies.forget()

    def product(self, product_id: str) -> StoredProduct:
        found = stored_product(self.store, product_id)
        if found is None:
            raise ProductNotFound(product_id)
        return found

    def similar(self, product_id: str, k: int = 5, category: str | None = None, *,
                same_category: bool = False, where: ProductFilter | None = None
                ) -> tuple[StoredProduct, list[Match]]:
        """The ``k`` products most similar to a stored one, the product itself and its copies
        (:mod:`vitrine.copies`: the same photo, or one `index` grouped with it as a
        duplicate) and the products of placeholder photos (:meth:`placeholders`) excluded;
        only of ``category``, or with ``same_category`` only of the product's own (a product
        with no category: of every one, as its page shows them; helper-226: only the few
        others without one, the page's way to the rest hidden); ``where``: of a price range
        and attributes only (:mod:`vitrine.store.filters`)."""
        with self.store.snapshot():  # another process may delete it meanwhile
            product = self.product(product_id)
            product_id = product.product_id  # as the store spells it
            vector = self.store.vector(product_id)
            if vector is None:  # gone between the two reads (Milvus has no snapshot)
                raise ProductNotFound(product_id)
            of = similar_category(product, same_category, category)
            return product, similar_without_copies(
                lambda _, n: [self.store.search(vector, n, category=of, exclude=product_id,
                                                where=where)],
                [product], k, self._copies(self.store),
                hiding_search(self.store, vector.reshape(1, -1), [product_id], of, where),
                self.placeholders().photos)[0]

    def search_vector(self, vector: np.ndarray, k: int = 5, category: str | None = None, *,
                      where: ProductFilter | None = None) -> list[Match]:
        """The ``k`` products most similar to ``vector``, placeholders left out."""
        return self._search_many(np.asarray(vector).reshape(1, -1), k, category, where)[0]

    def _search_many(self, vectors: np.ndarray, k: int, category: str | None,
                     where: ProductFilter | None) -> list[list[Match]]:
        """Each row's ``k`` most similar products, one product a photo and the products of
        placeholder photos left out, as :func:`~vitrine.copies.similar_without_copies`
        leaves them out of a product's similar products."""
        held = self.placeholders()
        return similar_without_copies(
            lambda rows, n: self.store.search_many(vectors[rows], n, category=category,
                                                   where=where),
            [None] * len(vectors), k, self._copies(self.store),
            hiding_search(self.store, vectors, None, category, where), held.photos)

    def search_image(self, image: Path | bytes, k: int = 5, category: str | None = None, *,
                     where: ProductFilter | None = None) -> list[Match]:
        """The ``k`` products most similar to a photo (a path or uploaded bytes)."""
        return self.search_image_guess(image, k, category, where=where)[0]

    def search_vectors(self, vectors: np.ndarray, k: int = 5, category: str | None = None, *,
                       where: ProductFilter | None = None) -> tuple[list[Match], int]:
        """The ``k`` products most similar to any of the rows of ``vectors`` (one photo seen
        whole and as the product cut out of its frame, :func:`vitrine.images.query_arrays`),
        each with its best score of them, and the row whose best match scored highest (the
        first on a tie). One row is :meth:`search_vector`'s search."""
        if len(vectors) == 1:
            return self.search_vector(vectors[0], k, category, where=where), 0
        return merge_matches(self._search_many(vectors, k, category, where), k,
                             self._copies(self.store))

    def search_image_guess(self, image: Path | bytes, k: int = 5, category: str | None = None,
                           *, where: ProductFilter | None = None
                           ) -> tuple[list[Match], CategoryGuess | None]:
        """:meth:`search_image`, and the photo's likely category when the model tells it (of
        the view of the photo whose best match scored highest)."""
        vectors = self.embedder.embed_query(image)
        matches, leading = self.search_vectors(vectors, k, category, where=where)
        return matches, self.embedder.guess_category(vectors[leading])


def similar_category(product: StoredProduct, same_category: bool,
                     category: str | None = None) -> str | None:
    """The category a product's similar products come from: with ``same_category`` its own,
    or every one for a product without a category (as its page shows them; helper-226: only
    the few others without one, the page's way to the rest hidden); else ``category``."""
    return product.category if same_category and product.category else category


def merge_matches(found: list[list[Match]], k: int, copies: Copies | None = None
                  ) -> tuple[list[Match], int]:
    """The ``k`` best of several queries' matches (each sorted, best first), each product once
    with its best score, and with ``copies`` one product a photo (each query's, one a photo:
    the top ``k`` photos of each query hold the top ``k`` of all), and which query's first
    match scored highest (the earliest on a tie)."""
    best: dict[str, Match] = {}
    for matches in found:
        for match in matches:
            kept = best.get(match.product.product_id)
            if kept is None or match.score > kept.score:
                best[match.product.product_id] = match
    merged = sorted(best.values(), key=lambda m: -m.score)
    merged = (merged if copies is None else one_a_photo(merged, copies))[:k]
    leading = max(range(len(found)),
                  key=lambda i: found[i][0].score if found[i] else float("-inf"), default=0)
    return merged, leading

