"""Exact and near-duplicate photos: content hash, perceptual hash (pHash), a colour thumbnail
and the CNN embedding.

Measured on the demo catalogue (benchmarks/dedupe_quality.py, 150 copies): a photo downscaled
to 60×80 and re-encoded keeps its pHash (≤ 4 bits apart) and its 16×16 colour thumbnail
(cosine ≥ 0.989), but its CNN embedding drops to cosine 0.52–0.85 with the original, below
many distinct products. So two photos are duplicates when

* their bytes are identical, or
* their thumbnails agree (cosine ≥ ``thumb_cosine``, and a mean colour difference over the
  pixels they do not share as background, or as a band along an edge, ≤
  ``max_colour_diff``: :func:`vitrine.dedupe_colour.colour_difference`)
  and so do their pHashes (Hamming distance ≤ ``phash_distance``): resized, recompressed,
  low-resolution copies. The colour check (copies differ by 2.5–9.5 of 255 on white,
  2.8–11.1 on #E4E4E4 grey: ``--background``) tells a photo's copy from the same shoe
  photographed in another colour, which shape-only checks group together; or
* their second views agree so (:mod:`vitrine.dedupe_views`: the product cut out of its
  border, turned one way among the 8 turns and flips of a square, with a 256-bit pHash of
  its own turned with it; a view near a tie between two ways compared in both), where their
  whole thumbnails and pHashes do not both agree: copies padded, squared onto a canvas,
  mirrored, or turned a quarter or half turn (a photo stored sideways); or
* their CNN embeddings are almost identical (cosine ≥ ``embed_cosine``) and their pHashes
  roughly agree (≤ ``2 × phash_distance``): recompressed or lightly edited copies.

Candidate pairs come from FAISS range searches (:mod:`vitrine.dedupe_search`), never from
an N×N matrix: exact up to :data:`vitrine.dedupe_search.EXACT_PAIRS_UP_TO` photos, through an
inverted file above; for the products of a store changed since its last search, those
against every product, exactly (``among``, ``vitrine.dedupe_store``).

``embed_cosine`` (0.97) is calibrated for pretrained features. A trained model pulls the photos
of one category together (with the demo's, different products, colour variants and look-alike
T-shirts, come as close as 0.984 with pHashes that agree, 0.980 without the class
probabilities; with pretrained features 0.960), so
``vitrine train`` calibrates the rule on its own vectors (:func:`calibrated_embed_cosine`) and
a store indexed with that model uses it. The rule leaves out the class probabilities at the end
of such a model's vectors (``probs_tail``): they say the category, not the photo.

The parts live beside this module: the FAISS range searches that find candidate pairs
(:mod:`vitrine.dedupe_search`), the colour check (:mod:`vitrine.dedupe_colour`), the rules
applied to a whole set of photos (:mod:`vitrine.dedupe_pairs`), the pairs joined into groups
(:mod:`vitrine.dedupe_groups`: :func:`~vitrine.dedupe_groups.find_duplicates`), the second
views (:mod:`vitrine.dedupe_views`), a store's saved pairs (:mod:`vitrine.dedupe_store`) and
``vitrine dedupe`` over folders (:mod:`vitrine.dedupe_files`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image

from vitrine.dedupe_search import PIXEL_CHUNK, Rows, _close_pairs
from vitrine.dedupe_views import fingerprint, whole


@dataclass(frozen=True)
class DuplicateRules:
    phash_distance: int = 6
    thumb_cosine: float = 0.985
    max_colour_diff: float = 12.0
    embed_cosine: float = 0.97
    probs_tail: int = 0
    """Trailing dimensions of the vectors that the embedding rule leaves out: a trained
    model's class probabilities, which tell the category, not the photo."""
    max_products: int = 1_000_000
    """``index`` searches its whole store for duplicates up to this many products (0:
    never): exact up to :data:`vitrine.dedupe_search.EXACT_PAIRS_UP_TO`, through an
    inverted file above (benchmarks/dedupe_scaling.py)."""

    @classmethod
    def from_settings(cls, settings, model_cosine: float | None = None,
                      probs_tail: int = 0) -> DuplicateRules:
        """The rules of ``settings``; an unset ``dup_embed_cosine`` is ``model_cosine`` (a
        trained model's calibrated value, ``Embedder.duplicate_rules``), else 0.97."""
        embed = settings.dup_embed_cosine
        if embed is None:
            embed = cls.embed_cosine if model_cosine is None else model_cosine
        return cls(settings.dup_phash_distance, settings.dup_thumb_cosine,
                   settings.dup_max_colour_diff, embed, probs_tail, settings.dup_max_products)

    def embedding_view(self, vectors: np.ndarray) -> np.ndarray:
        """The vectors the embedding rule compares: without the probabilities, L2-normalised
        again."""
        vecs = np.asarray(vectors, dtype=np.float32)
        if self.probs_tail:
            vecs = vecs[:, :-self.probs_tail]
            vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vecs)

    def embedding_array(self, vectors: np.ndarray) -> np.ndarray | None:
        """``vectors`` where :meth:`embedding_rows` gives their rows as they are (float32,
        C-contiguous, no probabilities left out), else None."""
        ok = isinstance(vectors, np.ndarray) and vectors.dtype == np.float32 and \
            vectors.ndim == 2 and vectors.flags.c_contiguous and vectors.flags.writeable
        return vectors if ok and not self.probs_tail else None

    def embedding_rows(self, vectors: np.ndarray) -> Rows:
        """:meth:`embedding_view` of the rows asked for (``_close_pairs``); a run of rows
        (a search's chunk, or all of them) as a view of ``vectors``, not a copy (5 kB a
        row; read only)."""
        def rows_of(rows: np.ndarray) -> np.ndarray:
            run = np.asarray(rows)
            if run.ndim == 1 and run.dtype.kind in "iu" and len(run) and run[0] >= 0 \
                    and run[-1] < len(vectors) and (np.diff(run) == 1).all():
                return self.embedding_view(vectors[run[0]:run[-1] + 1])
            return self.embedding_view(vectors[rows])

        return rows_of


