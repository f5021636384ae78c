"""``vitrine train``: transfer learning then fine-tuning of the backbone on the shop's
categories.

1. Pass every photo once through the layers that stay frozen; the same pass gives the
   pretrained embeddings, perceptual hashes and thumbnails that find duplicates.
2. Split the catalogue (duplicate-aware, see :mod:`vitrine.split`), and pass the augmented
   views of the training photos (``train_views`` > 1) through the frozen layers once
   (:mod:`vitrine.train_data` says what is cached and what that changes).
3. Phase 1, transfer learning: the whole backbone frozen, a new head (dense, optional hidden
   layer and dropout) trained with Adam on the pooled features of the last block and of the
   tapped blocks (``train_taps``), computed once per cached view.
4. Phase 2, fine-tuning: the top blocks unfrozen, trained with the head at a lower rate.
5. Both phases: early stopping with the best weights restored, a best checkpoint on disk,
   reduce-LR-on-plateau, optionally class-weighted loss (for imbalanced categories), seeded.
6. Refit (``train_refit``): both phases again from the start on the training and validation
   photos, replaying the epochs and learning rates validation chose; kept only where it does
   not come out worse than the validated network on those photos.
7. Write the model, its history, test metrics, figures and a report (:mod:`vitrine.report`).

With ``train_companion`` a second pretrained backbone, frozen whole, runs beside the first;
its pooled features (cached per view like the frozen layers' maps) join the head's input.

:mod:`vitrine.train_checks` holds what training refuses, :mod:`vitrine.train_summary` what it
writes about the run besides the network.
"""

from __future__ import annotations

import errno
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from vitrine.backbones import BackboneSpec
from vitrine.catalog import Product, refuse_out_inside
from vitrine.config import Settings
from vitrine.errors import (
    CatalogError,
    TrainingError,
    VitrineError,
    WeightsMismatch,
    refused_sentence,
)
from vitrine.images import Preprocessing
from vitrine.model_eval import find_groups
from vitrine.models import get_spec, load_state_dict, taps_for
from vitrine.progress import progress_bar
from vitrine.split import (
    Split,
    links_refused,
    make_split,
    read_catalogue,
    uncategorised_photos,
)
from vitrine.train_checks import (
    check_converged,
    floor_below_rates,
    no_category_to_validate,
    no_validation,
    photos_to_validate,
    too_few_categories,
    validation_remedy,
)
from vitrine.train_data import (
    FeatureCache,
    FrozenPass,
    MapStorage,
    cache_budget,
    frozen_pass,
    permute_rows_,
)
from vitrine.train_fit import Fit, fit_cached, pool_views
from vitrine.train_summary import (  # noqa: F401 - cache_note, conflicting_labels known here
    CatalogueRead,
    PhotosRead,
    _counted_test_rows,
    _test_detail,
    cache_note,
    conflicting_labels,
    model_description,
    run_summary,
)
from vitrine.trained_net import (
    BlockError,
    ClassifierHead,
    TrainedNet,
    build_trained_net,
)


def train_catalog(catalog_dir: Path, out_dir: Path, settings: Settings, *,
                  show_progress: bool = True) -> dict:
    """Split ``catalog_dir``, train, and write the model folder ``out_dir``; returns the
    summary also written as ``summary.json``. The folder appears (or replaces an earlier
    model) only when everything is written: a failed or interrupted run leaves it as it was."""
    from vitrine.trained import STAGE_SCRATCH, staged_model_dir

    out, catalog = Path(out_dir).expanduser().resolve(), Path(catalog_dir).resolve()
    refuse_out_inside(catalog_dir, out_dir)
    if catalog.is_relative_to(out):
        raise CatalogError(f"the catalogue {catalog_dir} is inside --out {out_dir}; name a "
                           "model folder that does not hold the catalogue.")
    with staged_model_dir(out_dir) as stage:
        cache = stage / STAGE_SCRATCH  # (removed with a stage a killed run left)
        try:
            return _train(catalog_dir, stage, cache, Path(out_dir), settings, show_progress)
        except Exception as exc:
            # (memory refused: said with the batch setting train reads; the general sentence
            # told to lower VITRINE_BATCH_SIZE, which train does not read)
            if (sentence := refused_sentence(exc, "VITRINE_TRAIN_BATCH_SIZE")) is not None:
                raise TrainingError(sentence) from None
            if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise VitrineError(f"cannot write the model in {out} ({exc.strerror}); free "
                               f"disk space there. {out_dir} is left as it was.") from None
        finally:
            shutil.rmtree(cache, ignore_errors=True)


