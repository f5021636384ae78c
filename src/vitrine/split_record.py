"""The split a model keeps: :class:`Split` (its ``split.json``: which split each product is
in, the duplicate and product groups, the photos left out) and the fingerprints of the photos
the model trained on (:data:`FINGERPRINTS`), which `vitrine evaluate` reads back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vitrine.errors import CatalogError
from vitrine.jsonfile import write_json

FINGERPRINTS = "split_fingerprints.npz"
"""Beside ``split.json``: the perceptual hash and colour thumbnail of each photo the model
trained on (its train and validation photos, and the copies of them training left out), so
that `vitrine evaluate` finds the copies of them that the duplicate rules find, renamed and
saved again (other bytes), without the photos: such copies were queries, as photos the model
never saw (helper-231). About 360 bytes a photo, compressed (36 MB at 100,000)."""

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Which split each product belongs to, and the duplicate groups found."""

    assignment: dict[str, str]
    source: str = "seeded"
    """'seeded' (made here) or 'folders' (given by the catalogue's folders)."""
    seed: int | None = None
    fractions: dict[str, float] = field(default_factory=dict)
    groups: list[list[str]] = field(default_factory=list)
    """Duplicate groups of product ids."""
    contents: dict[str, str] = field(default_factory=dict)
    """Each product's photo sha256, so that `vitrine evaluate` knows the photos the model
    trained on whatever their ids in the catalogue it is given (empty in older models)."""
    left_out: list[str] = field(default_factory=list)
    """Photos of the catalogue's test folder that a copy of in its train or val folder keeps
    out of every split: tested, they counted a photo the model had seen (its train or val
    copy) as unseen, and `evaluate` left them out."""
    left_out_val: list[str] = field(default_factory=list)
    """Photos of the catalogue's val folder that a copy of in its train folder keeps out of
    every split: validated, they scored a photo the model trained on, inflating the
    validation figures that pick the best epoch and lower the learning rate."""
    product_groups: int = 0
    """Groups of photos the product table's group column (:data:`GROUP_COLUMNS`) kept in
    one split, beside the duplicate groups."""
    categories: dict[str, str] = field(default_factory=dict)
    """Each product's category, so that a later training into the same folder keeps the
    split of the photos whose category did not change (empty in older models)."""
    kept_from_earlier: dict[str, int] | None = None
    """Of a split that kept the earlier model's (:func:`vitrine.split_kept.kept_split`): the
    photos kept in their split, placed anew, and moved to a more held-out one."""
    alike_across_folders: list[list[str]] = field(default_factory=list)
    """Look-alike groups (:func:`vitrine.split.alike_groups`: not duplicates) that the
    catalogue's own split folders put in two splits or more: kept where they are (they are
    the user's photos), and reported; within the photos carved out of a train folder they
    stay in one split."""

    def ids(self, name: str) -> list[str]:
        return sorted(pid for pid, s in self.assignment.items() if s == name)

    def crossing(self) -> list[list[str]]:
        """Duplicate groups whose members are in more than one split."""
        return [g for g in self.groups if len({self.assignment.get(p) for p in g}) > 1]

    def counts(self) -> dict[str, int]:
        return {name: len(self.ids(name)) for name in SPLITS}

    def as_dict(self) -> dict:
        return {"source": self.source, "seed": self.seed, "fractions": self.fractions,
                "counts": self.counts(), "duplicate_groups": self.groups,
                "product_groups": self.product_groups,
                "crossing_groups": self.crossing(), "left_out_of_test": sorted(self.left_out),
                "left_out_of_val": sorted(self.left_out_val),
                "alike_across_folders": self.alike_across_folders,
                "assignment": dict(sorted(self.assignment.items())),
                "photo_sha256": dict(sorted(self.contents.items())),
                "category": dict(sorted(self.categories.items())),
                **({"kept_from_earlier": self.kept_from_earlier}
                   if self.kept_from_earlier is not None else {})}

    def save(self, path: Path) -> None:
        write_json(path, self.as_dict())

    @classmethod
    def load(cls, path: Path) -> Split:
        """The split written by :meth:`save`; a CatalogError in one sentence for a file that
        is not one (damaged, or edited by hand)."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            split = cls(dict(data["assignment"]), data["source"], data.get("seed"),
                        data.get("fractions", {}), data.get("duplicate_groups", []),
                        dict(data.get("photo_sha256") or {}),
                        list(data.get("left_out_of_test") or []),
                        list(data.get("left_out_of_val") or []),
                        int(data.get("product_groups") or 0),
                        dict(data.get("category") or {}),
                        alike_across_folders=list(data.get("alike_across_folders") or []))
            if not all(isinstance(v, str) for v in (*split.assignment.values(),
                                                     *split.contents.values(),
                                                     *split.categories.values())):
                raise ValueError("its values are not text")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CatalogError(f"{path} is not a split written by `vitrine train` "
                               f"({type(exc).__name__}: {exc}); train again, or remove it "
                               "to evaluate leave-one-out.") from None
        return split


def save_fingerprints(folder: Path, split: Split, phash_of: dict[str, str],
                      thumb_of: dict[str, bytes]) -> None:
    """Write :data:`FINGERPRINTS` in the model ``folder``: of each photo the model trained on
    (``split``'s train and validation photos and those it left out as their copies), its
    product id, pHash and thumbnail (the whole photo's: :func:`vitrine.dedupe_pairs.copies_of_known`
    compares those alone); a photo without a pHash (none was made) is left out."""
    import io

    import numpy as np

    from vitrine.dedupe_views import whole
    from vitrine.files import write_whole

    trained = {*split.left_out, *split.left_out_val, *split.ids("train"), *split.ids("val")}
    ids = [pid for pid in sorted(trained) if _hash_value(phash_of.get(pid)) is not None]
    buffer = io.BytesIO()  # (ids NUL-separated: a file name holds no NUL, and no array of
    # fixed-width text four bytes a character)
    np.savez_compressed(
        buffer, ids=np.frombuffer("\0".join(ids).encode("utf-8", "surrogateescape"), np.uint8),
        phash=np.array([_hash_value(phash_of[pid]) for pid in ids], np.uint64),
        thumbs=np.frombuffer(b"".join(whole(thumb_of[pid]) for pid in ids), np.uint8).reshape(
            len(ids), len(whole(thumb_of[ids[0]])) if ids else 0))
    write_whole(Path(folder) / FINGERPRINTS, buffer.getvalue())


def load_fingerprints(folder: Path, split: Split | None
                      ) -> tuple[list[str], list[bytes]] | None:
    """The pHashes and thumbnails :func:`save_fingerprints` wrote in ``folder``, of the photos
    ``split`` says the model trained on; None without the file (a model trained before it
    was written); a CatalogError in one sentence for a file that is not one. Without
    ``split``, the file is only checked as far as its ids and pHashes (not its thumbnails,
    77 MB at 100,000), and None returned: a damaged one said before the photos are
    embedded (helper-237)."""
    import zipfile
    import zlib

    import numpy as np

    from vitrine.dedupe_views import THUMB_BYTES, THUMB_SIZE

    path = Path(folder) / FINGERPRINTS
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            raw, values = bytes(data["ids"]), data["phash"]
            if "thumbs" not in data.files:
                raise KeyError("thumbs")
            thumbs = data["thumbs"] if split is not None else None
        ids = raw.decode("utf-8", "surrogateescape").split("\0") if raw else []
        if values.dtype != np.uint64 or len(ids) != len(values):
            raise ValueError("its arrays do not match")
        if thumbs is None:
            return None
        if thumbs.dtype != np.uint8 or thumbs.ndim != 2 or len(thumbs) != len(ids):
            raise ValueError("its arrays do not match")
        if len(ids) and thumbs.shape[1] != THUMB_BYTES:  # (FAISS asserted: helper-237)
            raise ValueError(f"its thumbnails are not {THUMB_SIZE}×{THUMB_SIZE} RGB")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise CatalogError(f"{path} is not a file written by `vitrine train` "
                           f"({type(exc).__name__}: {exc}); train again, or remove it "
                           "(its copies of training photos are then not looked for).") from None
    trained = {*split.left_out, *split.left_out_val,
               *(pid for pid, side in split.assignment.items() if side != "test")}
    rows = [i for i, pid in enumerate(ids) if pid in trained]  # (a file of another split)
    return [f"{int(values[i]):016x}" for i in rows], [thumbs[i].tobytes() for i in rows]


def _hash_value(phash: str | None) -> int | None:
    """A pHash's 16 hex digits as a number; None for no pHash."""
    try:
        value = int(phash, 16) if phash else None
    except ValueError:
        return None
    return value if value is not None and 0 <= value < 2**64 else None
