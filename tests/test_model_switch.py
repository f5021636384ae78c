"""Switching models on an existing store: what a shop that upgrades its model meets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_subset, require_module

from vitrine.config import Settings
from vitrine.embed import Embedder
from vitrine.errors import StoreError, WeightsError
from vitrine.manifest import ModelManifest
from vitrine.store import open_store


@pytest.fixture(scope="module")
def shop(demo_catalog, tmp_path_factory) -> Path:
    """16 products (2 per category). Read-only."""
    return copy_subset(demo_catalog, tmp_path_factory.mktemp("a") / "shop", 2)


def _other(embedder) -> ModelManifest:
    """Another model of the same kind and dimension (a retrained one)."""
    mine = embedder.manifest
    return ModelManifest(mine.backbone, "f" * 64, dict(mine.preprocessing), mine.dim)


def test_index_refuses_a_model_another_writer_recorded_while_it_read(shop, embedder,
                                                                     tmp_path, monkeypatch):
    """Shards of one Milvus store run at once: one with another model recorded its model
    between this one's check and its own record, which wrote over it; the two models'
    vectors were mixed, exit 0 both."""
    from vitrine import index_embed, indexer

    store = open_store(tmp_path / "st", create=True)
    other = _other(embedder)
    saved = index_embed._save_hashes

    def meanwhile(db, *args, **kwargs):  # (after the check, before the record)
        saved(db, *args, **kwargs)
        if db.manifest() is None:
            db.set_manifest(other)

    monkeypatch.setattr(indexer, "_save_hashes", meanwhile)
    with pytest.raises(StoreError, match="different model"):
        indexer.index_catalog(shop, store, embedder, show_progress=False)
    assert store.count() == 0 and store.manifest() == other
    store.close()


def test_index_stops_before_writing_when_another_writer_wrote_its_model_over(
        shop, embedder, tmp_path, monkeypatch):
    from vitrine import index_embed, indexer

    store = open_store(tmp_path / "st", create=True)
    other = _other(embedder)
    held = index_embed._held_vectors

    def overwritten(db, *args):  # (after this run recorded its model, before it writes)
        db.set_manifest(other)
        return held(db, *args)

    monkeypatch.setattr(index_embed, "_held_vectors", overwritten)
    with pytest.raises(StoreError, match="different model"):
        indexer.index_catalog(shop, store, embedder, show_progress=False)
    assert store.count() == 0
    store.close()


def _demo_holding_an_api_product(shop, settings, embedder, tmp_path):
    """The demo's store (not trained) with product ``pela-api`` added through its API:
    (the demo's --out, its settings, its console)."""
    from rich.console import Console

    from vitrine.demo import run_demo
    from vitrine.service import VitrineService
    from vitrine.service_writes import NewProduct

    out = tmp_path / "out"
    demo = settings.model_copy(update={"demo_train": False})
    console = Console(record=True, width=200)
    run_demo(shop, out / "store", out, demo, 2, console=console)
    service = VitrineService(settings, out / "store", embedder)
    photo = sorted(shop.glob("*/*.jpg"))[0]
    service.add_product(NewProduct("pela-api", name="added through the API"),
                        photo.read_bytes())
    service.close()
    return out, demo, console


def _assert_api_product_kept(out):
    """The demo's store still holds its 16 catalogue products and ``pela-api``, and its
    uploads folder that product's photo."""
    db = open_store(out / "store")
    try:
        assert db.get("pela-api") is not None and db.count() == 17
    finally:
        db.close()
    assert len(list((out / "store" / "uploads").iterdir())) == 1


def test_the_demo_keeps_products_added_through_the_api_when_the_model_changes(
        shop, settings, embedder, tmp_path, monkeypatch, sketched_demo_figures):
    """The demo rebuilt its own store for another model (a setting changed, a photo added to
    the catalogue, which trains the model anew): the products added through its API and
    their photos were deleted, after "rebuilding it", exit 0."""
    from vitrine import trained
    from vitrine.demo import run_demo

    out, demo, console = _demo_holding_an_api_product(shop, settings, embedder, tmp_path)
    with pytest.raises(StoreError, match=re.escape(
            "holds 1 product added through the API, and the demo would rebuild it for "
            "another model")):
        run_demo(shop, out / "store", out, demo.model_copy(update={"resize": "pad"}), 2,
                 console=console)
    # nor is the model trained anew first (the store then made with a model that is gone)
    monkeypatch.setattr(trained, "trained_already", lambda *args: False)
    monkeypatch.setattr(trained, "ensure_model",
                        lambda *args, **kwargs: pytest.fail("trained anew"))
    with pytest.raises(StoreError, match="added through the API"):
        run_demo(shop, out / "store", out, settings.model_copy(update={"demo_train": True}),
                 2, console=console)
    _assert_api_product_kept(out)


def test_the_demo_keeps_products_an_older_vitrine_added_through_the_api(
        shop, settings, embedder, tmp_path, sketched_demo_figures):
    """A product added through the API by a Vitrine from before the mark (its photo in the
    store's uploads folder, not marked): `vitrine index` keeps it, but the demo counted only
    marked products and rebuilt its store for another model without it."""
    from vitrine.demo import run_demo

    out, demo, console = _demo_holding_an_api_product(shop, settings, embedder, tmp_path)
    db = open_store(out / "store")
    db.lock_for_writing()
    db.update_metadata([db.get("pela-api").to_product(uploaded=False)])  # (as made before)
    assert not db.get("pela-api").uploaded
    db.close()
    with pytest.raises(StoreError, match=re.escape(
            "holds 1 product added through the API, and the demo would rebuild it")):
        run_demo(shop, out / "store", out, demo.model_copy(update={"resize": "pad"}), 2,
                 console=console)
    _assert_api_product_kept(out)


def test_the_demo_keeps_edits_that_index_keeps_when_the_model_changes(
        demo_catalog, settings, embedder, tmp_path, monkeypatch):
    """A product no row of the catalogue's table names, edited through the demo's API, keeps
    its edit at every `vitrine index` (helper-394); the demo rebuilt its own store for
    another model from the catalogue alone: the shop's name and price were gone (the photo
    file's name again), exit 0. The edit of a product a row names goes at any run (the
    row's values win): that rebuild goes ahead."""
    import csv

    from rich.console import Console

    from vitrine import trained
    from vitrine.demo import run_demo
    from vitrine.service import VitrineService

    shop = copy_subset(demo_catalog, tmp_path / "shop", 1)
    with open(shop / "products.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(shop / "products.csv", "w", newline="") as fh:  # the last photo unlisted
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows[:-1])
    unlisted, listed = rows[-1]["image"], rows[0]["product_id"]
    out = tmp_path / "out"
    demo = settings.model_copy(update={"demo_train": False})
    console = Console(record=True, width=200)
    run_demo(shop, out / "store", out, demo, 2, console=console)

    def edit(pid: str, changes: dict, model: Settings) -> None:
        service = VitrineService(model, out / "store", Embedder.from_settings(model))
        try:
            service.edit_product(pid, changes)
        finally:
            service.close()

    edit(listed, {"name": "Do site"}, demo)  # (a row names it: its values back at any run)
    padded = demo.model_copy(update={"resize": "pad"})
    run_demo(shop, out / "store", out, padded, 2, console=console)
    db = open_store(out / "store")
    assert db.get(listed).name == rows[0]["name"] and db.count() == 8
    db.close()
    edit(unlisted, {"name": "Minha bolsa", "price": 10.5}, padded)
    with pytest.raises(StoreError, match=re.escape(
            "holds 1 product edited through the API that no row of the catalogue's product "
            "table names, and the demo would rebuild it for another model")):
        run_demo(shop, out / "store", out, demo, 2, console=console)
    # nor is the model trained anew first (the store then made with a model that is gone)
    monkeypatch.setattr(trained, "trained_already", lambda *args: False)
    monkeypatch.setattr(trained, "ensure_model",
                        lambda *args, **kwargs: pytest.fail("trained anew"))
    with pytest.raises(StoreError, match="edited through the API"):
        run_demo(shop, out / "store", out, settings.model_copy(update={"demo_train": True}),
                 2, console=console)
    db = open_store(out / "store")
    try:
        kept = db.get(unlisted)
        assert (kept.name, kept.price, kept.edited) == ("Minha bolsa", 10.5, True)
    finally:
        db.close()


def test_a_mobilenet_checkpoint_fine_tuned_for_other_classes_embeds(weights_path, embedder,
                                                                   small_catalog, tmp_path):
    """A torchvision MobileNetV2 fine-tuned for 10 classes was "not for the backbone
    mobilenet_v2": its classifier, which no embedding uses, has another shape."""
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    for key in ("classifier.1.weight", "classifier.1.bias"):
        state[key] = state[key][:10].clone()
    torch.save(state, tmp_path / "ten.pth")
    ten = Embedder.from_settings(Settings(weights=tmp_path / "ten.pth", cache_dir=tmp_path,
                                          engine="torch"))
    assert ten.manifest != embedder.manifest  # (another file: another model, to the stores)
    photo = sorted(small_catalog.glob("*/*.jpg"))[0]
    assert float(np.dot(ten.embed_image(photo), embedder.embed_image(photo))) >= 0.999


def test_train_names_the_weights_file_of_another_backbone(weights_path, small_catalog,
                                                          tmp_path):
    """As index does (helper-230): VITRINE_BACKBONE=efficientnet_lite0 with VITRINE_WEIGHTS
    left at the MobileNetV2 file was "the weights do not fit efficientnet_lite0 (…)"."""
    require_module("efficientnet_lite_pytorch", "the efficientnet extra")
    from vitrine.train import train_catalog

    settings = Settings(backbone="efficientnet_lite0", weights=weights_path,
                        cache_dir=tmp_path)
    with pytest.raises(WeightsError, match=(
            f"^the weights file {re.escape(str(weights_path))} \\(--weights, or "
            "VITRINE_WEIGHTS\\) is not for the backbone efficientnet_lite0 "
            "\\(VITRINE_BACKBONE\\): missing ")):
        train_catalog(small_catalog, tmp_path / "model", settings, show_progress=False)
    assert not (tmp_path / "model").exists()