def _train(catalog_dir: Path, stage: Path, cache: Path, out_dir: Path, settings: Settings,
           show_progress: bool) -> dict:
    """Read and split the catalogue, fit the network, and write the model and what is said
    of it into ``stage``; returns the summary."""
    from vitrine.report import write_outputs
    from vitrine.split_kept import earlier_split
    from vitrine.trained import write_model

    started = time.perf_counter()
    floor_below_rates(settings)
    earlier, fresh_because = earlier_split(out_dir, settings)  # (before the stage replaces it)
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    catalogue = _categorised_photos(catalog_dir, settings)
    if earlier is None:  # (a kept split may hold a photo out that a fresh one would not)
        no_category_to_validate(catalog_dir, catalogue.products, settings, catalogue.given)
    spec, pretrained, prep, net = _pretrained_net(settings)

    # One pass of every photo through the frozen layers: the clean view, its hashes, and
    # (pooled by the frozen top) the pretrained embedding that finds duplicates.
    storage = MapStorage(cache, cache_budget(settings.train_cache_memory_mb))
    clean = _read_photos(net, catalogue.products, prep, settings, storage, show_progress)
    photos = _split_photos(catalog_dir, stage, net, catalogue, clean, settings, storage,
                           earlier)
    seconds = {"read_and_split": round(time.perf_counter() - started, 1)}

    t0 = time.perf_counter()
    row = {p.product_id: i for i, p in enumerate(catalogue.products)}
    unaugmented: list[dict] = []
    classes, caches = split_caches(net, catalogue.products, row, clean, photos.split, prep,
                                   settings, storage, show_progress, unaugmented)
    del clean  # each split's cache holds (a slice of) its maps
    seconds["augmented_views"] = round(time.perf_counter() - t0, 1)
    fit, test_rows = _fit(net, caches, classes, photos.split, settings, stage, storage,
                          out_dir, show_progress)
    seconds.update(fit.seconds)
    config = model_description(spec.name, pretrained, prep, classes, catalogue.products,
                               photos, fit, caches, settings, storage)
    digest = write_model(stage, net, config)
    # before the summary sums up what the cache allocated: the report's vectors are in it
    test = _test_detail(fit.outputs, caches, classes, settings, storage.zeros, test_rows)
    summary = run_summary(out_dir, catalogue, photos, fresh_because, classes, digest, config,
                          unaugmented, fit, caches, test, seconds, settings, storage)
    write_outputs(stage, summary, started)  # (the total, figures included: 200 classes'
    # confusion matrix took 4 minutes that the total left out)
    return summary


def _categorised_photos(catalog_dir: Path, settings: Settings) -> CatalogueRead:
    """Read the catalogue and keep its photos with a category, naming those left out;
    refuses, before any photo is read, a catalogue that cannot be trained on."""
    products, given, outside = read_catalogue(catalog_dir, settings.upload_dir,
                                              refused_links=links_refused(settings))
    top = Path(catalog_dir).resolve()
    unsplit = [{"product_id": path.relative_to(top).as_posix(), "reason": "at the top, in "
                "none of the split folders"} for path in outside]
    uncategorised = uncategorised_photos(products)  # (it teaches nothing: left out, named)
    products = [p for p in products if p.category]
    if not products:
        raise CatalogError(f"no photo of {catalog_dir} has a category: put each category's "
                           "photos in a sub-folder named after it (or give them a category "
                           "column in products.csv).")
    too_few_categories(catalog_dir, products)  # (before every photo is read)
    no_validation(settings, given)
    return CatalogueRead(products, given, unsplit, uncategorised)


