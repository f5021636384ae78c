"""A product's copies left out of its similar products: products of the same photo file (its
sha256), and those whose photos the store's last duplicate search joined with its own
(``vitrine index``'s duplicate groups, saved as pairs of photo sha256s by
:mod:`vitrine.dedupe_store`). A copy of the photo is the same product listed twice, no
recommendation (as `evaluate` counts it: ``eval_metrics``)."""

from __future__ import annotations

import io
import time
import weakref
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from vitrine.store.base import Match, StoredProduct, VectorStore
from vitrine.store.filters import ProductFilter

DEEPEST = 16_384
"""The most results one search asks for while passing over copies, for a store that cannot
leave them out inside its search (Milvus' top-k limit)."""
SAME_SCORE = 1e-6
"""Scores of products of one photo this close are a tie (:func:`one_a_photo`): the
products of one file share its vector; summed in another order, a score moves by 1e-7."""
KEPT_S = 10.0
"""How long a server keeps the groups it read before reading them again (a later `index`
saves new ones; its writes, and saving the cache, also change the embedded store's write
mark, which reads them at once: an API write's photo counts, saved after its products by
another process, showed only after this)."""


class Copies:
    """Photo sha256 → the sha256s of its duplicate group (as `index` groups them); ``shared``:
    photo sha256 → how many products name it, where more than one do (as `index` counted
    them: :mod:`vitrine.placeholders`)."""

    def __init__(self, shas: Sequence[str] = (), labels: Sequence[int] = (),
                 shared: Mapping[str, int] | None = None):
        members: dict[int, set[str]] = {}
        for sha, label in zip(shas, labels, strict=True):
            members.setdefault(label, set()).add(sha)
        groups = {label: frozenset(group) for label, group in members.items()}
        self._group = {sha: groups[label] for sha, label in zip(shas, labels, strict=True)}
        self.shared = dict(shared or {})
        self._totals: dict[frozenset[str], int] | None = None

    def of(self, sha: str) -> frozenset[str]:
        """The photo sha256s that are copies of ``sha`` (itself included)."""
        return self._group.get(sha, frozenset((sha,)))

    def groups(self) -> set[frozenset[str]]:
        """The duplicate groups (of two photos or more)."""
        return set(self._group.values())

    def photo_of(self, product: StoredProduct) -> object:
        """What ``product``'s photo is one of: its duplicate group, its own sha256 (a photo
        of no group), or the product itself where its photo is unknown."""
        sha = product.content_sha256
        return self._group.get(sha, sha) if sha else ("id", product.product_id)

    def products_of(self, sha: str) -> int:
        """How many products name ``sha``'s photo or one of its copies (1 where none is
        counted; as the last `index` counted them)."""
        return sum(self.shared.get(s, 1) for s in self.of(sha)) if sha else 1

    def same_photo(self, product: StoredProduct) -> int:
        """How many other products share ``product``'s photo (its copies counted)."""
        return self.products_of(product.content_sha256) - 1

    def photo_totals(self) -> dict[frozenset[str], int]:
        """How many products each shared or grouped photo is (keyed by its copies group, or
        the photo alone): :meth:`most_shared`, :func:`vitrine.placeholders.placeholders`."""
        if self._totals is None:
            totals = {group: sum(self.shared.get(s, 1) for s in group)
                      for group in self.groups()}
            for sha, n in self.shared.items():
                totals.setdefault(self.of(sha), n)  # (a photo of no group: its products)
            self._totals = totals
        return self._totals

    def most_shared(self) -> int:
        """The most products of one photo group (1: no photo is shared)."""
        return max([1, *self.photo_totals().values()])


def saved_copies(store: VectorStore) -> Copies:
    """The duplicate groups of the store's last duplicate search (none where it saved none,
    or saved them before they were kept by sha256: the next `index` searches again)."""
    return copies_in(store.duplicate_cache())


def copies_in(data: bytes | None) -> Copies:
    """:func:`saved_copies` of the duplicate cache's bytes."""
    if not data:
        return Copies()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            if "group_shas" not in saved.files:
                return Copies()
            shas, labels = saved["group_shas"], saved["group_labels"]
            named, counts = (saved["shared_shas"], saved["shared_counts"]) \
                if "shared_shas" in saved.files else (shas[:0], labels[:0])
    except Exception:  # noqa: BLE001 - a damaged cache is no cache
        return Copies()
    if shas.ndim != 1 or shas.shape != labels.shape or shas.dtype.kind != "S" \
            or named.ndim != 1 or named.shape != counts.shape or named.dtype.kind != "S":
        return Copies()
    return Copies([s.decode("ascii", "replace") for s in shas.tolist()], labels.tolist(),
                  dict(zip([s.decode("ascii", "replace") for s in named.tolist()],
                           counts.tolist(), strict=True)))


