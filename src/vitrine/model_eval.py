"""``vitrine evaluate``: classification and retrieval metrics of a trained model (or of the
pretrained backbone alone) on a labelled catalogue, pretrained and trained side by side.

Protocol: when the catalogue is the one a model was trained on (its ``split.json`` covers the
photos) or is split in folders, the test photos query the train + validation photos; otherwise
every photo queries all the others (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vitrine.catalog import Product
from vitrine.config import Settings
from vitrine.errors import CatalogError
from vitrine.eval_metrics import (  # noqa: F401 - known here as before the split
    DIGITS,
    _duplicates_of_queries,
    one_per_group,
    retrieval_metrics,
)
from vitrine.eval_protocol import (  # noqa: F401 - known here as before the split
    _protocol,
    _seen_by_model,
    _sides,
    without_unreadable,
)
from vitrine.progress import progress_bar

if TYPE_CHECKING:  # (torch is the trained model's: evaluating the pretrained one needs none)
    import torch

CHUNK = 256


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


@dataclass
class _Readable:
    """The catalogue's photos to evaluate (readable, with a category) and their sha256, the
    split its folders give, and the photos left out."""

    products: list[Product]
    shas: list[str]
    given: dict[str, str] | None
    outside: list[Path]
    uncategorised: list[dict]
    unreadable: list[dict]


@dataclass
class _Embedded:
    """The photos that could be embedded, with their sha256, hashes, thumbnails, vectors
    (and a trained model's logits and classes); ``unreadable`` names every photo left out."""

    products: list[Product]
    shas: list[str]
    phashes: list[str]
    thumbs: list[bytes]
    vectors: dict[str, np.ndarray]
    logits: torch.Tensor | None
    classes: list[str] | None
    model_info: dict
    unreadable: list[dict]


def evaluate_catalog(catalog_dir: Path, settings: Settings, *, model_dir: Path | None = None,
                     k: int = 5, show_progress: bool = True) -> dict:
    """Metrics of the pretrained backbone and, with ``model_dir``, of the trained model."""
    from vitrine.dedupe import DuplicateRules

    if model_dir is not None:  # (VITRINE_MODEL=~/m: the model loaded, its split was not found)
        model_dir = Path(model_dir).expanduser()
    read = _readable_photos(catalog_dir, settings)
    _check_sides_first(read, model_dir)
    photos = _embed_readable(read, catalog_dir, settings, model_dir, show_progress)
    products, given = photos.products, read.given
    groups = find_groups(products, photos.vectors["pretrained"], photos.phashes, photos.thumbs,
                         settings, photos.shas)
    protocol, assignment = _protocol(products, given, model_dir, photos.shas, groups,
                                     (photos.phashes, photos.thumbs,
                                      DuplicateRules.from_settings(settings)),
                                     show_progress)
    labels = [p.category for p in products]
    queries, index = _sides(products, assignment, given, photos.unreadable)
    every = len(queries)
    queries = queries[one_per_group([products[i].product_id for i in queries.tolist()],
                                    groups)]
    top = Path(catalog_dir).resolve()  # a split catalogue's photos in none of its folders
    unsplit = [p.relative_to(top).as_posix() for p in read.outside]
    report: dict = {"catalog": str(catalog_dir), "protocol": protocol, "k": k,
                    "queries": len(queries), "index": len(index),
                    # copies among the queries, which query once (their group's first id)
                    "copies_among_queries": every - len(queries),
                    "duplicate_groups": len(groups), "model": photos.model_info,
                    "retrieval": {},
                    # photos taken for copies of those the model trained on (helper-231)
                    "copies_of_trained_photos": None if assignment is None or assignment is given
                    else {"searched": sum(w == "copy" for w in assignment.values()),
                          "left_out": sum(w == "out" for w in assignment.values())},
                    "unsplit_photos": unsplit, "unreadable_photos": photos.unreadable,
                    "uncategorised_photos": read.uncategorised}
    report["retrieval"] = _retrieval(photos, labels, queries, index, groups, k)
    if photos.logits is not None:
        report["classification"] = _classification(photos, labels, queries)
    return report


def _readable_photos(catalog_dir: Path, settings: Settings) -> _Readable:
    """Read the catalogue and keep its photos with a category whose file can be read (their
    sha256 taken), naming those left out; refuses fewer than two."""
    from vitrine.photo_hashes import file_sha256, unreadable_reason
    from vitrine.split import links_refused, read_catalogue, uncategorised_photos

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
    return _Readable(products, shas, given, outside, uncategorised, unreadable)


def _check_sides_first(read: _Readable, model_dir: Path | None) -> None:
    """Refuse, before the photos are embedded, a catalogue with no photo to query or none to
    search, and a model whose split's fingerprints are damaged."""
    # said before the photos are embedded; duplicates (found on the vectors) only move
    # photos to the trained-on side, so the check is repeated below
    _sides(read.products, _protocol(read.products, read.given, model_dir, read.shas, [])[1],
           read.given, read.unreadable)
    if model_dir is not None and (model_dir / "split.json").is_file():  # (a damaged file was
        from vitrine.split import load_fingerprints  # said after every photo was embedded:
                                                     # helper-237)
        load_fingerprints(model_dir, None)


def _embed_readable(read: _Readable, catalog_dir: Path, settings: Settings,
                    model_dir: Path | None, show_progress: bool) -> _Embedded:
    """Embed the photos (pretrained, and trained with ``model_dir``); those that cannot be
    decoded are left out and named."""
    products, shas, unreadable = read.products, read.shas, read.unreadable
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
    return _Embedded(products, shas, phashes, thumbs, vectors, logits, classes, model_info,
                     unreadable)


def _retrieval(photos: _Embedded, labels: list[str], queries: np.ndarray, index: np.ndarray,
               groups: list[list[str]], k: int) -> dict:
    """Retrieval metrics of each embedding: the queries search the index, each skipping its
    own row and its copies."""
    skip = _duplicates_of_queries(queries, index, groups, photos.products)
    position = {row: j for j, row in enumerate(index.tolist())}  # (leave-one-out: a query
    skip = [[*rows, position[i]] if i in position else rows  # is searched: its own row too)
            for rows, i in zip(skip, queries.tolist(), strict=True)]
    return {name: retrieval_metrics(vecs[index], [labels[i] for i in index], vecs[queries],
                                    [labels[i] for i in queries], k, skip=skip)
            for name, vecs in photos.vectors.items()}


def _classification(photos: _Embedded, labels: list[str], queries: np.ndarray) -> dict:
    """The trained model's classification of the queries of the categories it was trained
    on (none of them: why there is no score)."""
    from vitrine.report import classification_report, misclassified

    classes, logits = photos.classes, photos.logits
    known = [i for i in queries if labels[i] in classes]
    unseen = sorted({labels[i] for i in queries} - set(classes))
    if not known:  # nothing to score: say so instead of an accuracy of nan
        return {"n": 0, "unscored_photos": len(queries), "unknown_categories": unseen,
                "note": "none of the photos is of a category the model was trained on ("
                        + ", ".join(classes) + ")"}
    pred = logits[known].argmax(1).tolist()
    classification = classification_report(
        [labels[i] for i in known], [classes[j] for j in pred], classes)
    # photos of categories the model was never trained on cannot be classified right
    classification["unscored_photos"] = len(queries) - len(known)
    classification["unknown_categories"] = unseen
    classification["misclassified"] = misclassified(
        [photos.products[i] for i in known], [classes.index(labels[i]) for i in known],
        logits[known].softmax(1).numpy(), classes)
    return classification


def _enough(products: list[Product], catalog_dir: Path) -> list[Product]:
    """``products``, when there are at least two to evaluate."""
    if len(products) < 2:
        raise CatalogError(f"{catalog_dir} needs at least two readable photos with a "
                           "category to evaluate.")
    return products


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