def _pretrained_net(settings: Settings) -> tuple[BackboneSpec, dict, Preprocessing, TrainedNet]:
    """The backbone's spec, its pretrained weights, the preprocessing, and the network to
    train built from them (its head a placeholder), each setting's refusal said for it."""
    spec = get_spec(settings.backbone)
    pretrained = load_state_dict(spec, settings.weights)
    prep = replace(spec.preprocessing, resize=settings.resize)
    try:
        net = build_trained_net(spec, pretrained, settings.train_fine_tune_from, 1,
                                settings.train_head_units, settings.train_dropout,
                                settings.train_companion, prep,
                                taps_for(spec, settings.train_taps))
    except BlockError as exc:  # (said for the setting, as every other setting is)
        raise TrainingError(f"setting {exc.setting}: {exc}") from None
    except WeightsMismatch as exc:  # (the file named, as index names it: helper-230)
        if settings.weights is None or exc.name != spec.name:
            raise
        raise exc.of_file(settings.weights) from None
    return spec, pretrained, prep, net.to(memory_format=torch.channels_last)


def _read_photos(net: TrainedNet, products: Sequence[Product], prep: Preprocessing,
                 settings: Settings, storage: MapStorage, show_progress: bool) -> FrozenPass:
    """Every photo's clean view through the frozen layers, with its hash and thumbnail."""
    with progress_bar("Reading photos", len(products), enabled=show_progress) as adv:
        return frozen_pass(net.base, [p.image for p in products], [0], prep,
                           seed=settings.train_seed, batch_size=settings.train_batch_size,
                           workers=settings.decode_workers,
                           max_pixels=settings.max_image_pixels, with_hash=True,
                           companion=net.companion, advance=adv, zeros=storage.zeros)


def _split_photos(catalog_dir: Path, stage: Path, net: TrainedNet, catalogue: CatalogueRead,
                  clean: FrozenPass, settings: Settings, storage: MapStorage,
                  earlier: Split | None) -> PhotosRead:
    """Find the duplicates among the photos read (on their pretrained embeddings) and split
    them, the earlier model's split kept where it can be; the split and the photos'
    fingerprints are written into ``stage``."""
    from vitrine.dedupe import DuplicateRules
    from vitrine.photo_hashes import file_sha256
    from vitrine.split import alike_groups, save_fingerprints
    from vitrine.split_kept import kept_split

    products, given = catalogue.products, catalogue.given
    ok = [i for i, e in enumerate(clean.errors) if e is None]
    bad = [{"product_id": products[i].product_id, "reason": clean.errors[i]}
           for i in range(len(products)) if clean.errors[i] is not None]
    vectors = pool_views(net, clean.maps, zeros=storage.zeros)[ok, 0]  # the one copy
    vectors /= vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)  # as F.normalize, in place
    vectors = vectors.numpy()
    usable = [products[i] for i in ok]
    too_few_categories(catalog_dir, usable, bad)
    contents = {p.product_id: file_sha256(p.image) for p in usable}  # each was just read
    groups = find_groups(usable, vectors, [clean.phashes[i] for i in ok],
                         [clean.thumbs[i] for i in ok], settings,
                         [contents[p.product_id] for p in usable])
    alike = alike_groups([p.product_id for p in usable], vectors,  # (kept in one split)
                         [clean.phashes[i] for i in ok], DuplicateRules.from_settings(settings))
    del vectors
    phash_of = {p.product_id: clean.phashes[i] for p, i in zip(usable, ok, strict=True)}
    if given is None and earlier is not None:  # (a split catalogue keeps its folders')
        split = kept_split(usable, groups, settings, earlier, contents, alike)
    else:
        split = make_split(usable, groups, settings, given, alike)
    split.contents, split.categories = contents, {p.product_id: p.category for p in usable}
    split.save(stage / "split.json")
    save_fingerprints(stage, split, phash_of,  # (evaluate finds their renamed copies)
                      {p.product_id: clean.thumbs[i] for p, i in zip(usable, ok, strict=True)})
    return PhotosRead(usable, bad, split, phash_of)


def _fit(net: TrainedNet, caches: dict[str, FeatureCache], classes: list[str], split: Split,
         settings: Settings, stage: Path, storage: MapStorage, out_dir: Path,
         show_progress: bool) -> tuple[Fit, torch.Tensor | None]:
    """Give the network a new head for ``classes`` and fit it on the caches (both phases,
    and the refit); refuses a run that did not converge. Returns the fit and the test rows
    its figures count."""
    torch.manual_seed(settings.train_seed)
    net.head = ClassifierHead(net.head_dim, settings.train_head_units, len(classes),
                              settings.train_dropout)
    test_rows = _counted_test_rows(caches, split.groups)
    fit = fit_cached(net, caches, len(classes), settings, stage / "checkpoints",
                     show_progress=show_progress, zeros=storage.zeros, test_rows=test_rows)
    check_converged(fit.phase1.history + fit.phase2.history, out_dir, fit.refit)
    return fit, test_rows


