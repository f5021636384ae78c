"""``vitrine dedupe``: duplicate groups among the photos of one or more folders (no store)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vitrine.catalog import scan_images
from vitrine.config import Settings
from vitrine.dedupe import DuplicateRules
from vitrine.dedupe_groups import find_duplicates
from vitrine.embed import Embedder
from vitrine.errors import CatalogError
from vitrine.progress import progress_bar
from vitrine.split import links_refused


def dedupe_folders(dirs: list[Path], settings: Settings, *, rules: DuplicateRules | None = None,
                   embedder: Embedder | None = None,
                   show_progress: bool = True) -> tuple[list[list[str]], list[dict]]:
    """Return (duplicate groups of paths, skipped files with reasons). A photo reached
    through two of ``dirs`` (one inside the other, or the same folder twice) counts once; a
    link to a photo is a photo of its own, as ``index`` makes it a product (it was left out:
    "0 duplicate groups" where ``index`` reported the link and its photo). Without
    ``rules``, those of ``settings`` for the embedder's vectors."""
    paths: list[Path] = []
    seen: set[str] = set()
    skipped: list[dict] = []  # (folders that cannot be read, then photos)
    given = [d.resolve() for d in dirs]  # (a link refused here may lead into another)
    for folder in dirs:
        if not folder.is_dir():
            raise CatalogError(f"{folder} " + ("is not a folder." if os.path.lexists(folder)
                                               else "does not exist."))
        refused = links_refused(settings)  # (VITRINE_FOLLOW_OUTSIDE_LINKS=false: a list)
        for photo in scan_images(folder, unreadable=skipped, refused_links=refused):
            # the file's place, its folder's links resolved, not the file's own: a folder
            # reached twice lists its photos once (a link loop: its path, said when read)
            real = os.path.join(os.path.realpath(photo.parent), photo.name)
            if real not in seen:
                seen.add(real)
                paths.append(folder / photo.relative_to(folder))
        skipped += [{"path": str(link), "reason": f"a link to a folder outside {folder}, "
                     "which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses: not read"}
                    for link in refused or ()
                    if not any(link.resolve().is_relative_to(g) for g in given)]
    skipped = list({s["path"]: s for s in skipped}.values())  # (overlapping folders: once)
    if not paths:
        why = f" ({skipped[0]['path']}: {skipped[0]['reason']})" if skipped else ""
        raise CatalogError("no photos found in " + ", ".join(map(str, dirs)) + why + ".")
    embedder = embedder or Embedder.from_settings(settings)
    rules = rules or embedder.duplicate_rules()
    folders_skipped = len(skipped)
    keys, vectors, phashes, thumbs, shas = [], [], [], [], []
    with progress_bar("Embedding", len(paths), enabled=show_progress) as adv:
        for result in embedder.embed_paths(paths, on_progress=adv):
            path = paths[result.index]
            if result.error is not None:
                skipped.append({"path": str(path), "reason": result.error})
                continue
            shas.append(result.sha256)  # (of the bytes embedded: not read a second time)
            keys.append(str(path))
            vectors.append(result.vector)
            phashes.append(result.phash)
            thumbs.append(result.thumb)
    if not keys:  # (not "0 duplicate groups", status 0: nothing was compared)
        first = skipped[folders_skipped]  # (the photos', after the folders')
        some = "the one photo" if len(paths) == 1 else f"none of the {len(paths)} photos"
        raise CatalogError(f"{some} in " + ", ".join(map(str, dirs))
                           + (" could not be read" if len(paths) == 1 else " could be read")
                           + f" ({first['path']}: "
                           + first["reason"].rstrip(".")
                           + (f"; {len(paths) - 1} more" if len(paths) > 1 else "") + ").")
    groups = find_duplicates(keys, np.stack(vectors), phashes, thumbs, shas, rules,
                             show_progress)
    return [list(map(str, g)) for g in groups], skipped
