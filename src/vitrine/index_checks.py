"""The checks an index run makes of its catalogue before anything is written: products it
cannot index (:func:`_refused`), paths the store cannot record (:func:`refuse_undecodable`),
and removals refused without --replace (:class:`RemovalRefused`: another folder's products,
every product, a product table gone); with the catalogue's link (:func:`catalogue_link`)."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

from vitrine.catalog import Product, category_problem, id_problem
from vitrine.catalog_scan import STORE_FILE, SYSTEM_FOLDERS, scan_images
from vitrine.display import one_line
from vitrine.errors import VitrineError
from vitrine.index_report import OUTSIDE_PHOTO
from vitrine.store.base import StoredProduct, VectorStore


class RemovalRefused(VitrineError):
    """An index run that would remove catalogue products it should not without --replace:
    those indexed from another folder, or every one of them."""


def _refused(product: Product, store: VectorStore, root: Path,
             outside_links: bool) -> tuple[str, bool] | None:
    """Why ``product`` cannot be indexed, known before its photo is read, and whether the
    store's product of its id goes too (else it keeps what it holds); None when it can be."""
    if not _utf8(str(product.image)):  # the store keeps names as UTF-8 text
        return "its file name is not UTF-8; rename it", False
    if problem := id_problem(product.product_id):  # it would have no page, photo or similar
        # products of its own
        return (f"product id {product.product_id!r}: {problem}; give it another id in the "
                "product table"), False
    if not outside_links and not Path(os.path.realpath(product.image)).is_relative_to(root):
        return OUTSIDE_PHOTO, True
    if problem := category_problem(product.category) or store.too_long(product):
        # (one the pages could not choose; a Milvus store's field limits)
        return (f"product {product.product_id!r}: {problem}; shorten it in the product "
                "table"), False
    return None


def catalogue_link(catalog_dir: Path | str) -> str | None:
    """The catalogue folder's path when it was given as a link, or a folder of one
    (`current -> releases/…`, `current/catalogue`: whose next release is the same
    catalogue): that link in its folder with every link there resolved, then the folder
    under it as given; one spelling whatever the working folder or `..` (taken as text,
    `other/../current` named another folder's `current`). None otherwise: a link higher up
    (`work -> projects/clientA`, a mount's alias) moved to another folder is another
    catalogue, as is `current/..`."""
    given = Path(catalog_dir).absolute()
    parts = given.parts
    for n in (len(parts), len(parts) - 1):
        link = Path(*parts[:n])
        if n > 1 and link.is_symlink():
            rest = parts[n:]
            return None if ".." in rest else str(Path(link.parent.resolve(), link.name, *rest))
    return None


def _check_other_folder(store: VectorStore, root: Path, link: str | None,
                        everything: list[Product], fingerprints: dict, uploaded: set[str]
                        ) -> None:
    """For a shard: refuse another folder than the recorded one that would remove catalogue
    products of any shard, by their ids and whether their photo files are there (a shard
    with nothing of its own to remove recorded the new folder, and the next shard then
    removed its products without --replace). One stat a product: only when the folder
    changed."""
    there = {p.product_id for p in everything if os.path.exists(p.image)}
    catalogue = [pid for pid in fingerprints if pid not in uploaded]
    remove = [pid for pid in catalogue if pid not in there]
    _check_removals(store, root, link, catalogue, remove, 0, None, readable=len(there))


def _same_folder(store: VectorStore, root: Path, link: str | None) -> bool:
    """Whether ``root`` (given through ``link``) is the catalogue folder the store records,
    or none is recorded yet."""
    recorded = store.catalog_folder()
    return recorded is None or recorded == str(root) or (
        link is not None and store.catalog_link() == link)