def split_caches(net: TrainedNet, products: Sequence[Product], row: dict[str, int],
                 clean: FrozenPass, split: Split, prep: Preprocessing,
                 settings: Settings, storage: MapStorage, show_progress: bool,
                 unaugmented: list[dict] | None = None
                 ) -> tuple[list[str], dict[str, FeatureCache]]:
    """The classes (categories of the training split) and a cache per split: the clean view
    for every photo, plus ``train_views - 1`` augmented views of each training photo. The
    rows of ``clean.maps`` are reordered in place so that each split's photos are one slice
    of it: with one view the caches are those slices, not copies; with more, each split's
    maps are copied out of it, so that it can be let go. A training photo that cannot be
    read again for its augmented views (changed or gone since it was read) trains on its
    clean view in their place, and is added to ``unaugmented`` ({"product_id", "reason"}):
    its views were zeros, trained under its label without a word (helper-190)."""
    by_id = {p.product_id: p for p in products}
    parts = {name: [by_id[i] for i in split.ids(name) if i in by_id] for name in split.counts()}
    classes = sorted({p.category for p in parts["train"]})
    if len(classes) < 2:
        raise CatalogError("training needs photos of at least two categories in the training "
                           "split.")
    position = {c: i for i, c in enumerate(classes)}
    if not any(p.category in position for p in parts["val"]):
        # photos a category has, a duplicate group as one (it stays in one split)
        unit = {pid: i for i, group in enumerate(split.groups) for pid in group}
        photos = Counter(category for category, _ in {
            (p.category, unit.get(p.product_id, p.product_id))
            for items in parts.values() for p in items})
        remedy = ("add photos of them to the val folder" + (
            " (its copies of training photos were left out)" if split.left_out_val else "")
            if split.source == "folders" else
            # (a category's one photo always trains, and at the default fractions its
            # two photos do too: round(2 × 0.15) is 0; it said two were enough)
            validation_remedy(need, settings)
            if max(photos.values()) < (need := photos_to_validate(settings)) else
            "add photos or raise VITRINE_TRAIN_VAL_FRACTION")
        raise CatalogError("the validation split has no photo of a category the training "
                           f"split has; {remedy}.")
    parts = {name: [p for p in items if p.category in position]  # untrained: unscored
             for name, items in parts.items()}
    order = [row[p.product_id] for items in parts.values() for p in items]
    placed = set(order)
    permute_rows_(clean.maps, order + [i for i in range(len(clean.maps)) if i not in placed])
    caches = {}
    start = 0
    for name, items in parts.items():
        if not items:
            continue
        rows = [row[p.product_id] for p in items]
        side = None if clean.side is None else clean.side[rows]
        maps = clean.maps[start:start + len(items)]
        start += len(items)
        if settings.train_views > 1 and name != "train":
            maps = storage.zeros(maps.shape).copy_(maps)
        elif settings.train_views > 1:
            # one tensor for every view; the augmented views are written straight into it
            clean_view = maps
            maps = storage.zeros((len(items), settings.train_views, *clean.maps.shape[2:]))
            maps[:, 0] = clean_view[:, 0]
            with progress_bar("Augmenting", len(items), enabled=show_progress) as adv:
                extra = frozen_pass(net.base, [p.image for p in items],
                                    range(1, settings.train_views), prep,
                                    seed=settings.train_seed, keys=rows,
                                    batch_size=settings.train_batch_size,
                                    workers=settings.decode_workers,
                                    max_pixels=settings.max_image_pixels,
                                    companion=net.companion, advance=adv, out=maps[:, 1:])
            if side is not None:
                side = torch.cat([side, extra.side], dim=1)
            for i, error in enumerate(extra.errors):
                if error is not None:
                    maps[i, 1:] = maps[i, :1]
                    if side is not None:
                        side[i, 1:] = side[i, :1]
                    if unaugmented is not None:
                        unaugmented.append({"product_id": items[i].product_id,
                                            "reason": error})
        labels = torch.as_tensor([position[p.category] for p in items], dtype=torch.long)
        caches[name] = FeatureCache(maps, labels, items, side)
    return classes, caches