def last_search(data: bytes | None) -> dict | None:
    """Of when the groups in the duplicate cache's bytes are (what `similar` leaves out): the
    search that saved them (``at``: UTC, ISO 8601; None for a cache saved before that was
    kept), the distinct photos it searched and the groups it found; None where no search
    saved any. A search `index` skips (above ``VITRINE_DUP_MAX_PRODUCTS``) keeps them: a
    product added or replaced since has only the copies of its own photo's bytes, or of a
    grouped photo's, left out."""
    if not data:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            photos = len(saved["digests"])
            at = float(saved["searched_at"]) if "searched_at" in saved.files else None
            labels = saved["group_labels"] if "group_labels" in saved.files else ()
    except Exception:  # noqa: BLE001 - a damaged cache is no cache
        return None
    when = None if at is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
    return {"at": when, "photos": photos, "groups": len(set(np.asarray(labels).tolist()))}


_FORGOTTEN = object()
"""A write mark no store gives (:meth:`CopiesReader.forget`)."""


class CopiesReader:
    """:func:`saved_copies` of a store, read again when it was written (or is another store:
    a server's, opened again) or after :data:`KEPT_S`; made again only when the saved
    bytes changed (the groups of 200,000 photos take 0.5 s to make, under the server's
    store lock: every 10 s and after each upload, with the same bytes)."""

    def __init__(self):
        self._kept: tuple[weakref.ref[VectorStore], object, float, bytes | None,
                          Copies] | None = None
        """The store read (weakly: a server's store let go for its new database, and the
        index it holds, was kept alive here until the next ``similar``), its write mark,
        when, the bytes read and their groups."""

    def __call__(self, store: VectorStore) -> Copies:
        mark, now = store.write_mark(), time.monotonic()
        kept = self._kept
        read = None if kept is None else kept[0]()
        if read is not store or kept[1] != mark or now - kept[2] > KEPT_S:
            data = store.duplicate_cache()
            same = read is store and kept[3] == data
            self._kept = kept = (weakref.ref(store), mark, now, data,
                                 kept[4] if same else copies_in(data))
        return kept[4]

    def forget(self) -> None:
        """Read the store's saved bytes again next time (they change after the mark this
        reader saw, :func:`vitrine.dedupe_store.recount_shared` saving them after the
        write's products, and a store may keep no mark: Milvus), their groups made
        again only if they did: a write that changed no count (an edit, a photo of its
        own: most) made the next list make them all again, and their placeholders, under the
        server's store lock (the cost the class spares: its docstring)."""
        kept = self._kept
        if kept is not None:
            self._kept = (kept[0], _FORGOTTEN, kept[2], kept[3], kept[4])


def without_copies(product: StoredProduct | None, matches: list[Match], copies: Copies,
                   hidden: frozenset[str] = frozenset()) -> list[Match]:
    """``matches`` without the product itself, its copies and the products of ``hidden``
    (``product`` None, a photo search: those of ``hidden``)."""
    if product is None:
        return [m for m in matches if m.product.content_sha256 not in hidden] \
            if hidden else matches
    shas = copies.of(product.content_sha256) if product.content_sha256 else frozenset()
    return [m for m in matches if m.product.product_id != product.product_id
            and m.product.content_sha256 not in shas
            and m.product.content_sha256 not in hidden]


def one_a_photo(matches: list[Match], copies: Copies, seen: set | None = None) -> list[Match]:
    """``matches`` (best first) with one product of each photo (the same file or its copies
    group), the best scored; of those that tie with it (:data:`SAME_SCORE`: the products of
    one file share its vector), the first by product id, so that both stores show the same
    one (the embedded store gives ties by row, Milvus in an order of its own: 10240 on one
    and 10240-copy2 on the other, `milvus_parity.py --copies`); ``seen``: the photos already
    shown (grown with those kept)."""
    seen = set() if seen is None else seen
    kept: list[Match] = []
    at: dict[object, int] = {}  # a photo kept here: its place in ``kept``
    for m in matches:
        photo = copies.photo_of(m.product)
        if photo in at:
            first = kept[at[photo]]
            if first.score - m.score <= SAME_SCORE \
                    and m.product.product_id < first.product.product_id:
                kept[at[photo]] = m
                seen.add(("id", m.product.product_id))
        elif photo not in seen and ("id", m.product.product_id) not in seen:
            seen.add(photo)
            seen.add(("id", m.product.product_id))
            at[photo] = len(kept)
            kept.append(m)
    return kept


def _photos_shown(matches: list[Match], copies: Copies) -> frozenset[str]:
    """The photo sha256s of ``matches`` and all their copies (hidden in a search again)."""
    return frozenset(s for m in matches if m.product.content_sha256
                     for s in copies.of(m.product.content_sha256))


def _unhidden(matches: list[Match]) -> int:
    """How many of ``matches`` no photo sha256 hides in a search again (a product stored
    without its photo's sha256): each is found again, ahead of the places left."""
    return sum(not m.product.content_sha256 for m in matches)


