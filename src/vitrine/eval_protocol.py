"""Which photos query and which are searched in ``vitrine evaluate``: the model's split (photos
it trained on, by content or id, and copies of them found by the duplicate rules, never query),
the catalogue's split folders, or leave-one-out; and the sentences when a side is empty."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrine.catalog import Product
from vitrine.errors import CatalogError
from vitrine.progress import progress_bar
from vitrine.split import FINGERPRINTS

if TYPE_CHECKING:
    from vitrine.dedupe import DuplicateRules


def _protocol(products: Sequence[Product], given: dict | None, model_dir: Path | None,
              shas: Sequence[str], groups: Sequence[Sequence[str]],
              hashes: tuple[Sequence[str], Sequence[bytes], DuplicateRules] | None = None,
              show_progress: bool = False) -> tuple[str, dict[str, str] | None]:
    """The protocol line and each product's side (None: leave-one-out). With ``hashes`` (the
    photos' pHashes and thumbnails, and the duplicate rules), a photo the model never saw by
    content or id that the rules find to be a copy of one it trained on (renamed, saved
    again: :data:`vitrine.split.FINGERPRINTS`) is taken for that photo."""
    if model_dir is not None and (model_dir / "split.json").is_file():
        from vitrine.split import Split, load_fingerprints

        split = Split.load(model_dir / "split.json")
        copies, unchecked = None, False
        if hashes is not None:
            unchecked = not (model_dir / FINGERPRINTS).is_file()
            phashes, thumbs, rules = hashes

            def copies(rows: list[int]) -> list[int]:
                """Those of ``rows`` that are copies of photos the model trained on (their
                fingerprints read only when a photo is unseen: none on its own catalogue)."""
                from vitrine.dedupe_pairs import copies_of_known

                known = load_fingerprints(model_dir, split) if rows else None
                if known is None:
                    return []
                with progress_bar("Copies", len(known[0]), enabled=show_progress,
                                  unit="known photos") as advance:
                    found = copies_of_known([phashes[i] for i in rows],
                                            [thumbs[i] for i in rows], *known, rules, advance)
                return [i for i, yes in zip(rows, found.tolist(), strict=True) if yes]
        seen = _seen_by_model(products, split, shas, groups, copies=copies)
        here = sum(where in ("train", "copy") for where in seen.values())
        if here and 2 * here < len(split.ids("train")) + len(split.ids("val")) \
                and here < sum(where is None for where in seen.values()):
            # (the model's split where the catalogue holds half the photos it trained on,
            # or more of them than photos not the model's at all: its test photos are, a
            # test fraction of 0.5 outnumbered train + validation; helper-240)
            return _without_trained(seen, given)
        if here:
            # what the model trained on is never a query (leave-one-out over it scored the
            # model on its own training photos); the photos it never saw query, as its test
            unseen = sum(where is None for where in seen.values())
            out = sum(where == "out" for where in seen.values())
            copied = sum(where == "copy" for where in seen.values())
            tested = any(where == "test" for where in seen.values())
            who = (f"the model's test split and {unseen} photo(s) it never saw query"
                   if unseen and tested else f"{unseen} photo(s) it never saw query"
                   if unseen else "the model's test split queries")
            notes = [f"{copied} of them found by the duplicate rules as "
                     f"{'a copy' if copied == 1 else 'copies'} of those photos under other "
                     "names and bytes"] if copied else []
            if out:
                notes.append(f"{out} {'copy' if out == 1 else 'copies'} of photos it "
                             "trained on left out")
            if unchecked and unseen:  # (helper-231: such copies counted as never seen)
                notes.append(_UNCHECKED)
            return (f"{who} its train + validation photos"
                    + (f" ({'; '.join(notes)})" if notes else ""),
                    {pid: where or "test" for pid, where in seen.items()})
        if "out" in seen.values():
            # no photo it trained on here, but a copy of one that training left out of its
            # splits (a pre-split catalogue's test folder evaluated alone): it never queries,
            # as in the model's split; leave-one-out queried it (helper-372)
            return _without_trained(seen, given,
                                    _UNCHECKED if unchecked and None in seen.values() else "")
        if unchecked:
            note = f" ({_UNCHECKED})"
            return ("the test folder queries the train + validation folders" + note, given
                    ) if given is not None else (
                "leave-one-out: every photo queries all the others" + note, None)
    if given is not None:
        return "the test folder queries the train + validation folders", given
    if model_dir is not None and not (model_dir / "split.json").is_file():
        return ("leave-one-out: every photo queries all the others (the model folder has no "
                "split.json, so the photos the model trained on cannot be told apart and "
                "query too: its figures may be too high; keep split.json with the model)",
                None)
    return "leave-one-out: every photo queries all the others", None


def _without_trained(seen: dict[str, str | None], given: dict[str, str] | None,
                     note: str = "") -> tuple[str, dict[str, str]]:
    """The catalogue's own protocol (its split folders, else leave-one-out) where it holds
    fewer than half the photos the model trained on (or copies of them), and fewer of them
    than photos that are not the model's at all (a supplier's photos in another shop's
    catalogue), those photos never querying: the
    model's split made every other photo query those few alone (17 queries, 1 searched:
    helper-237). ``note``: said after the rest, inside its brackets."""
    trained = {pid for pid, where in seen.items() if where in ("train", "copy", "out")}
    what = (f"{len(trained)} photo{'s' if len(trained) != 1 else ''} the model trained on, "
            "or copies of them,")
    note = f"; {note}" if note else ""
    if given is not None:
        return (f"the test folder queries the train + validation folders ({what} do not "
                f"query{note})", {pid: "out" if pid in trained and side == "test" else side
                           for pid, side in given.items()})
    return (f"leave-one-out: every photo queries all the others ({what} are searched but do "
            f"not query{note})", {pid: ("copy" if where == "copy" else "train") if pid in trained
                           else "both" for pid, where in seen.items()})


_UNCHECKED = (f"the model folder has no {FINGERPRINTS}, which older models lack: copies of the "
              "photos it trained on under other names and bytes cannot be told apart and may "
              "query; train again to find them")


def _seen_by_model(products: Sequence[Product], split, shas: Sequence[str],
                   groups: Sequence[Sequence[str]], *,
                   copies: Callable[[list[int]], list[int]] | None = None
                   ) -> dict[str, str | None]:
    """Per product: 'train' when the model trained on its photo (its train or validation
    split), 'out' when on a duplicate of it (``groups``: a resized copy; or one training
    found, its photo then left out of the splits: neither a query nor searched, as the
    training report leaves it out), 'test' when the photo is
    in its test split, None when the model never saw it. Photos are matched by content
    (``shas``), whatever their ids in this catalogue; a photo whose content the split does
    not know (saved again since: other bytes) by its product id, as is every photo of a
    model written before split.json kept the photos' sha256. 'copy' when ``copies`` (rows of
    the photos it never saw, to those of them that are copies of photos it trained on: by
    their fingerprints, :func:`vitrine.dedupe_pairs.copies_of_known`) finds its photo a copy, by
    the duplicate rules, of one it trained on under another name and other bytes (a
    catalogue's photos renamed and saved again were all unseen: helper-231): searched in
    its place, never a query; one in a group with the photo it trained on is 'out'."""

    left_out = {*split.left_out, *split.left_out_val}  # a copy of each trained the model

    def side(pid: str) -> str | None:
        if pid in left_out:
            return "out"
        assigned = split.assignment.get(pid)
        return None if assigned is None else "test" if assigned == "test" else "train"

    if split.contents:
        by_content: dict[str, str] = {}
        copies_out: Counter = Counter()  # of each content, the copies training left out
        for pid, sha in split.contents.items():
            where = side(pid)
            copies_out[sha] += where == "out"
            if where is not None and by_content.get(sha) != "train":  # a copy it trained on
                by_content[sha] = where
        seen = {p.product_id: by_content[sha] if sha in by_content else side(p.product_id)
                for p, sha in zip(products, shas, strict=True)}
        # a photo it trained on and a copy of the same bytes it left out: as many copies are
        # left out here (the ids training left out first), not searched beside the photo it
        # trained on, as the training report's figures leave them (helper-190); never the
        # last of them (the copy gone since, the photo it trained on stays: helper-191)
        trained = Counter(sha for p, sha in zip(products, shas, strict=True)
                          if seen[p.product_id] == "train")
        for p, sha in sorted(zip(products, shas, strict=True),
                             key=lambda item: item[0].product_id not in left_out):
            if copies_out[sha] and trained[sha] > 1 and seen[p.product_id] == "train":
                seen[p.product_id] = "out"
                copies_out[sha] -= 1
                trained[sha] -= 1
    else:
        seen = {p.product_id: side(p.product_id) for p in products}
    if copies is not None:
        for i in copies([i for i, p in enumerate(products) if seen[p.product_id] is None]):
            seen[products[i].product_id] = "copy"
    for group in groups:  # (searched: the photos it trained on, else the copies of them)
        sides = {seen[pid] for pid in group}
        if kept := "train" if "train" in sides else "copy" if "copy" in sides else None:
            for pid in group:
                if seen[pid] != kept:
                    seen[pid] = "out"
    return seen


def _sides(products: Sequence[Product], assignment: dict[str, str] | None,
           given: dict[str, str] | None, unreadable: Sequence[dict] = ()
           ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the queries and of the index: every photo for both under leave-one-out
    (``assignment`` None), else the test side ("test", or "both": leave-one-out without the
    photos a model trained on) queries the rest ("out" neither); either side empty is an
    error, said for the catalogue's split folders (``given``) or the model's split, and
    naming the ``unreadable`` photos left out when there were (a test split they emptied:
    "the model trained on every one" was false)."""
    if assignment is None:
        return np.arange(len(products)), np.arange(len(products))
    test = np.asarray([assignment[p.product_id] in ("test", "both") for p in products])
    if assignment is given and (test.all() or not test.any()):
        empty = "train or val" if test.all() else "test"
        why = (f"the catalogue's split folders have no {empty} photo with a category; "
               "nothing to evaluate.")
    elif not test.any():
        why = ("the model trained on every one of these photos (or on a copy of it), so none "
               "can query it fairly; evaluate it on photos it never saw (its test split, or "
               "another catalogue's).")
    else:  # (a copy of a photo the model trained on is neither: "out")
        index = np.asarray([assignment[p.product_id] not in ("test", "out") for p in products])
        return np.flatnonzero(test), np.flatnonzero(index)
    raise CatalogError(without_unreadable(why, unreadable))


def without_unreadable(why: str, unreadable: Sequence[dict]) -> str:
    """``why`` a command cannot go on, after the photos it left out because they could not be
    read, when there were (the first named): they may be why."""
    if not unreadable:
        return why
    first = unreadable[0]
    return (f"{len(unreadable)} photo(s) could not be read and were left out (the first, "
            f"{first['product_id']}: {str(first['reason']).rstrip('.')}); without them, {why}")
