"""``vitrine evaluate``: classification and retrieval metrics of a trained model (or of the
pretrained backbone alone) on a labelled catalogue, pretrained and trained side by side.

Protocol: when the catalogue is the one a model was trained on (its ``split.json`` covers the
photos) or is split in folders, the test photos query the train + validation photos; otherwise
every photo queries all the others (leave-one-out).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.evaluate import average_precision_at_k, per_label, precision_at_k, recall_at_k
from vitrine.progress import progress_bar
from vitrine.split import FINGERPRINTS

if TYPE_CHECKING:  # (torch is the trained model's: evaluating the pretrained one needs none)
    import torch

    from vitrine.dedupe import DuplicateRules

CHUNK = 256


DIGITS = 6
"""Decimals the retrieval metrics keep: the tables show three, and rounded to four first
17/21 showed as 0.809, not 0.810 (helper-187)."""


def retrieval_metrics(index_vecs: np.ndarray, index_labels: Sequence[str],
                      query_vecs: np.ndarray, query_labels: Sequence[str], k: int = 5, *,
                      leave_one_out: bool = False,
                      skip: Sequence[Sequence[int]] | None = None) -> dict:
    """P@k, R@k and mAP@k of category retrieval, overall and per category.

    With ``leave_one_out`` the queries are the index itself and each query's own row is
    skipped; ``skip[q]`` lists more index rows that query ``q`` neither retrieves nor counts
    as relevant (its duplicates: finding a copy of the photo is no recommendation). A query
    with nothing of its category to find (the only photo of its category) has no score: it
    is left out of the means (``without_relevant`` counts them), and a category of such
    queries only scores None.
    """
    import faiss

    skips = [set(s) for s in skip] if skip is not None else [set() for _ in query_labels]
    if leave_one_out:
        for q, rows in enumerate(skips):
            rows.add(q)
    extra = max((len(rows) for rows in skips), default=0)
    # exact, without an index's copy of the vectors (they may be a file mapped into memory)
    _, ids = faiss.knn(np.ascontiguousarray(query_vecs, dtype=np.float32),
                       np.ascontiguousarray(index_vecs, dtype=np.float32),
                       min(k + extra, len(index_labels)), metric=faiss.METRIC_INNER_PRODUCT)
    ids = [[j for j in row if j >= 0 and j not in skips[q]][:k] for q, row in enumerate(ids)]
    retrieved = [[index_labels[j] for j in row] for row in ids]
    counts = Counter(index_labels)
    relevant_all = [counts[label] - sum(index_labels[j] == label for j in skips[q])
                    for q, label in enumerate(query_labels)]
    scored = [i for i, n in enumerate(relevant_all) if n > 0]
    labels = [query_labels[i] for i in scored]
    retrieved = [retrieved[i] for i in scored]
    relevant = [relevant_all[i] for i in scored]
    metrics = {"precision": precision_at_k, "recall": recall_at_k,
               "map": average_precision_at_k}
    out: dict = {"n_queries": len(labels), "without_relevant": len(query_labels) - len(labels)}
    for name, fn in metrics.items():
        kwargs = {} if name == "precision" else {"relevant_counts": relevant}
        out[name] = round(fn(labels, retrieved, k, **kwargs), DIGITS) if labels else None
    per_cat: dict = {q: dict.fromkeys(metrics) for q in query_labels}
    for name, fn in metrics.items():
        kwargs = {} if name == "precision" else {"relevant_counts": relevant}
        for cat, value in per_label(fn, labels, retrieved, k, **kwargs).items():
            per_cat[cat][name] = round(value, DIGITS)
    out["per_category"] = dict(sorted(per_cat.items()))
    return out


def one_per_group(ids: Sequence[str], groups: Sequence[Sequence[str]]) -> list[int]:
    """Positions of ``ids`` (the photos that query, or are scored) that count: each
    duplicate group's photos among them once (by its smallest id), every other photo. Copies
    of one photo (a shirt's sizes under one picture, a photo saved again) kept in one split
    counted as that many test photos, and the interval as if they were independent
    (helper-231)."""
    group_of = {pid: g for g, group in enumerate(groups) for pid in group}
    first: dict[int, int] = {}
    for position, pid in enumerate(ids):
        if (g := group_of.get(pid)) is not None and (
                g not in first or pid < ids[first[g]]):
            first[g] = position
    return [position for position, pid in enumerate(ids)
            if (g := group_of.get(pid)) is None or first[g] == position]


def trained_outputs(model, products: Sequence[Product], settings: Settings, *,
                    show_progress: bool = True,
                    hashes: tuple[list[str], list[bytes]] | None = None
                    ) -> tuple[dict[str, torch.Tensor], list[tuple[int, str]]]:
    """imagenet / pooled / hidden / logits of every product photo, in chunks, and the photos
    that could not be decoded (their row, the reason: the outputs there are to be dropped);
    with ``hashes``, each photo's perceptual hash and thumbnail are appended to its two
    lists."""
    import torch

    from vitrine.train_data import FeatureCache, frozen_pass
    from vitrine.train_fit import clean_outputs

    parts: list[tuple[int, dict[str, torch.Tensor] | None]] = []  # (rows, outputs) per chunk
    bad: list[tuple[int, str]] = []
    with progress_bar("Embedding", len(products), enabled=show_progress) as advance:
        for start in range(0, len(products), CHUNK):
            chunk = products[start:start + CHUNK]
            done = frozen_pass(model.net.base, [p.image for p in chunk], [0], model.prep,
                               seed=0, batch_size=settings.batch_size,
                               workers=settings.decode_workers,
                               max_pixels=settings.max_image_pixels,
                               companion=model.net.companion, advance=advance,
                               with_hash=hashes is not None, none_ok=True)
            if hashes is not None:
                hashes[0].extend(done.phashes)
                hashes[1].extend(done.thumbs)
            bad += [(start + i, e) for i, e in enumerate(done.errors) if e is not None]
            if not len(done.maps):  # not one photo of the chunk decoded: rows to drop
                parts.append((len(chunk), None))
                continue
            cache = FeatureCache(done.maps, torch.zeros(len(chunk), dtype=torch.long),
                                 side=done.side)
            parts.append((len(chunk), clean_outputs(model.net, cache)))
    shapes = next((outputs for _, outputs in parts if outputs is not None), None)
    if shapes is None:
        raise none_read(products, bad)
    return {key: torch.cat([outputs[key] if outputs is not None else
                            like.new_zeros((rows, *like.shape[1:]))
                            for rows, outputs in parts])
            for key, like in shapes.items()}, bad


def none_read(products: Sequence[Product], bad: Sequence[tuple[int, str]]) -> CatalogError:
    """The sentence when none of the photos could be read: how many, and the first's why."""
    first, reason = bad[0]
    some = ("the one photo could not be read (" if len(products) == 1
            else f"none of the {len(products)} photos could be read (the first, ")
    return CatalogError(f"{some}{products[first].image}: {str(reason).rstrip('.')}); nothing "
                        "to evaluate.")


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


def _without_trained(seen: dict[str, str | None], given: dict[str, str] | None
                     ) -> tuple[str, dict[str, str]]:
    """The catalogue's own protocol (its split folders, else leave-one-out) where it holds
    fewer than half the photos the model trained on (or copies of them), and fewer of them
    than photos that are not the model's at all (a supplier's photos in another shop's
    catalogue), those photos never querying: the
    model's split made every other photo query those few alone (17 queries, 1 searched:
    helper-237)."""
    trained = {pid for pid, where in seen.items() if where in ("train", "copy", "out")}
    what = (f"{len(trained)} photo{'s' if len(trained) != 1 else ''} the model trained on, "
            "or copies of them,")
    if given is not None:
        return (f"the test folder queries the train + validation folders ({what} do not "
                "query)", {pid: "out" if pid in trained and side == "test" else side
                           for pid, side in given.items()})
    return (f"leave-one-out: every photo queries all the others ({what} are searched but do "
            "not query)", {pid: ("copy" if where == "copy" else "train") if pid in trained
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


def find_groups(products: Sequence[Product], vectors: np.ndarray, phashes: list[str],
                thumbs: list[bytes], settings: Settings,
                shas: Sequence[str] | None = None) -> list[list[str]]:
    """Duplicate groups (product ids) by :func:`vitrine.dedupe_groups.find_duplicates`, as
    training's split finds them; ``shas``: the photos' sha256 when already read."""
    from vitrine.dedupe import DuplicateRules
    from vitrine.dedupe_groups import find_duplicates
    from vitrine.photo_hashes import file_sha256

    shas = [file_sha256(p.image) for p in products] if shas is None else shas
    groups = find_duplicates([p.product_id for p in products], vectors, phashes, thumbs, shas,
                             DuplicateRules.from_settings(settings))
    return [list(map(str, g)) for g in groups]


def evaluate_catalog(catalog_dir: Path, settings: Settings, *, model_dir: Path | None = None,
                     k: int = 5, show_progress: bool = True) -> dict:
    """Metrics of the pretrained backbone and, with ``model_dir``, of the trained model."""
    from vitrine.dedupe import DuplicateRules
    from vitrine.photo_hashes import file_sha256, unreadable_reason
    from vitrine.split import links_refused, read_catalogue, uncategorised_photos

    if model_dir is not None:  # (VITRINE_MODEL=~/m: the model loaded, its split was not found)
        model_dir = Path(model_dir).expanduser()
    products, given, outside = read_catalogue(catalog_dir, settings.upload_dir,
                                              refused_links=links_refused(settings))
    # a photo without a category has nothing to be scored on: left out, and named (as
    # training names it; it was dropped without a word)
    uncategorised = uncategorised_photos(products)
    products = _enough([p for p in products if p.category], catalog_dir)
    # a photo that cannot be read is left out and named, as training does (one stopped the
    # evaluation of the catalogue just trained on, which had left it out)
    shas, unreadable, readable = [], [], []
    for product in products:
        try:
            shas.append(file_sha256(product.image))
            readable.append(product)
        except OSError as exc:
            unreadable.append({"product_id": product.product_id,
                               "reason": unreadable_reason(exc)})
    products = _enough(readable, catalog_dir)
    # said before the photos are embedded; duplicates (found on the vectors) only move
    # photos to the trained-on side, so the check is repeated below
    _sides(products, _protocol(products, given, model_dir, shas, [])[1], given, unreadable)
    if model_dir is not None and (model_dir / "split.json").is_file():  # (a damaged file was
        from vitrine.split import load_fingerprints  # said after every photo was embedded:
                                                     # helper-237)
        load_fingerprints(model_dir, None)
    vectors, logits, classes, model_info, (phashes, thumbs), failed = _embed(
        products, settings, model_dir, show_progress)
    if failed:
        unreadable += [{"product_id": products[i].product_id, "reason": reason}
                       for i, reason in failed]
        keep = sorted(set(range(len(products))) - {i for i, _ in failed})
        products = _enough([products[i] for i in keep], catalog_dir)
        shas, phashes, thumbs = ([x[i] for i in keep] for x in (shas, phashes, thumbs))
        vectors = {name: vecs[keep] for name, vecs in vectors.items()}
        logits = None if logits is None else logits[keep]
    groups = find_groups(products, vectors["pretrained"], phashes, thumbs, settings, shas)
    protocol, assignment = _protocol(products, given, model_dir, shas, groups,
                                     (phashes, thumbs, DuplicateRules.from_settings(settings)),
                                     show_progress)
    labels = [p.category for p in products]
    queries, index = _sides(products, assignment, given, unreadable)
    every = len(queries)
    queries = queries[one_per_group([products[i].product_id for i in queries.tolist()],
                                    groups)]
    top = Path(catalog_dir).resolve()  # a split catalogue's photos in none of its folders
    unsplit = [p.relative_to(top).as_posix() for p in outside]
    report: dict = {"catalog": str(catalog_dir), "protocol": protocol, "k": k,
                    "queries": len(queries), "index": len(index),
                    # copies among the queries, which query once (their group's first id)
                    "copies_among_queries": every - len(queries),
                    "duplicate_groups": len(groups), "model": model_info, "retrieval": {},
                    # photos taken for copies of those the model trained on (helper-231)
                    "copies_of_trained_photos": None if assignment is None or assignment is given
                    else {"searched": sum(w == "copy" for w in assignment.values()),
                          "left_out": sum(w == "out" for w in assignment.values())},
                    "unsplit_photos": unsplit, "unreadable_photos": unreadable,
                    "uncategorised_photos": uncategorised}
    skip = _duplicates_of_queries(queries, index, groups, products)
    position = {row: j for j, row in enumerate(index.tolist())}  # (leave-one-out: a query
    skip = [[*rows, position[i]] if i in position else rows  # is searched: its own row too)
            for rows, i in zip(skip, queries.tolist(), strict=True)]
    for name, vecs in vectors.items():
        report["retrieval"][name] = retrieval_metrics(
            vecs[index], [labels[i] for i in index], vecs[queries],
            [labels[i] for i in queries], k, skip=skip)
    if logits is not None:
        from vitrine.report import classification_report, misclassified

        known = [i for i in queries if labels[i] in classes]
        unseen = sorted({labels[i] for i in queries} - set(classes))
        if not known:  # nothing to score: say so instead of an accuracy of nan
            report["classification"] = {
                "n": 0, "unscored_photos": len(queries), "unknown_categories": unseen,
                "note": "none of the photos is of a category the model was trained on ("
                        + ", ".join(classes) + ")"}
            return report
        pred = logits[known].argmax(1).tolist()
        report["classification"] = classification_report(
            [labels[i] for i in known], [classes[j] for j in pred], classes)
        # photos of categories the model was never trained on cannot be classified right
        report["classification"]["unscored_photos"] = len(queries) - len(known)
        report["classification"]["unknown_categories"] = unseen
        report["classification"]["misclassified"] = misclassified(
            [products[i] for i in known], [classes.index(labels[i]) for i in known],
            logits[known].softmax(1).numpy(), classes)
    return report


def _enough(products: list[Product], catalog_dir: Path) -> list[Product]:
    """``products``, when there are at least two to evaluate."""
    if len(products) < 2:
        raise CatalogError(f"{catalog_dir} needs at least two readable photos with a "
                           "category to evaluate.")
    return products


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


def _duplicates_of_queries(queries: np.ndarray, index: np.ndarray,
                           groups: Sequence[Sequence[str]], products: Sequence[Product]
                           ) -> list[list[int]]:
    """For each query, the index rows (positions in ``index``) holding one of its duplicates:
    a resized or recompressed copy of the photo would otherwise count as a hit."""
    row = {p.product_id: i for i, p in enumerate(products)}
    group_of = {row[pid]: g for g, group in enumerate(groups) for pid in group}
    members: dict[int, list[int]] = {}
    for position, i in enumerate(index.tolist()):
        if i in group_of:
            members.setdefault(group_of[i], []).append(position)
    return [[j for j in members.get(group_of[i], []) if index[j] != i]
            if i in group_of else [] for i in queries.tolist()]


def _embed(products: Sequence[Product], settings: Settings, model_dir: Path | None,
           show_progress: bool):
    if model_dir is None:
        from vitrine.embed import Embedder

        embedder = Embedder.from_settings(settings.model_copy(update={"model": None}))
        with progress_bar("Embedding", len(products), enabled=show_progress) as advance:
            results = list(embedder.embed_paths([p.image for p in products],
                                                on_progress=advance))
        failed = [(r.index, str(r.error)) for r in results if r.error is not None]
        if len(failed) == len(results):
            raise none_read(products, failed)
        dim = next(r.vector for r in results if r.error is None).shape
        vecs = np.stack([r.vector if r.error is None else np.zeros(dim, np.float32)
                         for r in results])
        return ({"pretrained": vecs}, None, None, {"pretrained": embedder.manifest.as_dict()},
                ([r.phash for r in results], [r.thumb for r in results]), failed)
    import torch

    from vitrine.trained import load_model
    from vitrine.trained_net import combine

    model = load_model(model_dir)
    if settings.threads > 0:  # as the embedding engines and training do
        torch.set_num_threads(settings.threads)
    hashes: tuple[list[str], list[bytes]] = ([], [])
    out, failed = trained_outputs(model, products, settings, show_progress=show_progress,
                                  hashes=hashes)
    layer, weight = model.layer, model.layer_weight
    parts = layer.split("+")
    weights = [weight, 1 - weight] if len(parts) == 2 else [1.0]
    vectors = {"pretrained": combine(out, ["imagenet"], [1.0]).numpy(),
               "trained": combine(out, parts, weights).numpy()}
    info = {"trained": model.manifest.as_dict(),
            "pretrained_weights_sha256": model.config.get("pretrained_weights_sha256")}
    return vectors, out["logits"], model.classes, info, hashes, failed