def _check_removals(store: VectorStore, root: Path, link: str | None, catalogue: list[str],
                    remove: list[str], missing: int, shard: tuple[int, int] | None, *,
                    readable: int, linked: tuple[int, int] = (0, 0),
                    listed: set[str] = frozenset(),
                    images: Callable[[], dict[str, str]] | None = None) -> None:
    """Refuse a run that would remove catalogue products indexed from another folder than
    ``root`` (as the store recorded it; but for a catalogue given through the link it was
    given through last time, ``link``: a release link moved to the next release), or every
    catalogue product the store holds (of this shard) while no photo of the folder can be
    read (an unmounted drive, photos moved away), or while the store records no folder. Ids
    that all changed in the recorded folder while its photos are there (a new product
    table, renamed files) pass: ``readable`` counts the photos this run found. ``linked``:
    the photos and folders VITRINE_FOLLOW_OUTSIDE_LINKS=false refused (not missing, nor
    unlisted); ``listed``: the ids this run's folder lists (their photos this folder's,
    whether read or not)."""
    if not remove:
        return
    recorded = store.catalog_folder()
    held = f"{len(catalogue)} catalogue products" + (
        f" in shard {shard[0]}/{shard[1]}" if shard else "")
    if not _same_folder(store, root, link):
        unlinked = (f" (given as {link}: this store, indexed by a Vitrine from before 5 Dec "
                    "2026, records no link; if that link pointed at the old folder, --replace "
                    "once and later releases through it need none)"
                    if link is not None and store.catalog_link() is None else "")
        raise RemovalRefused(
            f"the store {store.location} holds {held} indexed from {recorded}; indexing "
            f"{root}{unlinked} would remove {len(remove)} of them. Pass --replace to "
            f"`vitrine index` to make {root} its catalogue, or use another store.")
    if recorded is None:
        _check_photos_elsewhere(store, images or store.images, root, link, held, catalogue,
                                [pid for pid in remove if pid not in listed])
    if len(remove) == len(catalogue) and (not readable or recorded is None):
        # with photos found in the folder it records, every id changed (a new product table,
        # renamed files); a store that records no folder yet cannot tell that from another
        # folder
        photos, folders = linked
        unlisted = len(remove) - missing - photos
        kinds = [(n, what) for n, what in (
            (missing, "photo file{s} missing"), (unlisted, "product{s} no longer listed"),
            (photos, "photo{s} outside the catalogue folder"),
            (folders, "linked folder{s} outside it not read")) if n]
        only = kinds[0][1] if len(kinds) == 1 else None
        why = ("their photo files are missing" if only == "photo file{s} missing" else
               "the folder lists none of them" if only == "product{s} no longer listed"
               else ", ".join(f"{n} " + what.format(s="s" if n > 1 else "")
                              for n, what in kinds))
        if photos or folders:
            why += ", which VITRINE_FOLLOW_OUTSIDE_LINKS=false refuses"
        raise RemovalRefused(
            f"indexing {root} would remove every one of the {held} of the store "
            f"{store.location} ({why}); check that the folder is complete (a network drive "
            "not mounted, photos moved away) or pass --replace to `vitrine index` to index "
            "it as it is.")


def _check_photos_elsewhere(store: VectorStore, images: Callable[[], dict[str, str]],
                            root: Path, link: str | None, held: str, catalogue: list[str],
                            remove: list[str]) -> None:
    """For a store that records no catalogue folder (indexed by a Vitrine from before
    2026-12-01): refuse a run that would remove more than a tenth of its catalogue products
    whose photos are still there, outside ``root`` (another folder's products: the first run
    after an upgrade, of a wrong folder, removed 30 of 40 products, exit 0; helper-223). A
    catalogue copied elsewhere, a few products deleted in the copy, goes ahead. Given
    through a link (the next release of a catalogue: the store recorded no link either),
    the sentence says so."""
    if 10 * len(remove) <= len(catalogue):
        return
    images = images()
    elsewhere = [images[pid] for pid in remove if pid in images
                 and not Path(images[pid]).is_relative_to(root) and os.path.exists(images[pid])]
    if 10 * len(elsewhere) <= len(catalogue):
        return
    folder = os.path.commonpath([os.path.dirname(image) for image in elsewhere[:10_000]])
    given = (f"; if {link}, which leads to {root}, is the catalogue's next release, pass "
             "--replace to `vitrine index` (the store records no release link either)"
             if link is not None else "")
    raise RemovalRefused(
        f"the store {store.location} records no catalogue folder (an older Vitrine indexed "
        f"it), and {len(elsewhere)} of its {held} have photos outside {root} that are still "
        f"there (under {folder}): indexing {root} would remove them{given}. Index the folder "
        f"they come from, pass --replace to `vitrine index` to make {root} its catalogue, or "
        "use another store.")


