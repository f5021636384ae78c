"""The store's FAISS index: exact (flat, fp32 or fp16) or approximate (HNSW or IVF), chosen
from the store's size and the settings, built in bounded-memory batches.

Vectors are L2-normalised, so inner product is cosine. Category filters are answered exactly
over the category's vectors when it has at most ``filter_exact_max`` products; a larger
category takes the approximate top ``2k/share`` and keeps its members, falling back to exact
search when fewer than ``k`` are members (see ``benchmarks/filtered_search.py``). Searches
past hidden ids are :mod:`vitrine.ann_hidden`'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from pathlib import Path

import faiss
import numpy as np

from vitrine.ann_distinct import Copies, Distinct
from vitrine.ann_hidden import HiddenSearch
from vitrine.ann_layers import (  # noqa: F401 - LayeredIndex importable from here, as before
    EMPTY,
    IdSet,
    LayeredIndex,
    Result,
    as_id_set,
    ranked,
)
from vitrine.config import Settings

KINDS = ("auto", "flat", "hnsw", "ivf")
AUTO_ANN = "hnsw"
"""The approximate kind ``auto`` picks; measured with ``vitrine bench --items 1000000``."""
MAX_WIDE_EF = 2048
"""Most candidates fetched to post-filter a large category before searching it exactly."""
TIE_DEPTH = 256
"""Results a search asks for again (or twice k) when the k-th score and the next are equal
(copies of one photo), so that its top k takes equal scores by id: a larger group of equal
scores at the cut (hundreds of products sharing a placeholder photo) is cut where FAISS met
them; asking until the whole group was in took a flat search of 100,000 products with 5,000
such copies from 64 ms to 1 s."""
TRAIN_PER_LIST = 32
"""IVF k-means sample: this many vectors per list (FAISS warns below 39; 32 is measured
enough on product-like clustered vectors and keeps training short on two cores)."""


@dataclass(frozen=True)
class IndexConfig:
    """How the store's index is built and searched: the index settings of
    :class:`vitrine.config.Settings` (their defaults and meaning are there)."""

    kind: str
    fp16: bool | None
    ann_min_items: int
    hnsw_m: int
    hnsw_ef_construction: int
    hnsw_ef_search: int
    ivf_nlist: int
    ivf_nprobe: int
    filter_exact_max: int

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexConfig:
        same = {f.name: getattr(settings, f.name) for f in fields(cls)
                if f.name not in ("kind", "fp16")}
        return cls(kind=settings.index, fp16=settings.index_fp16, **same)

    @classmethod
    def defaults(cls, **changes) -> IndexConfig:
        """The settings' defaults (the environment is not read), with ``changes``."""
        return replace(cls.from_settings(Settings.model_construct()), **changes)

    def resolve(self, n: int) -> str:
        """The kind of index for a store of ``n`` products: 'flat', 'hnsw' or 'ivf'."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if self.kind == "auto":
            return AUTO_ANN if n >= self.ann_min_items else "flat"
        if self.kind == "ivf" and n < 16:
            return "flat"  # too few vectors to train even one list
        return self.kind

    def nlist(self, n: int) -> int:
        """IVF lists: the setting, else about 2·√n rounded to a power of two (64…65536);
        never more than n/16, so that every list has vectors to train on."""
        wanted = self.ivf_nlist if self.ivf_nlist > 0 else \
            min(65536, max(64, 2 ** round(math.log2(2 * math.sqrt(max(n, 1))))))
        return int(max(1, min(wanted, n // 16)))

    def half(self, kind: str) -> bool:
        """Whether an index of ``kind`` stores fp16 vectors (unset: approximate ones do)."""
        return self.fp16 if self.fp16 is not None else kind != "flat"

    def tag(self, n: int) -> str:
        """Names the build-time parameters, so a cached index built otherwise is not reused."""
        kind = self.resolve(n)
        storage = "fp16" if self.half(kind) else "fp32"
        if kind == "hnsw":
            return f"hnsw{self.hnsw_m}x{self.hnsw_ef_construction}-{storage}"
        if kind == "ivf":
            return f"ivf{self.nlist(n)}-{storage}"
        return f"flat-{storage}"


def describe(config: IndexConfig, n: int) -> dict:
    """The index a store of ``n`` products is searched with under ``config``: its kind,
    whether it is exact, its storage and parameters, and a ``note`` where a setting could not
    be followed for a store of this size (an IVF list count above n/16 was used as n/16
    without a word, and an IVF index of fewer than 16 vectors is flat)."""
    kind = config.resolve(n)
    about: dict = {"kind": kind, "exact": kind == "flat",
                   "storage": "fp16" if config.half(kind) else "fp32"}
    if kind == "hnsw":
        about.update(m=config.hnsw_m, ef_construction=config.hnsw_ef_construction,
                     ef_search=config.hnsw_ef_search)
    elif kind == "ivf":
        lists = config.nlist(n)
        about.update(lists=lists, nprobe=min(lists, config.ivf_nprobe))
        if config.ivf_nlist > lists:
            about["note"] = (f"VITRINE_IVF_NLIST={config.ivf_nlist} asks for more lists than "
                             f"{n:,} products can train (one list per 16 at the most): "
                             f"{lists:,} are used")
    elif config.kind == "ivf":
        about["note"] = (f"VITRINE_INDEX=ivf needs 16 products or more to train; "
                         f"{n:,} are searched exactly")
    elif config.kind == "auto":
        about["approximate_from"] = config.ann_min_items
    return about


def new_index(config: IndexConfig, dim: int, n: int) -> faiss.Index:
    """An empty index of the configured kind for about ``n`` vectors."""
    ip = faiss.METRIC_INNER_PRODUCT
    kind = config.resolve(n)
    if kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)
        nlist = config.nlist(n)
        if config.half(kind):
            return faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                                 faiss.ScalarQuantizer.QT_fp16, ip)
        return faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
    if kind == "hnsw":
        if config.half(kind):
            inner = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, config.hnsw_m, ip)
        else:
            inner = faiss.IndexHNSWFlat(dim, config.hnsw_m, ip)
        inner.hnsw.efConstruction = config.hnsw_ef_construction
        inner.hnsw.efSearch = config.hnsw_ef_search
    elif config.half(kind):
        inner = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, ip)
    else:
        inner = faiss.IndexFlatIP(dim)
    return faiss.IndexIDMap(inner)


Batches = Iterable[tuple[np.ndarray, np.ndarray]]
"""(int64 ids, float32 vectors) batches, ids ascending."""


def build_index(config: IndexConfig, dim: int, n: int,
                batches: Batches | Callable[[], Batches],
                sample: Callable[[int], np.ndarray] | None = None) -> VectorIndex:
    """Build the index for ``n`` vectors arriving in ``batches`` (or read anew by each call
    of ``batches()``); ``sample(m)`` returns about ``m`` of them for training an IVF index.

    An HNSW graph holds one node per distinct vector (:mod:`vitrine.ann_distinct`), and its
    storage is made once for as many (:func:`_reserve`): they are counted first where the
    batches can be read twice (a function, a list), else it is made for ``n`` (made for
    ``n`` always, 50,000 products of one photo, 1,280-d, kept 128 MB for 1.2 MB of index:
    the room is written as it is made, and FAISS gives no way to shrink it)."""
    read = batches if callable(batches) else lambda: batches
    index = new_index(config, dim, n)
    if not index.is_trained:
        if sample is None:
            raise ValueError("an IVF index needs a training sample")
        train = np.ascontiguousarray(sample(TRAIN_PER_LIST * config.nlist(n)), np.float32)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10
        ivf.cp.max_points_per_centroid = TRAIN_PER_LIST
        ivf.cp.min_points_per_centroid = 1  # (FAISS's 39 warned at every build, about the
        # sample chosen here: TRAIN_PER_LIST per list, or every vector of a small store)
        index.train(train)
    distinct = Distinct() if config.resolve(n) == "hnsw" else None  # (ann_distinct)
    twice = callable(batches) or isinstance(batches, (list, tuple))
    _reserve(index, Distinct.count(read()) if distinct is not None and twice else n)
    for ids, vecs in read():
        if distinct is not None:
            ids, vecs = distinct.nodes(np.asarray(ids, np.int64), vecs)
        index.add_with_ids(np.ascontiguousarray(vecs, np.float32),
                           np.ascontiguousarray(ids, np.int64))
    return VectorIndex(index, config, None if distinct is None else distinct.copies())


def _reserve(index: faiss.Index, n: int) -> None:
    """Room in a flat index (or an HNSW graph's flat storage) for ``n`` vectors before they
    are added: each batch added grew its array, a larger one made beside the old at each
    step (at 65,024 products, 300 MB beside 200 MB and the batch; benchmarks/index_memory.py).
    The same vectors are added as before; only the array is made once. (A vector made
    larger than it is later filled is never made smaller: ``n`` is an HNSW graph's nodes.)"""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexHNSW):
        inner = faiss.downcast_index(inner.storage)
    if isinstance(inner, faiss.IndexFlatCodes) and inner.ntotal == 0 and n > 0:
        inner.codes.resize(n * inner.code_size)  # (a vector shrunk keeps its room)
        inner.codes.resize(0)


class VectorIndex(HiddenSearch):
    """A FAISS index and the configuration it is searched with."""

    def __init__(self, index: faiss.Index, config: IndexConfig, copies: Copies | None = None):
        self.index = index
        self.config = config
        self.copies = copies  # (ids whose vector is another's: no node of their own)
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) \
            else faiss.downcast_index(index)
        self.inner = inner
        if isinstance(inner, faiss.IndexHNSW):
            self.kind = "hnsw"
        elif isinstance(inner, faiss.IndexIVF):
            self.kind = "ivf"
        else:
            self.kind = "flat"
        self._id_map: np.ndarray | None = None
        self._order: np.ndarray | None = None
        self._lists: np.ndarray | None = None  # (IVF: each id's list)

    @classmethod
    def load(cls, path: Path, config: IndexConfig) -> VectorIndex:
        return cls(faiss.read_index(str(path)), config, Copies.read_from(path))

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))
        if self.copies is not None:
            self.copies.append_to(path)

    @property
    def ntotal(self) -> int:
        """The products searched: the index's vectors (:attr:`nodes`) and their copies."""
        return self.nodes + (len(self.copies) if self.copies is not None else 0)

    @property
    def nodes(self) -> int:
        return int(self.index.ntotal)

    def nbytes(self) -> int:
        """Bytes the index holds in memory (vectors or codes, graph links, ids)."""
        n, inner = self.nodes, self.inner
        if self.kind == "ivf":
            lists = inner.nlist * inner.d * 4
            return lists + n * (inner.code_size + 8)
        id_map = n * 8
        if self.kind == "hnsw":
            storage = faiss.downcast_index(inner.storage)
            links = inner.hnsw.neighbors.size() * 4 + inner.hnsw.offsets.size() * 8
            copies = self.copies.nbytes if self.copies is not None else 0
            return id_map + n * storage.code_size + links + n * 4 + copies  # (ann_distinct)
        return id_map + n * inner.code_size

    def search(self, query: np.ndarray, k: int, subset: IdSet | np.ndarray | None = None,
               hidden: IdSet | None = None) -> Result:
        """Top-``k`` (scores, ids) for one query, optionally only among the ids ``subset``, or
        among all but the ids ``hidden`` (a FAISS selector; :class:`LayeredIndex`; not both:
        a category is searched through the subset, the hidden ids filtered after).

        A subset of at most ``filter_exact_max`` ids is searched exactly. A larger one is
        searched approximately for the top ``2k/share`` ids, kept if ``k`` of them are in the
        subset, else exactly (a query far from the category: never a short or poor list).
        Runs on one OpenMP thread: for a single query, waking a thread team costs more than it
        saves (measured 8 ms vs 0.5 ms per HNSW query on two busy cores)."""
        query = np.ascontiguousarray(query, np.float32).reshape(1, -1)
        return self.search_many(query, k, subset, hidden, threads=1)[0]

    def search_many(self, queries: np.ndarray, k: int,
                    subset: IdSet | np.ndarray | None = None, hidden: IdSet | None = None, *,
                    threads: int | None = None, near: int | None = None) -> list[Result]:
        """:meth:`search` for each row of ``queries``, in one FAISS call where it can be (a
        batch of flat queries is one matrix product), on ``threads`` OpenMP threads (all by
        default). ``near``: how many of the ``hidden`` ids may be the queries' nearest (all
        of them by default: a product's copies, :mod:`vitrine.copies`), which an HNSW walk
        is widened to pass, or past more than M of them (:meth:`_links`) scans the vectors
        not hidden instead, and an IVF search probes the lists holding them besides
        (:class:`LayeredIndex` passes 0 for its rows written since)."""
        near = (len(hidden) if hidden is not None else 0) if near is None else near
        if subset is not None and hidden is not None:
            raise ValueError("search takes a subset or hidden ids, not both")
        queries = np.ascontiguousarray(queries, np.float32)
        before = faiss.omp_get_max_threads()
        if threads:
            faiss.omp_set_num_threads(threads)
        subset = as_id_set(subset)
        given = (subset, hidden)
        if self.copies is not None:  # searched as nodes, then each node's copies added
            subset, (hidden, near) = self.copies.among(subset), self.copies.past(hidden, near)
        try:
            # one more than k: equal scores at the k-th place are looked at below
            found = [ranked(*top) for top in self._found(queries, k + 1, subset, hidden, near)]
            deeper = min(self.nodes, max(2 * (k + 1), TIE_DEPTH))
            # FAISS keeps equal scores at its last place by where it met them (a product met
            # after them pushes out the lowest ids), so the top k of equal scores was not by
            # id: the top 7 ended with d and the top 8 with c, d. Asked once more, deeper,
            # when the k-th score is also the next one's (TIE_DEPTH): those queries in one
            # call (one at a time, a `related` page of 1,000 products sharing a placeholder
            # photo went from 0.7 s to 74 s on a flat index of 20,000)
            tied = [i for i, (scores, ids) in enumerate(found)
                    if 0 < k < len(ids) and scores[k] == scores[k - 1] and deeper > len(ids)]
            if tied:
                again = self._found(queries[tied], deeper, subset, hidden, near)
                for i, top in zip(tied, again, strict=True):
                    found[i] = ranked(*top)
            # (each node's copies given from every node found: one tied with the k-th,
            # its own id hidden or out of the subset, may give a lower id than the k-th's)
            found = [(top[0][:k], top[1][:k]) if self.copies is None else
                     self.copies.expand(top, k, *given) for top in found]
        finally:
            faiss.omp_set_num_threads(before)
        return found

    def _found(self, queries: np.ndarray, k: int, subset: IdSet | None,
               hidden: IdSet | None, near: int = 0) -> list[Result]:
        """:meth:`search_many`'s top ``k`` of each query, in FAISS's order, scores clipped:
        fp16 storage rounds a photo's score against itself to 1.000009 (a cosine is at
        most 1)."""
        if min(k, self.nodes) <= 0:  # (a layer of deletes alone: FAISS asserts k > 0)
            return [EMPTY] * len(queries)
        if hidden is not None:
            found = self._found_past(queries, k, hidden, near)  # (ann_hidden)
        else:
            found = self._search(queries, k, subset)
        return [(np.clip(scores, -1.0, 1.0), ids) for scores, ids in found]

    def _search(self, queries: np.ndarray, k: int, subset: IdSet | None) -> list[Result]:
        k = min(k, self.nodes)
        if k <= 0 or (subset is not None and len(subset) == 0):
            return [EMPTY] * len(queries)
        if subset is None:
            return self._top(queries, k, self._params(k))
        if self.kind == "flat" or len(subset) <= self.config.filter_exact_max:
            return self._exact(queries, k, subset)
        fetch = min(self.nodes, MAX_WIDE_EF,
                    max(k, math.ceil(2 * k * self.nodes / len(subset))))
        found: list[Result] = []
        short = []  # far from the category: searched exactly
        for i, (scores, ids) in enumerate(self._top(queries, fetch, self._params(fetch),
                                                    refill=False)):
            member = subset.contains(ids)
            found.append((scores[member][:k], ids[member][:k]))
            if member.sum() < k:
                short.append(i)
        if short:
            for i, exact in zip(short, self._exact(queries[short], k, subset), strict=True):
                found[i] = exact
        return found

    def _top(self, queries: np.ndarray, k: int, params: faiss.SearchParameters,
             refill: bool = True) -> list[Result]:
        """The top ``k`` of each query; with ``refill``, an IVF query whose probed lists held
        fewer probes every list (not for a category's candidates: too few members there are
        searched exactly, :meth:`_search`)."""
        scores, ids = self.index.search(queries, k, params=params)
        found = [(s[i >= 0], i[i >= 0]) for s, i in zip(scores, ids, strict=True)]
        if refill and self.kind == "ivf" and params.nprobe < self.inner.nlist:
            # the lists probed held fewer than k (VITRINE_IVF_NPROBE=1: 2 queries in 100 got
            # a short list, helper-160): those queries probe every list
            short = [i for i, (_, got) in enumerate(found) if len(got) < k]
            if short:
                every = faiss.SearchParametersIVF()
                every.nprobe = self.inner.nlist
                if params.sel is not None:
                    every.sel = params.sel
                for i, again in zip(short, self._top(queries[short], k, every), strict=True):
                    found[i] = again
        return found

    def search_breadth(self, k: int) -> int | None:
        """The breadth a search for ``k`` runs with: HNSW's efSearch (the configured one, at
        least ``k``), IVF's nprobe (at most its lists); None for a flat index."""
        if self.kind == "hnsw":
            return max(self.config.hnsw_ef_search, k)
        if self.kind == "ivf":
            return min(self.inner.nlist, self.config.ivf_nprobe)
        return None

    def _params(self, k: int) -> faiss.SearchParameters:
        """The configured search breadth (:meth:`search_breadth`)."""
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = self.search_breadth(k)
        elif self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = self.search_breadth(k)
        else:
            params = faiss.SearchParameters()
        return params

    def _exact(self, queries: np.ndarray, k: int, subset: IdSet) -> list[Result]:
        """Exact search among ``subset``: a selector over the stored vectors."""
        if self.kind == "hnsw":
            return self._exact_hnsw(queries, k, subset)
        params = faiss.SearchParametersIVF() if self.kind == "ivf" else faiss.SearchParameters()
        if self.kind == "ivf":
            params.nprobe = self.inner.nlist
        params.sel = subset.selector()
        return self._top(queries, k, params)

    def _ids_by_position(self) -> tuple[np.ndarray, np.ndarray]:
        """The HNSW's ids by position, and the positions that sort them."""
        if self._id_map is None or self._order is None:
            self._id_map = faiss.vector_to_array(self.index.id_map)
            self._order = np.argsort(self._id_map, kind="stable")
        return self._id_map, self._order

    def _exact_hnsw(self, queries: np.ndarray, k: int, subset: IdSet) -> list[Result]:
        """Exact search over the HNSW's stored vectors (which are indexed by position)."""
        id_map, order = self._ids_by_position()
        where = np.minimum(np.searchsorted(id_map, subset.ids, sorter=order), len(order) - 1)
        positions = order[where][id_map[order[where]] == subset.ids]
        return self._exact_positions(queries, k, positions)

    def _exact_positions(self, queries: np.ndarray, k: int,
                         positions: np.ndarray) -> list[Result]:
        """Exact search over the HNSW's stored vectors at ``positions``."""
        id_map = self._ids_by_position()[0]
        if len(positions) == 0:
            return [EMPTY] * len(queries)
        storage = faiss.downcast_index(self.inner.storage)
        selected = IdSet(positions)
        scores, pos = storage.search(queries, min(k, len(positions)),
                                     params=faiss.SearchParameters(sel=selected.selector()))
        return [(s[p >= 0], id_map[p[p >= 0]]) for s, p in zip(scores, pos, strict=True)]
