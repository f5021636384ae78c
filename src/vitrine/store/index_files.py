"""The embedded store's FAISS index: a cache of the vectors in SQLite, kept in files named by
the database's write generation and build parameters (``index.<generation>.<tag>.faiss``).

A write generation that has no file of its own is searched, where it can be, through the
newest saved index and the products written since (:class:`vitrine.ann.LayeredIndex`): every
write records the row ids it touched in the ``changes`` table under its generation, so the
rows written after a saved index are known without comparing the whole store. This serves an
approximate index (HNSW, IVF: minutes to build for a large store) and an exact flat one (whose
rebuild reads every vector and writes them all again: seconds per write through the API at
90,000 products) while at most :data:`RECENT_MAX` products (and a tenth of the store) changed
since it was saved; past that the index is rebuilt from SQLite and saved, and the writer that
saved it forgets the changes it covers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import faiss
import numpy as np

from vitrine.ann import IdSet, IndexConfig, LayeredIndex, VectorIndex, build_index
from vitrine.errors import StoreError

RECENT_MAX = 10_000
"""Most products written since the saved index that a search takes from an exact flat layer
(a flat search of 10,000 × 1,280-d vectors costs about a millisecond, on the order of an HNSW
search); more, and the index is rebuilt."""
SHARED_PHOTOS = 1 / 32
"""The share of products whose photo file another has from which an HNSW index build reads
the vectors twice, their distinct ones counted first (so its storage is made for as many,
not for every product: :func:`vitrine.ann.build_index`). The first reading took 0.77 s of
an 11.7 s build of 20,000 1,280-d products (a fifth of them one photo), a busy machine."""
CHANGES_SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY, gen INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS changes_gen ON changes(gen);
"""

Index = VectorIndex | LayeredIndex
INDEX_FILE = re.compile(r"index\.(\d+)\.(.+)\.faiss")
"""A saved index: its generation ``[1]`` and tag ``[2]`` (:meth:`IndexConfig.tag`)."""
INDEX_TMP = re.compile(r"index\..+\.faiss\.(\d+)\.\d+\.tmp")
"""An index file being saved (:meth:`IndexFiles._save`) by the process numbered ``[1]``: by
a reader or the server's rebuild thread too, which do not hold the writer lock."""
FOLDER_TICK_NS = 2_000_000_000
"""How long after a change of a store folder its modification time may not tell a second
change apart yet (file systems stamp it at a clock tick: a few milliseconds, up to 2 s on
some): a searcher holding a layered index looks at the saved files again at each search
until it is older (:meth:`IndexFiles.stamp`)."""

_saves: dict[Path, int] = {}
"""Index files saved by this process, per store folder (:meth:`IndexFiles.stamp`)."""
_saves_lock = threading.Lock()