def hiding_search(store: VectorStore, vectors: np.ndarray, ids: Sequence[str] | None,
                  category: str | None, where: ProductFilter | None = None
                  ) -> Callable[[list[int], int, frozenset[str]], list[list[Match]]] | None:
    """The ``search_without`` of :func:`similar_without_copies` for ``store``: the top ``n``
    of those rows of ``vectors``, each without its own of ``ids`` (None: a photo search) and
    the products of the ``photos`` sha256s, left out inside the store's search; None where
    the store cannot (:attr:`VectorStore.hides_photos`; both stores can), which then
    searches deeper; ``where``: the price and attribute filter of every search
    (:mod:`vitrine.store.filters`). The one place that decides it (`similar`, the product
    page and the API's similar, `related` and photo searches)."""
    if not store.hides_photos:
        return None

    def search(rows: list[int], n: int, photos: frozenset[str]) -> list[list[Match]]:
        return store.search_many(vectors[rows], n, category=category,  # type: ignore[call-arg]
                                 exclude=None if ids is None else [ids[r] for r in rows],
                                 exclude_photos=photos, where=where)
    return search


def similar_without_copies(search: Callable[[list[int], int], list[list[Match]]],
                           products: Sequence[StoredProduct | None], k: int, copies: Copies,
                           search_without: Callable[[list[int], int, frozenset[str]],
                                                    list[list[Match]]] | None = None,
                           hidden: frozenset[str] = frozenset()) -> list[list[Match]]:
    """For each of ``products`` (None: a photo search's row), the ``k`` best of its search
    that are not its copies, one product a photo (:func:`one_a_photo`: a product listed
    once a size, each of the same photo, is shown once, the best scored). ``search(rows,
    n)``: the top ``n`` of each of those rows of ``products``, itself excluded (one batch),
    first ``k`` plus as many as their copies, and as a photo's most products (none where no
    photo is shared), at most twice ``k`` (not every product of a batch asked thousands
    deep for one whose placeholder photo thousands of products share). Those whose copies
    or repeats took places are asked again: ``search_without(rows, n, photos)``, where the
    store leaves the products of those photo sha256s out inside its search
    (:func:`hiding_search`: both stores, the embedded one inside FAISS, Milvus in its
    filter): each list's own copies, the hidden ones and the photos it shows, for the
    places left, while they are short (those of one group of photos together); else four
    times as deep each time, while more products are left, up to :data:`DEEPEST` (past
    which a product of more copies than that has none left). ``hidden``: photo sha256s
    whose products no list holds (:mod:`vitrine.placeholders`): dropped from the first
    search, asked ``k`` deeper, and left out inside the search again of a list they left
    short (few lists are near a placeholder; hidden inside every search, an HNSW index scans
    every vector for each one once they are more than its M graph nodes: a placeholder
    saved in each product's own bytes)."""
    found: list[list[Match]] = [[] for _ in products]
    rows = list(range(len(products)))
    extra = max((len(copies.of(p.content_sha256)) - 1 for p in products if p is not None),
                default=0)
    fetch = k + min(extra + (k if hidden else 0) + copies.most_shared() - 1, k)
    while rows:
        short = []
        for row, matches in zip(rows, search(rows, fetch), strict=True):
            found[row] = one_a_photo(without_copies(products[row], matches, copies, hidden),
                                     copies)[:k]
            if len(found[row]) < k and len(matches) >= fetch \
                    and (search_without is not None or fetch < DEEPEST):
                short.append(row)
        if short and search_without is not None:
            _fill(short, found, products, k, copies, search_without, hidden)
            break
        rows, fetch = short, min(4 * fetch, DEEPEST)
    return found


def _fill(short: list[int], found: list[list[Match]], products: Sequence[StoredProduct | None],
          k: int, copies: Copies, search_without: Callable[[list[int], int, frozenset[str]],
                                                          list[list[Match]]],
          hidden: frozenset[str]) -> None:
    """The short lists of :func:`similar_without_copies` filled from searches that leave out
    their own copies, ``hidden`` and the photos they show, until full or the store has no
    more (each round shows at least one more photo, or ends)."""
    while short:
        by_photos: dict[frozenset[str], list[int]] = {}
        for row in short:
            product = products[row]
            own = copies.of(product.content_sha256) \
                if product is not None and product.content_sha256 else frozenset()
            by_photos.setdefault(own | hidden | _photos_shown(found[row], copies),
                                 []).append(row)
        short = []
        for photos, members in by_photos.items():
            n = max(k - len(found[r]) for r in members)
            n += min(copies.most_shared() - 1, n) + max(
                _unhidden(found[r]) for r in members)  # (those come back first)
            for row, matches in zip(members, search_without(members, n, photos), strict=True):
                seen: set = set()
                one_a_photo(found[row], copies, seen)
                more = one_a_photo(without_copies(products[row], matches, copies, hidden),
                                   copies, seen)
                found[row] = (found[row] + more)[:k]
                if more and len(found[row]) < k and len(matches) >= n:
                    short.append(row)
