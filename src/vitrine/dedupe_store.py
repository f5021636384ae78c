"""The duplicate pairs of a whole store, searched again only for what changed.

``vitrine index`` lists the duplicate groups of its whole store after every run. The pairs that
the thumbnail and embedding rules join depend only on the two products' photos and vectors, so
the store keeps those of its last search (:meth:`VectorStore.duplicate_cache`), each product
named by a 64-bit digest of its id, photo sha256 and stored vector. The next search takes the
pairs of the products whose digest it finds again and compares only the others (new, replaced,
added through the API or embedded again) with the whole store, exactly
(:func:`vitrine.dedupe_pairs.rule_pairs` with ``among``): a re-run that changed a few products of a
million costs seconds, not the quarter of an hour of a full search.

The saved pairs are used only under the rules, model and format they were found with
(:func:`fingerprint`); any other cache, or one that cannot be read, means a full search.

The digests are made from the vectors' checksums, read a page at a time
(:func:`store_checksums`); the store's vectors are read whole only when there is something
to search: an unchanged re-run of 65,024 products held them all (333 MB, 5 KB a product) to
find that nothing changed (benchmarks/index_memory.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np

from vitrine import dedupe_pairs, dedupe_search
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_groups import components, distinct_rows, only_rows
from vitrine.dedupe_pairs import rule_pairs
from vitrine.errors import StoreError
from vitrine.store import VectorStore

FORMAT = 9
"""Bumped when the rules' inputs (pHash, thumbnail), what a rule compares, or the cache's
layout change (2: the colour check leaves out a shared grey background too; a store's pairs
found before, different products on grey grouped as copies, are searched again; 3: it weighs
the pixels that changed, so that a banner both photos share does not hide the product; 4:
the thumbnail rule compares second views too, the product cut out of its border and facing
one way, so that padded and mirrored copies are found; 5: the colour check leaves out a band
both photos share along an edge, a supplier's banner, as their background; 6: a line that
ends in the background, a product reaching the edge, is no band: copies of it were missed;
7: second views are turned one way among the 8 turns and flips of a square, their pHashes
made as the photo has them (1,569 bytes), so that copies turned a quarter or half turn are
found; a store's views made before are made again: ``vitrine.thumb_upgrade``; 8: the
views' pHashes may differ in ``dedupe_pairs.DETAIL_FLIPS`` signs more, signs of frequencies near
zero that a copy's JPEG noise turns: a store's pairs are searched again; 9: the pairs are
also kept as their photos' sha256s, which a product's similar products are left without,
``vitrine.copies``)."""
CHANGED_AT_MOST = 20_000
"""Each changed product costs a pass over the whole store, so the search of the changed ones
alone is used while it costs well under a full one: up to half the store where the full search
is exact (``dedupe_search.EXACT_PAIRS_UP_TO`` products: every product against every product), up to
a fortieth of it and this many above. Measured (benchmarks/dedupe_scaling.py ``--changed``,
1,280-d, AMD host; results/dedupe_changed*.json): 40,000 products, full 6.8 s, 1,000 changed
1.3 s; 200,000, full 45 s, 2,000 changed 9.9 s (10,000: 48 s); 1,000,000, full 721 s, 10,000
changed 281 s (10: 8.1 s)."""


def changed_limit(n: int) -> int:
    """How many changed products of ``n`` are searched on their own (:data:`CHANGED_AT_MOST`)."""
    return n // 2 if n <= dedupe_search.EXACT_PAIRS_UP_TO else min(n // 40, CHANGED_AT_MOST)


def fingerprint(rules: DuplicateRules, manifest: dict | None) -> str:
    """What the saved pairs hold for: the rules (not ``max_products``), the model that made the
    vectors, the cache's format."""
    rule_fields = {k: v for k, v in asdict(rules).items() if k != "max_products"}
    text = json.dumps({"format": FORMAT, "rules": rule_fields, "model": manifest},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def digests(ids: Sequence[str], shas: Sequence[str], checksums: np.ndarray,
            thumbs: Sequence[bytes]) -> np.ndarray:
    """One uint64 per product: its id, photo sha256, thumbnail's length and stored vector
    (its :func:`vector_checksums`), hashed (a product embedded again from the same photo, by
    another engine, has other pairs; so has one whose thumbnail made before the second
    views, 768 bytes, or before they were turned, 1,568, was made again with them)."""
    named = np.array([int.from_bytes(hashlib.blake2b(f"{pid}\0{sha}\0{len(thumb)}".encode(),
                                                     digest_size=8).digest(), "little")
                      for pid, sha, thumb in zip(ids, shas, thumbs, strict=True)],
                     dtype=np.uint64)
    return named ^ checksums


CHECKSUM_ROWS = 1024
"""Rows a checksum pass holds at once as 64-bit words (10 MB at 1,280-d; 4,096 rows held
84 MB beside the vectors)."""


def store_checksums(store: VectorStore, batch: int | None = None
                    ) -> tuple[list[str], np.ndarray]:
    """Every product id of ``store`` and its vector's :func:`vector_checksums`, in the store's
    order (:meth:`VectorStore.iter_products`), ``batch`` products at a time (None:
    :data:`CHECKSUM_ROWS`): not every vector in memory at once."""
    batch = CHECKSUM_ROWS if batch is None else batch
    ids: list[str] = []
    parts = [np.empty(0, np.uint64)]
    for page in store.iter_products(batch, vectors=True):
        ids += [product.product_id for product, _ in page]
        parts.append(vector_checksums(np.stack([vector for _, vector in page])))
    return ids, np.concatenate(parts)


def vector_checksums(vectors: np.ndarray, chunk: int | None = None) -> np.ndarray:
    """A uint64 per row that changes with any bit of the row: the float bits times fixed odd
    random weights, summed modulo 2**64 (vectorised, ``chunk`` rows at a time, None:
    :data:`CHECKSUM_ROWS`; not a cryptographic hash)."""
    chunk = CHECKSUM_ROWS if chunk is None else chunk
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    weights = np.random.default_rng(0x5EED).integers(0, 2**63, vectors.shape[1],
                                                     dtype=np.uint64) * 2 + 1
    out = np.empty(len(vectors), np.uint64)
    for start in range(0, len(vectors), chunk):
        bits = vectors[start:start + chunk].view(np.uint32).astype(np.uint64)
        out[start:start + chunk] = (bits * weights).sum(axis=1, dtype=np.uint64)
    return out


def encode(key: str, rows: np.ndarray, pairs: np.ndarray,
           shas: Sequence[str] | None = None,
           shared: tuple[np.ndarray, np.ndarray] | None = None) -> bytes:
    """The cache's bytes: the fingerprint, the digests searched and the pairs found (as pairs
    of digests), and when (``searched_at``, Unix seconds: :func:`vitrine.copies.last_search`);
    with ``shas`` (aligned with ``rows``) also the duplicate groups the pairs make, as each
    grouped photo's sha256 and its group's label (what :mod:`vitrine.copies` reads: a few
    bytes a grouped photo, not a pair); ``shared``: :func:`shared_photos`."""
    buf = io.BytesIO()
    grouped = {}
    if shas is not None:
        labels = components(len(rows), pairs)
        counts = np.bincount(labels, minlength=len(rows))
        member = np.flatnonzero(counts[labels] > 1)
        grouped = {"group_shas": np.array([shas[i] for i in member.tolist()], dtype="S64"),
                   "group_labels": labels[member].astype(np.int64)}
    if shared is not None:
        grouped["shared_shas"], grouped["shared_counts"] = shared
    np.savez(buf, key=np.array(key), digests=rows, pairs=rows[pairs],
             searched_at=np.array(time.time()), **grouped)
    return buf.getvalue()


def shared_photos(shas: Sequence[str], rows: np.ndarray, row_of: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The photo sha256s that more than one product names (by sha256) and how many name
    each (:func:`vitrine.dedupe_groups.distinct_rows` of the products' ``shas``), what
    :mod:`vitrine.placeholders` counts a photo's products from."""
    counts = np.bincount(row_of, minlength=len(rows))
    many = np.flatnonzero(counts > 1)
    named = np.array([shas[rows[i]] for i in many.tolist()], dtype="S64")
    order = np.argsort(named, kind="stable")
    return named[order], counts[many][order].astype(np.int64)


def recount_shared(store: VectorStore, added: str = "", removed: str = "") -> None:
    """Count the products of a photo file again after a write through the API: one more
    of ``added`` (a product added or given that photo's sha256), one less of ``removed``
    (deleted, or given another photo). Exact copies (one file's bytes, one sha256) need no
    search: a product added with a placeholder's file counts at once
    (:mod:`vitrine.placeholders`), and a photo it makes shared says so (photos of other
    bytes wait for the next `index` to be grouped). The saved bytes are read only where a
    count can have changed (a photo shared after the write, or before it: most writes are
    a photo of its own): :func:`_save_counts`."""
    counts = {sha: store.count_photo(sha) for sha in {added, removed} - {""}}
    if any(n > (1 if sha == added else 0) for sha, n in counts.items()):
        _save_counts(store, lambda shared: {**{s: n for s, n in shared.items()
                                               if s not in counts},
                                            **{s: n for s, n in counts.items() if n > 1}})


def recount_every_shared(store: VectorStore) -> None:
    """Count the products of every shared photo file again where `index` searches no
    duplicates (above ``VITRINE_DUP_MAX_PRODUCTS``): exact copies need no search, so the
    catalogue's products of a placeholder's file are counted all the same (counted inside
    the store: :meth:`VectorStore.shared_photo_counts`); also where no
    search saved counts (a store above it from its first `index`, whose placeholders were
    never counted, or whose last search is older than the counts): saved with no groups
    then, or that search's, which still says of when they are
    (:func:`vitrine.copies.last_search`)."""
    now = store.shared_photo_counts()
    _save_counts(store, lambda _: now, anew=True)


def _save_counts(store: VectorStore, change: Callable[[dict[str, int]], dict[str, int]],
                 anew: bool = False) -> None:
    """Save the photo counts ``change`` makes of the saved ones (photo sha256 → products,
    where more than one) with the groups of the last duplicate search, its other arrays as
    they were; where they changed, and never where no search saved counts (none yet, or a
    cache older than them: the next search counts them) or they cannot be read
    (:func:`_saved_counts`), unless ``anew`` (``change`` counts every photo: saved beside
    what the cache holds, :func:`_without_counts`)."""
    data = store.duplicate_cache()
    saved = _saved_counts(data)
    if saved is None and not anew:
        return
    arrays, shared = saved if saved is not None else (_without_counts(data), {})
    now = change(dict(shared))
    if now == shared:
        return
    named = sorted(now)  # (as shared_photos orders them)
    arrays["shared_shas"] = np.array([s.encode("ascii") for s in named], dtype="S64")
    arrays["shared_counts"] = np.array([now[s] for s in named], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _save(store, buf.getvalue())


def _without_counts(data: bytes | None) -> dict[str, np.ndarray]:
    """The arrays of a cache that holds no counts to read (a search's before they were
    kept: its digests and pairs, of when it ran), with no duplicate groups where it holds
    none (none saved, or unreadable: none that :func:`vitrine.copies.copies_in` reads, nor
    a search :func:`decode` reuses)."""
    try:
        with np.load(io.BytesIO(data or b""), allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except Exception:  # noqa: BLE001 - none saved, or damaged: no search to keep
        arrays = {}
    if "group_shas" not in arrays or "group_labels" not in arrays:
        arrays.update(group_shas=np.empty(0, "S64"), group_labels=np.empty(0, np.int64))
    return arrays


def _saved_counts(data: bytes | None) -> tuple[dict[str, np.ndarray], dict[str, int]] | None:
    """The duplicate cache's arrays and its photo counts (sha256 → products); None where no
    search saved counts (none saved, or a cache older than them) or they cannot be read
    back as saved (damaged: counts of another length than their photos, which
    :func:`vitrine.copies.copies_in` reads as none, or a photo that is no ASCII sha256): a
    write through the API then failed with a 500 after its product was stored, and `index`
    with a traceback after its writes."""
    try:
        with np.load(io.BytesIO(data or b""), allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in saved.files}
        named, counts = arrays["shared_shas"], arrays["shared_counts"]
        if "group_shas" not in arrays or named.ndim != 1 or named.shape != counts.shape \
                or named.dtype.kind != "S" or counts.dtype.kind not in "iu":
            return None
        return arrays, dict(zip((s.decode("ascii") for s in named.tolist()),
                                counts.tolist(), strict=True))
    except Exception:  # noqa: BLE001 - none saved, or damaged: the next `index` searches
        return None


def _same_shared(data: bytes | None, shared: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether the cache ``data`` holds ``shared`` (a product added, or removed, that shares
    a photo changes no digest searched: the counts alone are saved again)."""
    try:
        with np.load(io.BytesIO(data or b""), allow_pickle=False) as saved:
            return all(np.array_equal(saved[name], value) for name, value in
                       zip(("shared_shas", "shared_counts"), shared, strict=True))
    except Exception:  # noqa: BLE001 - none saved (a cache made before them), or damaged
        return False


def decode(data: bytes | None, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The digests and digest pairs of a cache saved under ``key``; None for none, another
    key, or bytes that are not a cache."""
    if not data:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            if str(saved["key"]) != key:
                return None
            rows, pairs = saved["digests"], saved["pairs"]
    except Exception:  # noqa: BLE001 - a damaged cache is no cache
        return None
    if rows.dtype != np.uint64 or pairs.dtype != np.uint64 or pairs.ndim != 2 \
            or pairs.shape[1] != 2:
        return None
    return rows, pairs


def known_pairs(now: np.ndarray, saved: np.ndarray, saved_pairs: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The saved pairs whose two products are still there unchanged, as rows of ``now`` (the
    current digests), and the rows of ``now`` the saved search did not see."""
    order = np.argsort(now, kind="stable")
    sorted_now = now[order]

    def rows_of(values: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(sorted_now, values), len(now) - 1)
        return np.where(sorted_now[at] == values, order[at], -1)

    ends = rows_of(saved_pairs.reshape(-1)).reshape(-1, 2)
    ends = ends[(ends >= 0).all(axis=1)]
    pairs = np.sort(ends, axis=1)
    return pairs, np.flatnonzero(~np.isin(now, saved))


def store_pairs(store: VectorStore, ids: Sequence[str], shas: Sequence[str],
                vectors: np.ndarray | Callable[[], np.ndarray], phashes: Sequence[str],
                thumbs: Sequence[bytes], rules: DuplicateRules, show_progress: bool = False,
                checksums: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """The rule pairs (rows) among the store's products (rows aligned with ``ids``; only
    the first product of each photo file, :func:`vitrine.dedupe_groups.distinct_rows`, for
    ``duplicate_groups`` to join the others by content) and how many products were compared
    with the whole store (all of them unless the store's saved pairs could be reused); the
    pairs found are saved for the next search. With ``show_progress``, a search that takes
    a while shows its bar (:func:`vitrine.dedupe_pairs.search_progress`): the whole store's of
    :data:`vitrine.dedupe_pairs.PROGRESS_FROM` products or more, or as many pairs among the
    products changed (a re-run that changed nothing showed a bar: helper-167).

    ``vectors`` may be a function that reads them, with their ``checksums``
    (:func:`store_checksums`): it is called only when a product is to be searched, so a
    store whose saved pairs hold for every product never has its vectors in memory."""
    everyone = len(ids)
    rows, row_of = distinct_rows(shas)
    shared = shared_photos(shas, rows, row_of)
    lent = not callable(vectors)  # (the caller's array: not reordered, dedupe_search._in_front)
    if checksums is None:
        vectors = vectors() if callable(vectors) else vectors
        checksums = vector_checksums(vectors)
    whole = len(rows) == everyone
    if not whole:  # (not a second copy of the vectors for it: only_rows)
        ids, shas, phashes, thumbs = ([column[i] for i in rows]
                                      for column in (ids, shas, phashes, thumbs))
        checksums = checksums[rows]

    def searched() -> np.ndarray:  # (read now, if they were not: by rule_pairs, after its
        # thumbnail search)
        return only_rows(rows, vectors() if callable(vectors) else vectors)[0]

    def reader() -> np.ndarray | Callable[[], np.ndarray]:
        """What rule_pairs is given: ``searched``, whose array is the search's own (read
        for it, or rows copied out of the caller's), else the caller's array itself, which
        the search must not reorder, even for a while (another thread may read it, and an
        interrupt in the middle of a swap loses a row)."""
        return searched() if lent and whole else searched

    manifest = store.manifest()
    key = fingerprint(rules, manifest.as_dict() if manifest else None)
    now = digests(ids, shas, checksums, thumbs)
    data = store.duplicate_cache()
    saved = decode(data, key)
    pairs = changed = None
    if saved is not None:
        pairs, changed = known_pairs(now, *saved)
        if len(changed) > changed_limit(len(ids)):
            changed = None
    searched_rows = len(ids) if changed is None else len(changed)  # (each against the store)
    big = searched_rows * len(ids) >= dedupe_pairs.PROGRESS_FROM ** 2
    with dedupe_pairs.search_progress(everyone, show_progress and big) as advance:
        # (the bar counts every product)
        advance(dedupe_pairs.SEARCH_STEPS * (everyone - len(rows)))
        if changed is not None:
            if len(changed):
                found = rule_pairs(reader(), phashes, thumbs, rules, advance, among=changed)
            else:  # (nothing to search: no vector read)
                found = np.empty((0, 2), np.int64)
                advance(dedupe_pairs.SEARCH_STEPS * len(rows))
            if len(changed) or len(pairs) < len(saved[1]) or len(now) < len(saved[0]) \
                    or not _same_shared(data, shared):
                pairs = np.unique(np.concatenate([pairs, found]), axis=0)
                _save(store, encode(key, now, pairs, shas, shared))
            return rows[pairs], int(np.isin(row_of, changed).sum())
        pairs = rule_pairs(reader(), phashes, thumbs, rules, advance)
    _save(store, encode(key, now, pairs, shas, shared))
    return rows[pairs], len(row_of)


def _save(store: VectorStore, data: bytes) -> None:
    """Save the pairs for the next search; they only spare it work, so a store that cannot
    take them now (a full disk: the products are written already) is searched whole next
    time."""
    with contextlib.suppress(StoreError):
        store.set_duplicate_cache(data)
