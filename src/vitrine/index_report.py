"""The report of an index run (:class:`IndexReport`, what ``vitrine index`` prints and its
``--json``) and its text: the reasons a skipped file is given and how a path is named in it
(from the catalogue folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class IndexReport:
    indexed: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    uploaded: int = 0
    orphan_photos: int = 0
    unlisted: int = 0
    """Photos the product table does not list, indexed as products named after their file."""
    edits_kept: int = 0
    """Catalogue products whose fields, edited through the API, were kept: no row of a
    product table names them (also counted as unchanged or updated)."""
    category_from_table: list[dict] = field(default_factory=list)
    """Products whose table category differs from their photo's folder (the table's wins)."""
    category_twins: list[list[dict]] = field(default_factory=list)
    """Categories that differ only in case, accents or spaces (``catalog.category_twins``)."""
    skipped: list[dict] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    duplicates_searched: bool = True
    """False when the store holds more products than ``DuplicateRules.max_products``."""
    duplicates_as_of: dict | None = None
    """Where no duplicates were searched: the last search, whose groups `similar` still
    leaves out (:func:`vitrine.copies.last_search`; None: none ever ran, or searched now)."""
    photos_embedded: int = 0
    """Distinct photos decoded and embedded (products sharing a photo share its vector)."""
    photos_read: int = 0
    """Photos read to hash them: the others' size, times and inode had not changed
    (``vitrine.photo_hashes``)."""
    index_unsaved: str | None = None
    """Why the search index could not be saved at the run's end (a full disk): each later
    process builds the whole index in its first search (minutes for a large HNSW store,
    every page waiting in the server), where the run said nothing and exited 0."""
    duplicates_compared: int = 0
    """Products compared with the whole store to find duplicates: those changed since the
    last search when its pairs could be reused (``vitrine.dedupe_store``), else all."""
    duplicates_without_views: int = 0
    """Products whose thumbnail an older Vitrine made (768 bytes, no second view; 1,568, a
    view that was only mirrored: ``vitrine.dedupe_views``) and that could not be made again
    (their photo missing, unreadable or changed): padded, squared, mirrored or turned
    copies of them are not found (those of a mirrored view's, only beside another such
    view's)."""
    thumbnails_upgraded: int = 0
    """Products whose thumbnail an older Vitrine made, made again from their photo before
    the duplicate search (``vitrine.thumb_upgrade``; the vectors kept)."""
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"indexed": self.indexed, "updated": self.updated, "removed": self.removed,
                "unchanged": self.unchanged, "uploaded": self.uploaded,
                "orphan_photos": self.orphan_photos, "unlisted": self.unlisted,
                "edits_kept": self.edits_kept,
                "category_from_table": self.category_from_table,
                "category_twins": self.category_twins,
                "skipped": self.skipped,
                "duplicates": self.duplicates,
                "duplicates_searched": self.duplicates_searched,
                "duplicates_as_of": self.duplicates_as_of,
                "duplicates_compared": self.duplicates_compared,
                "duplicates_without_views": self.duplicates_without_views,
                "thumbnails_upgraded": self.thumbnails_upgraded,
                "photos_embedded": self.photos_embedded, "photos_read": self.photos_read,
                "index_unsaved": self.index_unsaved,
                "seconds": round(self.seconds, 3)}


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


CHANGED_WHILE_INDEXED = ("the photo changed while it was being indexed (its products are "
                         "left as they were); the next run reads it again")
OUTSIDE_PHOTO = ("its real path is outside the catalogue folder (through a symbolic link), "
                 "which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses")
TABLE_BELOW = ("a product table in a category folder is not read (only one in the catalogue "
               "folder itself is, its image column giving each photo's path from there); "
               "move it there")
TABLE_NOT_CSV = ("a product table is read only as CSV, named products.csv or produtos.csv; "
                 "save it as CSV from the spreadsheet (Excel: Save As, CSV) beside it")
OUTSIDE_FOLDER = ("a link to a folder outside the catalogue folder, which "
                  "VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses: not read")