CALIBRATION_MARGIN = 0.01
"""How far above the closest pair of different products the calibrated embedding rule sits
(pretrained features on the demo catalogue: closest such pair 0.960, rule 0.97)."""


def calibrated_embed_cosine(vectors: np.ndarray, phashes: Sequence[str],
                            groups: Sequence[Sequence[int]], rules: DuplicateRules
                            ) -> tuple[float, float | None]:
    """The embedding rule's cosine for a model's own vectors (rows of one catalogue; ``groups``
    lists the rows of its known duplicates) and the highest cosine between two photos that are
    not known duplicates but whose pHashes agree as the rule asks (None if no pair comes within
    the margin of ``rules.embed_cosine``), compared as the rule compares them
    (:meth:`DuplicateRules.embedding_view`). The rule is that cosine plus
    :data:`CALIBRATION_MARGIN` and at least ``rules.embed_cosine``; above 1 (different products
    as close as 0.99: a model whose vectors tell its categories and little else, such as the
    'probs' layer) the embedding rule never holds and only the other rules find duplicates.
    Above :data:`vitrine.dedupe_search.EXACT_PAIRS_UP_TO` photos the pairs come from the
    inverted file, which could miss the closest one (and so calibrate the rule too low)."""
    group_of = {row: g for g, rows in enumerate(groups) for row in rows}
    rows, ids, scores = _close_pairs(len(vectors), rules.embedding_rows(vectors),
                                     rules.embed_cosine - CALIBRATION_MARGIN)
    closest = None
    for k in np.argsort(-scores, kind="stable"):  # closest pair first
        i, j = int(rows[k]), int(ids[k])
        known = i in group_of and group_of[i] == group_of.get(j)
        if not known and hamming(phashes[i], phashes[j]) <= 2 * rules.phash_distance:
            closest = float(scores[k])
            break
    if closest is None:
        return rules.embed_cosine, None
    cosine = max(rules.embed_cosine, closest + CALIBRATION_MARGIN)
    return round(cosine, 4), round(closest, 4)


def perceptual_hash(img: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits."""
    return str(imagehash.phash(img))


def thumbnail(img: Image.Image) -> bytes:
    """16×16 RGB thumbnail (box filter), 768 bytes, followed by the thumbnail rule's second
    view of the photo (its product cut out of its border, the product's pHash and the view's
    rule, turned one way when compared: :func:`vitrine.dedupe_views.fingerprint`), 1,569
    bytes in all."""
    return fingerprint(img)


def thumb_vectors(thumbs: Sequence[bytes]) -> np.ndarray:
    """Centred, L2-normalised float32 rows from raw thumbnails (the whole photos')."""
    raw = np.frombuffer(b"".join(whole(t) for t in thumbs), dtype=np.uint8).reshape(
        len(thumbs), -1)
    return _unit_rows(raw)


def _unit_rows(raw: np.ndarray) -> np.ndarray:
    """Rows of 8-bit thumbnails centred and L2-normalised, float32 (a chunk of rows at a
    time: the norm's squares are a second array as large)."""
    x = raw.astype(np.float32)
    for k in range(0, len(x), PIXEL_CHUNK):
        part = x[k:k + PIXEL_CHUNK]
        part -= part.mean(axis=1, keepdims=True)
        part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-6)
    return x


def hamming(a: str, b: str) -> int:
    if not a or not b:
        return 64
    return (int(a, 16) ^ int(b, 16)).bit_count()


_POPCOUNT = np.array([bin(b).count("1") for b in range(256)], np.uint8)


class _PhashCodes:
    """The perceptual hashes as 64-bit numbers, to compare many pairs at once; a row
    without one, and a row whose text is no 64-bit hex number (a store written by hand),
    as :func:`hamming` takes them."""

    def __init__(self, phashes: Sequence[str]):
        self.phashes = phashes
        self.values = np.zeros(len(phashes), np.uint64)
        self.missing = np.zeros(len(phashes), bool)
        self.odd = np.zeros(len(phashes), bool)
        for i, h in enumerate(phashes):
            if not h:
                self.missing[i] = True
                continue
            try:  # (as hamming reads it: "0x…", capitals, spaces around)
                value = int(h, 16)
            except ValueError:
                value = -1
            if 0 <= value < 2**64:
                self.values[i] = value
            else:
                self.odd[i] = True

    def hamming(self, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """:func:`hamming` of the pairs (``rows[k]``, ``ids[k]``)."""
        bits = (self.values[rows] ^ self.values[ids]).view(np.uint8).reshape(-1, 8)
        distance = _POPCOUNT[bits].sum(axis=1, dtype=np.int64)
        distance[self.missing[rows] | self.missing[ids]] = 64
        for k in np.flatnonzero(self.odd[rows] | self.odd[ids]).tolist():
            distance[k] = hamming(self.phashes[rows[k]], self.phashes[ids[k]])
        return distance