def stored_vectors(blobs: Sequence[bytes], dim: int | None, root: Path,
                   names: Sequence[str] | None = None) -> np.ndarray:
    """The stored vectors ``blobs`` as one (n, dim) float32 array (``dim`` None: as wide as
    the first); a StoreError, naming the product when ``names`` (aligned) are given, when one
    is not ``dim`` floats: a row edited or damaged was numpy's or FAISS's traceback in
    `search`, `similar`, `related` and `migrate`."""
    width = 4 * dim if dim else len(blobs[0]) if blobs else 0
    bad = next((i for i, b in enumerate(blobs) if len(b) != width or width % 4), None)
    if bad is not None:
        which = f" of product {names[bad]!r}" if names is not None else ""
        raise StoreError(f"a stored vector{which} in {root} is damaged ({len(blobs[bad])} "
                         f"bytes, not the model's {dim} floats); index the catalogue into a "
                         "new store, or restore this one from a backup.")
    return np.frombuffer(bytearray().join(blobs), np.float32).reshape(len(blobs), width // 4)


class IndexFiles:
    """Finds, layers, builds and saves the index of one store folder."""

    def __init__(self, root: Path, config: IndexConfig, db: sqlite3.Connection,
                 dim: Callable[[], int], meta: Callable[[str], str | None],
                 forget_changes: Callable[[int], None]):
        """``meta`` reads the store's meta table; ``forget_changes(g)`` deletes the changes
        up to generation ``g`` in a write transaction and records it (``changes_pruned``)."""
        self.root, self.config, self.db, self.dim = root, config, db, dim
        self.meta, self.forget_changes = meta, forget_changes
        self._base: tuple[VectorIndex, int, str] | None = None
        """The newest saved index this process loaded or built: (index, generation, tag)."""
        self._layer: tuple[VectorIndex, int, LayeredIndex] | None = None
        """The last layered index made: (its base, its generation, the index)."""
        self.unsaved: str | None = None
        """Why the last index this process tried to save was not saved (a full disk), None
        when it was: each later process builds the whole index in its first search."""

    def path(self, generation: int, n: int) -> Path:
        return self.root / f"index.{generation}.{self.config.tag(n)}.faiss"

    def saved(self, tag: str = "*") -> list[tuple[int, Path]]:
        """The index files in the folder (of ``tag``), with the generation each is named by."""
        found = ((INDEX_FILE.fullmatch(path.name), path)
                 for path in self.root.glob(f"index.*.{tag}.faiss"))
        return [(int(m[1]), path) for m, path in found if m]

    def stamp(self) -> tuple[int, int | None]:
        """What a searcher holding a layered index compares at each search (no listing of
        the folder) to tell whether an index to layer on may have been saved since it made
        it: this process's saves in the folder, and the folder's modification time for
        other processes' (None while too recent to tell a later change in the same clock
        tick apart: looked at again). The server's rebuild saves its index under the
        generation of its snapshot, older than the current one when writes came during the
        build: its searches kept the old base and a growing layer (16 ms a search instead of
        1 ms at 50,000 products) until the next write."""
        try:
            mtime = os.stat(self.root).st_mtime_ns
        except OSError:
            mtime = None
        if mtime is not None and time.time_ns() - mtime < FOLDER_TICK_NS:
            mtime = None
        return _saves.get(self.root, 0), mtime

    def newest_generation(self) -> int:
        """The newest generation an index file in the folder is named by (0: none)."""
        return max((gen for gen, _ in self.saved()), default=0)

    def current(self, generation: int, n: int, writer: bool, build: bool = True
                ) -> Index | None:
        """The index of ``generation`` (``n`` products): its file, the newest saved index
        layered with the products written since, or a new build (saved; ``writer`` also
        forgets the changes it covers); None instead of a build unless ``build`` (a searcher
        looking again at the generation it holds a layered index of: it keeps that one)."""
        path = self.path(generation, n)
        if self._base is not None and self._base[1:] == (generation, self.config.tag(n)):
            self._layer = None
            return self._base[0]
        if path.exists():
            with contextlib.suppress(RuntimeError):
                index = VectorIndex.load(path, self.config)
                self._base, self._layer = (index, generation, self.config.tag(n)), None
                return index  # (the last layer and its base are let go: gigabytes at 300,000)
        layered = self._layered(generation, n, writer)
        if layered is not None or not build:
            return layered
        self._layer = None
        index = self._build(n)
        self._base = (index, generation, self.config.tag(n))
        # a reader told a kind of its own (VITRINE_INDEX=flat) keeps the store's other files
        # (the server's graph, which the next writer would otherwise rebuild)
        self._save(index, path, generation, writer,
                   others=writer or self.config.kind == "auto")
        return index

    def flush(self, generation: int, n: int, writer: bool, rebuild: bool = True) -> None:
        """Make sure a searcher of ``generation`` finds a saved index file to start from: this
        generation's, or one to layer it on (the one in memory is saved when the files are
        gone: another process may have removed them), else a rebuild. Without ``rebuild``
        (a write through the API) any saved index to layer on will do, and none at all
        (the store grew past the approximate index's size, say): the build is left to
        :meth:`rebuild` beside the server."""
        if not self.path(generation, n).exists():
            # a flush keeps the writer's limit
            found = self._layer_base(generation, n, writer=True, limit=rebuild)
            if found is None:
                if rebuild:  # else (no saved index of this size's kind) left to rebuild()
                    self.current(generation, n, writer)
            elif found[1] is None and not self.path(self._base[1], n).exists():
                base, base_gen, _ = self._base  # (its file removed by another process)
                self._save(base, self.path(base_gen, n), base_gen, writer)
        if writer:
            self._forget_saved(self.config.tag(n))

    def _forget_saved(self, tag: str) -> None:
        """Forget the changes the newest saved index of ``tag`` (the writer's, which it
        layers on) covers, where an index saved without the writer lock (the server's
        rebuild) left them: every product ever written stayed a row (3,659 rows for 2,230
        products after a 10-minute run of the API). Not another tag's: a reader told
        another kind saved its own build, and the writer's base lost its changes."""
        newest = max((gen for gen, _ in self.saved(tag)), default=0)
        if newest > int(self.meta("changes_pruned") or 0) and not self.db.in_transaction:
            with contextlib.suppress(sqlite3.OperationalError, StoreError):  # next time
                self.forget_changes(newest)

    def reader_layers(self, generation: int, n: int) -> bool:
        """Whether a reader's search of ``generation`` layers on a saved index rather than
        building one itself (a reader told ``flat`` on a store of HNSW graphs; no index
        saved at all)."""
        return self.path(generation, n).exists() or \
            self._layer_base(generation, n, writer=False) is not None

    def due(self, generation: int, n: int) -> bool:
        """Whether the index of ``generation`` should be rebuilt: no file of its own, and
        none to layer it on within a writer's limit."""
        return not self.path(generation, n).exists() and \
            self._layer_base(generation, n, writer=True) is None

    def rebuild(self, generation: int, n: int, still_ours: Callable[[], bool]) -> str | None:
        """Build the index of ``generation`` (``n`` products) from the database and save it,
        for every process's searches to start from; run in a read snapshot of that
        generation. Not saved when ``still_ours()`` says the folder's database is now
        another (deleted and indexed anew meanwhile). None when saved, else why not. (The
        changes it covers are forgotten by the next writer's flush.)"""
        index = self._build(n)
        if not still_ours():
            return "the store was deleted and indexed anew meanwhile"
        return self._save(index, self.path(generation, n), generation, writer=False)

    # ---- layering ---------------------------------------------------------------------------
    def _layer_base(self, generation: int, n: int, writer: bool, limit: bool = True
                    ) -> tuple[int, Path | None] | None:
        """The generation of the saved index to layer ``generation`` on and its file (None:
        the one in memory), when there is one and few enough products changed since
        (without ``limit``, any number).

        A writer takes an index of the store size's kind, and at most ``RECENT_MAX`` (and a
        tenth of the store) changed products: past that it rebuilds (``vitrine index``), or
        the server rebuilds beside its requests. A reader takes twice as many on a flat
        index of the store's kind (rebuilt in seconds); it does not build an approximate
        index in a search while it can layer: it takes an index of the other kind too (a
        store crossing the size of the approximate index, flat ⇄ HNSW, until the rebuild of
        the new kind is saved), and up to half the store changed (an exact layer of that
        size costs milliseconds a search and a copy at each write, 0.1 s at 14,000 rows;
        a build in the search, minutes at 300,000 products); told ``flat``, it takes no
        approximate index."""
        tag = self.config.tag(n)
        candidates = [self._newest_saved(generation, tag)]
        # (another tag's index of this very generation too where this one's kind is
        # approximate: a base with an empty layer rather than the graph built in the search;
        # a flat index is built, in seconds, where an approximate one would be layered on)
        other = None if writer else self._newest_saved(
            generation, None, this_one=self.config.resolve(n) != "flat")
        # the newest of either kind, where the own kind's will not do (a store crossing the
        # size; another process's settings), but not an approximate one where `flat` was
        # named: VITRINE_INDEX=flat searched a saved HNSW graph for as long as no flat index
        # was saved (an exact base serves every kind: an approximate one built in a search
        # takes minutes)
        if other is not None and (self.config.kind != "flat" or self._kind(other) == "flat"):
            candidates.append(other)
        changes_from = self._changes_from(generation)
        most = min(RECENT_MAX, n // 10)
        for best in candidates:
            if best is None or best[0] < changes_from:
                continue
            if not limit:
                return best
            changed = self.db.execute("SELECT COUNT(*) FROM changes WHERE gen > ?",
                                      (best[0],)).fetchone()[0]
            # a flat index of the store's kind is rebuilt in a second or two; the layer is
            # copied at each write, so a reader takes it as large only where a build takes
            # minutes (an approximate index, or one of the other kind)
            cheap = self._kind(best) == "flat" and self.config.resolve(n) == "flat"
            if changed <= (most if writer else 2 * most if cheap else max(2 * most, n // 2)):
                return best
        return None

    def _kind(self, found: tuple[int, Path | None]) -> str:
        """The kind of the saved index ``found`` (:meth:`_newest_saved`): of its tag."""
        tag = self._base[2] if found[1] is None else INDEX_FILE.fullmatch(found[1].name)[2]
        return re.match(r"[a-z]+", tag)[0]

    def _newest_saved(self, generation: int, tag: str | None, this_one: bool = False
                      ) -> tuple[int, Path | None] | None:
        """The newest index older than ``generation`` (``this_one``: or of it) of ``tag``
        (None: of any), saved or in memory (path None, when it is at least as new as every
        file). Another tag's index of ``generation`` itself is a base with an empty layer:
        a setting changed (``VITRINE_INDEX=hnsw``, a lower ``ANN_MIN_ITEMS``, ``HNSW_M``…)
        on a store not written since built the HNSW graph in the first search (7 s in
        `vitrine similar` at 50,000 products, 11 s in the server, holding the store)."""
        newest = generation if this_one else generation - 1
        best = max(((gen, path) for gen, path in self.saved(tag or "*") if gen <= newest),
                   default=None)
        if self._base is not None and self._base[2] == (tag or self._base[2]) \
                and self._base[1] <= newest and (best is None or self._base[1] >= best[0]):
            best = (self._base[1], None)
        return best

    def _changes_from(self, generation: int) -> int:
        """The generation of the oldest saved index that ``changes`` can bring up to
        ``generation``: every write after it recorded its rows there (none when the last
        write did not: a Vitrine from before them), and none of them has been forgotten by a
        writer that saved a newer index (another process may hold an older one in memory)."""
        changes_from = self.meta("changes_from")
        if changes_from is None or self.meta("tracked") != str(generation):
            return 1 << 62
        return max(int(changes_from) - 1, int(self.meta("changes_pruned") or 0))

    def _layered(self, generation: int, n: int, writer: bool) -> LayeredIndex | None:
        for _ in range(3):  # a file another process removes meanwhile: look again
            found = self._layer_base(generation, n, writer)
            if found is None:
                return None
            base_gen, path = found
            if path is None:
                base = self._base[0]
                break
            try:
                base = VectorIndex.load(path, self.config)
            except RuntimeError:
                continue
            self._base = (base, base_gen, INDEX_FILE.fullmatch(path.name)[2])
            break
        else:
            return None
        # the layer of an earlier generation on the same base takes only the rows written
        # since it (a reader read every changed row again at each write: 0.5 s a write for
        # 19,000 rows, seconds for the half of a large store it may hold)
        last = self._layer
        if last is not None and last[0] is base and last[1] == generation:
            return last[2]  # (looked again after a save, and nothing newer to layer on)
        since = last[1] if last is not None and last[0] is base and last[1] < generation \
            else base_gen
        rows = self.db.execute(
            "SELECT c.id, p.vector FROM changes c LEFT JOIN products p ON p.id = c.id "
            "WHERE c.gen > ? ORDER BY c.id", (since,)).fetchall()
        changed = np.array([r[0] for r in rows], np.int64)
        present = [r for r in rows if r[1] is not None]
        ids = np.array([r[0] for r in present], np.int64)
        vecs = stored_vectors([r[1] for r in present], self.dim(), self.root)
        if since != base_gen:
            earlier = last[2]
            kept_ids, kept_vecs = _layer_rows(earlier.recent)
            kept = ~np.isin(kept_ids, changed)
            ids = np.concatenate([kept_ids[kept], ids])
            vecs = np.concatenate([kept_vecs[kept], vecs.reshape(-1, kept_vecs.shape[1])])
            changed = np.concatenate([earlier.hidden.ids, changed])
        flat = IndexConfig.defaults(kind="flat")
        recent = build_index(flat, vecs.shape[1], len(ids), [(ids, vecs)])
        layered = LayeredIndex(base, recent, IdSet(changed), n)
        self._layer = (base, generation, layered)
        return layered

    # ---- building and saving ----------------------------------------------------------------
    def _build(self, n: int, batch: int = 20_000, read: int = 1_000) -> VectorIndex:
        """Build from SQLite in batches of ``batch`` rows (bounded memory), each filled
        ``read`` rows at a time (the rows' bytes of a whole batch, and their copy as one
        array, were twice its size at once). A flat index is filled ``read`` rows at a time:
        it holds its vectors as they were added, whatever the batches (an HNSW graph and an
        inverted file's lists are built from each batch as a whole)."""
        if self.config.resolve(n) == "flat":
            batch = min(batch, read)

        def batches():
            cursor = self.db.execute("SELECT id, vector FROM products ORDER BY id")
            dim = self.dim()
            while True:
                ids, vecs, filled = np.empty(batch, np.int64), None, 0
                while filled < batch and (rows := cursor.fetchmany(min(read, batch - filled))):
                    part = stored_vectors([r[1] for r in rows], dim, self.root)
                    if vecs is None:
                        vecs = np.empty((batch, part.shape[1]), np.float32)
                    ids[filled:filled + len(rows)] = [r[0] for r in rows]
                    vecs[filled:filled + len(rows)] = part
                    filled += len(rows)
                if not filled:
                    return
                yield ids[:filled], vecs[:filled]

        def sample(m: int) -> np.ndarray:
            rows = self.db.execute("SELECT vector FROM products ORDER BY random() LIMIT ?",
                                   (m,)).fetchall()
            return stored_vectors([r[0] for r in rows], self.dim(), self.root)

        # an HNSW graph holds one node per distinct vector, its storage made for as many:
        # counted in a first reading where many products share a photo file (ann.build_index)
        twice = self.config.resolve(n) == "hnsw" and self.db.execute(
            "SELECT COUNT(DISTINCT content_sha256) FROM products").fetchone()[0] < (
                n - n * SHARED_PHOTOS)
        return build_index(self.config, self.dim(), n, batches if twice else batches(), sample)

    def _save(self, index: VectorIndex, path: Path, generation: int,
              writer: bool, others: bool = True) -> str | None:
        """Save atomically and remove older files (without ``others``, only those of its
        own tag); a writer also forgets the changes up to ``generation`` (no searcher layers
        on an older index once this one is there). None when it was saved, else why not
        (the system's words: a full disk, a permission)."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{id(index)}.tmp")
        try:
            index.save(tmp)
            os.replace(tmp, path)
            with _saves_lock:  # (this process's searchers look again: stamp())
                _saves[self.root] = _saves.get(self.root, 0) + 1
            for gen, old in self.saved("*" if others else INDEX_FILE.fullmatch(path.name)[2]):
                if gen < generation:
                    old.unlink(missing_ok=True)
        except (OSError, RuntimeError) as exc:
            # a read-only store still searches from the in-memory index; a full disk kept
            # the part written, one more with each process that tried
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self.unsaved = getattr(exc, "strerror", None) or _faiss_reason(exc)
            return self.unsaved
        self.unsaved = None
        if writer and not self.db.in_transaction:  # (not inside a search's read snapshot)
            with contextlib.suppress(sqlite3.OperationalError, StoreError):  # next time
                self.forget_changes(generation)
        return None


def _faiss_reason(exc: Exception) -> str:
    """The system's words in a FAISS error ("No space left on device"), which ends its
    C++ assertion ("Error in void faiss::write_index(...) at .../index_write.cpp:499: Error:
    'ret == (size * 4)' failed: write error in ....tmp: 1265582 != 5201920 (No space left on
    device)"): that whole line was the report's ``index_unsaved`` and the terminal's note on
    a full disk; else its last line."""
    line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    said = re.search(r"write error in .*\(([^()]+)\)$", line)
    return said[1] if said else line


def _layer_rows(recent: VectorIndex) -> tuple[np.ndarray, np.ndarray]:
    """The ids and vectors of a layer's exact flat index (the vectors a view of its own)."""
    ids = faiss.vector_to_array(recent.index.id_map)
    dim = recent.inner.d
    if not len(ids):
        return ids, np.zeros((0, dim), np.float32)
    return ids, faiss.rev_swig_ptr(recent.inner.get_xb(), len(ids) * dim).reshape(-1, dim)