TABLE_GONE_SAMPLE = 200
"""Products :func:`_check_table_gone` reads back from the store to tell whether a product
table had named them."""


def _check_table_gone(store: VectorStore, images: Callable[[], dict[str, str]], root: Path,
                      catalogue: list[str], remove: list[str], meta_only: list[Product],
                      new: list[Product], everything: list[Product], table: bool, *,
                      edits_kept: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse a run that reads no product table (or one whose rows do not find their photos)
    in which most of the store's catalogue products that a table had named (a name other
    than the file's, a price, a description or other columns), their photos unmoved, would
    become products named by their files: the table deleted or moved, every name,
    price and description would go, exit 0 (helper-179), whether their ids came from it
    (re-keyed: a new id, the photo's path) or not (the same id, the table's fields gone:
    helper-185). A few products kept or unlisted before do not hide it; photos renamed, or a
    store whose last run read no table (its products edited through the API before the edit
    mark get their catalogue values back; marked edits are kept, ``edits_kept``, and count
    neither way), go ahead."""
    if not catalogue or not (remove or meta_only):
        return
    # only the products this run names by their files: every one without a table; with one,
    # a photo named as a file a row names and does not find (not a photo it never listed,
    # whose values the API may have edited, nor one whose row the shop dropped: helper-251);
    # ids a table changes are its own to change. ``new``: the products that may take a
    # removed one's photo (a shard's: the whole catalogue's, a re-keyed product's new id
    # in another shard than its old one); ``table``: a product table was read
    # (with a table: each row that does not find its photo accounts for one photo of that
    # file name at most; many photos share a name, main.jpg in a folder per product, and
    # one stale row counted every one of them)
    unfound = Counter(p.image.name for p in everything
                      if p.listed and not os.path.lexists(p.image)) if table else Counter()

    def by_file(p: Product) -> bool:
        return not p.listed and (not table or p.image.name in unfound)

    def take(path: str) -> bool:  # (without a table every photo is named by its file)
        name = PurePath(path).name
        if not table:
            return True
        if unfound[name] <= 0:
            return False
        unfound[name] -= 1
        return True

    photos = {str(p.image) for p in new if by_file(p)}
    names = {p.image.name for p in new if by_file(p)} if table else set()
    images = images() if remove and photos else {}
    # (a row's photo moved to another folder, the row not changed: matched by file name)
    changed = [pid for pid in remove if pid in images and (
        images[pid] in photos or PurePath(images[pid]).name in names) and take(images[pid])]
    if store.catalog_listed():  # (the last run read a table: its fields going counts too;
        # a store from before that record was kept: only ids going, since products edited
        # through the API get their catalogue values back in a run without a table:
        # helper-191)
        changed += [p.product_id for p in meta_only if by_file(p) and take(str(p.image))]
    if not changed:
        return
    sample = changed[:TABLE_GONE_SAMPLE]
    named = sum(_named_by_a_table(store.get(pid)) for pid in sample)
    if 2 * named <= len(sample):
        return
    # (the products whose edits made through the API are kept are neither going nor a sign
    # the table is still there: their fields stay whatever the table; counted as kept, half
    # the products edited since the last run let a deleted table go, the others' names and
    # prices with it, exit 0)
    others = [pid for pid in catalogue if pid not in edits_kept] if edits_kept else catalogue
    if 2 * len(changed) <= len(others):  # (a minority of the store: refused where it is
        # most of the products a table named, those of a table that named a few, the other
        # photos unlisted; the whole store's half let such a table go, exit 0)
        going = set(changed)
        kept = [pid for pid in others if pid not in going]
        probe = kept[::max(1, len(kept) // TABLE_GONE_SAMPLE)][:TABLE_GONE_SAMPLE]
        still = sum(_named_by_a_table(store.get(pid)) for pid in probe)
        if probe and len(changed) * named * len(probe) <= len(kept) * still * len(sample):
            return
    raise RemovalRefused(
        f"indexing {root} would turn {len(changed)} of the {len(catalogue)} catalogue products "
        f"of the store {store.location} into products named by their photo files, dropping "
        "their names, prices and descriptions: " + (
            "the product table's image cells do not name their photos (each cell gives "
            "the photo's path from the catalogue folder, such as category/photo.jpg); "
            "correct them" if table else "no product table lists their photos any more "
            "(products.csv deleted or moved?); put the table back") + ", or pass --replace to "
        "`vitrine index` to index the photos as they are.")


def _named_by_a_table(product: StoredProduct | None) -> bool:
    """Whether a stored product holds what only a product table gives."""
    return product is not None and (
        product.price is not None or bool(product.description) or bool(product.attributes)
        or product.name != Path(product.image).stem)


def refuse_store_among_photos(store: str | Path, catalog_dir: Path | str,
                              photos: Iterable[Path], *, named: str = "--store") -> None:
    """A VitrineError when the store folder ``store`` would be made in a folder below
    ``catalog_dir`` that holds some of its ``photos`` (a category's folder: ``--store
    catalogue/bolsas``): a folder holding a store is never read as photos, so its photos
    left the catalogue for good, once the store's database was made there, and the next
    run into any store removed their products (a product table naming them was refused
    at every run since). The catalogue folder itself, or a new folder inside it, may hold
    the store; a Milvus store is no folder of files."""
    text = str(store)
    if text.lower().startswith(("milvus:", "milvus-lite:")) or not text.strip():
        return
    folder = Path(os.path.expanduser(text))
    if not folder.is_dir() or (folder / STORE_FILE).exists():  # (a store there already:
        return  # the folder scan has left its photos out, as it always will)
    target, top = Path(os.path.realpath(folder)), Path(os.path.realpath(catalog_dir))
    if target == top:
        return
    by_folder: dict[str, list[Path]] = {}
    for photo in photos:  # (below the catalogue's real path, as read_catalogue reads it)
        by_folder.setdefault(os.path.dirname(photo), []).append(photo)
    hidden: set[Path] = set()  # (a photo two products share: counted once)
    real: dict[Path, Path] = {}
    for parent, found in by_folder.items():
        place = Path(os.path.abspath(parent))  # each folder the scan walks to the photo
        # (a link to a folder elsewhere too, known by its real path) would be a store's
        while place != top and place.is_relative_to(top):
            if place not in real:
                real[place] = Path(os.path.realpath(place))
            if real[place] == target:
                hidden.update(found)
                break
            place = place.parent
    if hidden:
        raise VitrineError(
            f"{named} {one_line(text)} is a folder of the catalogue's photos ({len(hidden)}, "
            f"such as {one_line(str(min(hidden)))}), which a store there would hide from every "
            "later index (a folder holding a store is not read as photos); name a folder "
            "outside the catalogue, or a new one. Nothing was written.")


_STORE_OWN = re.compile(r"(?:vitrine\.sqlite(?:-wal|-shm|-journal)?|manifest\.json|write\.lock"
                        r"|rebuild\.lock|uploads|\.vitrine-demo|index\.\d+(?:\..+)?\.faiss)"
                        r"(?:\..*\.(?:part|tmp))?|manifest\.json\.tmp|\.manifest\.json\..+\.part"
                        r"|vitrine\.[0-9a-f]{6}(?:-journal)?")
"""The names a store (or the demo's mark) writes in its folder, and their half-written copies:
a folder of only these is a store's, half made or left by one (the database a killed first
run was making, ``vitrine.<6 hex digits>``; a manifest's part file, ``.manifest.json.*.part``
as :func:`vitrine.files.write_whole` names it, or an older Vitrine's ``manifest.json.tmp``;
an older store's ``index.<n>.faiss``)."""
_FOLDER_KEEPING = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", ".directory"})
"""Files a desktop leaves in any folder it shows: such a folder is still empty."""


def refuse_foreign_folder(store: str | Path, catalog_dir: Path | str | None, *,
                          named: str = "--store") -> None:
    """A VitrineError when the store ``store`` would be made in a folder that holds no
    store but files of another's (``--store ~`` or ``--store /`` wrote vitrine.sqlite,
    manifest.json, index files and write.lock among the user's own files, and their photos
    there were never read again as a catalogue's). A new or empty folder, one holding a
    store (or what a store left), the catalogue folder ``catalog_dir`` itself (as README
    says) and a Milvus store are not refused."""
    text = str(store)
    if text.lower().startswith(("milvus:", "milvus-lite:")) or not text.strip():
        return
    folder = Path(os.path.expanduser(text))
    try:
        if not folder.is_dir() or (folder / STORE_FILE).exists():
            return
        if catalog_dir is not None and os.path.realpath(folder) == os.path.realpath(
                catalog_dir):
            return
        others = sorted((name for name in os.listdir(folder) if not (
            _STORE_OWN.fullmatch(name) or name in _FOLDER_KEEPING
            or name in SYSTEM_FOLDERS)), key=lambda name: (name.startswith("."), name))
    except OSError:  # (a folder shut to this user: opening the store says why)
        return
    if others:
        inside = os.path.join(text.rstrip("/\\") or "/", "vitrine-store")
        raise VitrineError(
            f"{named} {one_line(text)} is a folder of other files ({len(others):,}, such as "
            f"{one_line(others[0])}) that holds no Vitrine store: a store made there would "
            "write its database, index files and locks among them; name a new or empty "
            f"folder, such as {one_line(inside)}. Nothing was written.")


def refuse_target_among_photos(target: str | Path, catalogue: str | None) -> None:
    """:func:`refuse_store_among_photos` for migrate's TARGET_STORE, inside ``catalogue``, the
    folder the source store was indexed from (None: none recorded), whose photos in it are
    found by a scan of the target folder alone."""
    text = str(target)
    if not catalogue or text.lower().startswith(("milvus:", "milvus-lite:")):
        return
    folder = Path(os.path.realpath(os.path.expanduser(text)))
    top = Path(os.path.realpath(catalogue))
    if folder != top and folder.is_relative_to(top) and folder.is_dir() and not (
            folder / STORE_FILE).exists():
        refuse_store_among_photos(text, top, scan_images(folder), named="TARGET_STORE")


def refuse_undecodable(catalog_dir: Path, model_dir: Path | None) -> None:
    """A VitrineError naming the catalogue folder, the link it was given through or the
    trained model's folder when its path is not UTF-8 (a folder a zip made on Windows named,
    or an old drive): the store records each as UTF-8 text, and the run ended in a
    UnicodeEncodeError traceback after its work (status 1, and again at every later run
    with that model), its photos all skipped as "not UTF-8"."""
    root = Path(catalog_dir).resolve() if Path(catalog_dir).exists() else Path(catalog_dir)
    for what, path in (("catalogue folder", root), ("catalogue link",
                                                     catalogue_link(catalog_dir)),
                       ("model folder", model_dir)):
        if path is not None and not _utf8(str(path)):
            raise VitrineError(f"the {what} {path} has a path that is not UTF-8 (named by "
                               "another system, such as a zip made on Windows); rename it "
                               "(the store keeps it as UTF-8 text).")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
