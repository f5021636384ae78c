"""Thumbnails an older Vitrine stored, made again from their photos.

A thumbnail made before the duplicate search's second views (:mod:`vitrine.dedupe_views`) is
768 bytes, the whole photo's alone; one made before views were turned (mirrored only) is
1,568 bytes, its product's pHash made facing one way
(:data:`vitrine.dedupe_views.MIRRORED_BYTES`). ``vitrine index`` does not read an unchanged
photo again, so a store indexed before kept those for good, and padded, squared or mirrored
copies of its photos (768 bytes), or turned ones (1,568), were never found.
:func:`upgrade_thumbnails` decodes each such photo (as the embedding does,
:func:`vitrine.embed.decode_thumbnail`; not embedded again) and writes its new thumbnail alone
back to the store, before the duplicate search reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vitrine.dedupe_views import current
from vitrine.embed import Embedder
from vitrine.progress import progress_bar
from vitrine.store.base import PhotoFacts, VectorStore


def upgrade_thumbnails(store: VectorStore, facts: dict[str, PhotoFacts], embedder: Embedder,
                       *, commit_every: int, show_progress: bool = False,
                       mine: Callable[[str], bool] = lambda pid: True) -> int:
    """Make again the thumbnails of ``facts`` (the store's :meth:`VectorStore.photo_facts`)
    that have no second view of this Vitrine's rule (:func:`vitrine.dedupe_views.current`),
    of the products ``mine`` takes (a shard's), from their photos
    (catalogue photos and those added through the API alike), and store them, every
    ``commit_every`` products (an interrupted run keeps what it wrote). Only a photo whose
    bytes are still those the store holds (its sha256) gives its thumbnail; one that cannot
    be read, or has changed, leaves its products as they are. Products sharing a photo's
    bytes are decoded once (from another of their paths when the first fails). ``facts``
    takes the thumbnails written; returns how many products got one."""
    old: dict[str, list[str]] = {}  # photo sha256 → its products without views
    for pid, fact in facts.items():
        if not current(fact.thumb) and mine(pid):
            old.setdefault(fact.content_sha256, []).append(pid)
    if not old:
        return 0
    paths = {sha: list(dict.fromkeys(facts[pid].image for pid in pids))
             for sha, pids in old.items()}
    pending: dict[str, tuple[str, bytes]] = {}
    upgraded = 0

    def commit() -> None:
        nonlocal upgraded
        for pid in store.set_thumbs(pending):
            facts[pid] = facts[pid]._replace(thumb=pending[pid][1])
            upgraded += 1
        pending.clear()

    # photos whose bytes another product holds with its views already: its thumbnail, not
    # decoded (their own file may be gone: an older server's upload)
    held = {fact.content_sha256: fact.thumb for fact in facts.values()
            if current(fact.thumb) and fact.content_sha256 in old}
    for sha, thumb in held.items():
        pending.update((pid, (sha, thumb)) for pid in old.pop(sha))
        if len(pending) >= commit_every:
            commit()
    shas, tried = list(old), 0
    with progress_bar("Thumbnails", len(shas), enabled=show_progress) as adv:
        while shas:
            again = []  # photos whose path failed, to read from another of their paths
            for result in embedder.thumbnail_paths([Path(paths[sha][tried]) for sha in shas],
                                                   on_progress=None if tried else adv):
                sha = shas[result.index]
                if result.error is not None or result.sha256 != sha:
                    if tried + 1 < len(paths[sha]):
                        again.append(sha)
                    continue
                pending.update((pid, (sha, result.thumb)) for pid in old[sha])
                if len(pending) >= commit_every:
                    commit()
            shas, tried = again, tried + 1
    commit()
    return upgraded
