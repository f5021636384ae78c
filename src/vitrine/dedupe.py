"""Exact and near-duplicate photos: content hash, perceptual hash (pHash) and embeddings.

Candidates come from the FAISS index (k nearest neighbours of every photo), never from an N×N
matrix. Two photos are duplicates when their bytes are identical, or their embeddings are close
and their pHashes agree, or their embeddings are almost identical.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import faiss
import imagehash
import numpy as np
from PIL import Image

NEIGHBOURS = 10


@dataclass(frozen=True)
class DuplicateRules:
    phash_distance: int = 8
    min_cosine: float = 0.90
    exact_cosine: float = 0.985


def perceptual_hash(img: Image.Image) -> str:
    """64-bit DCT perceptual hash as 16 hex digits."""
    return str(imagehash.phash(img))


def hamming(a: str, b: str) -> int:
    if not a or not b:
        return 64
    return bin(int(a, 16) ^ int(b, 16)).count("1")


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def find_duplicates(keys: Sequence[Hashable], vectors: np.ndarray, phashes: Sequence[str],
                    content: Sequence[str] | None = None,
                    rules: DuplicateRules | None = None) -> list[list[Hashable]]:
    """Group duplicate items. ``vectors`` are L2-normalised rows aligned with ``keys``.

    Returns groups of two or more keys, each group in input order, groups ordered by their
    first member.
    """
    rules = rules or DuplicateRules()
    n = len(keys)
    uf = _UnionFind(n)
    if content is not None:
        first_seen: dict[str, int] = {}
        for i, sha in enumerate(content):
            if sha in first_seen:
                uf.union(first_seen[sha], i)
            else:
                first_seen[sha] = i
    if n > 1:
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
        scores, neighbours = index.search(vecs, min(NEIGHBOURS + 1, n))
        for i in range(n):
            for score, j in zip(scores[i], neighbours[i], strict=True):
                if j <= i or score < rules.min_cosine:
                    continue
                if (score >= rules.exact_cosine
                        or hamming(phashes[i], phashes[j]) <= rules.phash_distance):
                    uf.union(i, int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    return [[keys[i] for i in members] for _, members in sorted(groups.items())
            if len(members) > 1]
