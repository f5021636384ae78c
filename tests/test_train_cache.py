"""The frozen-layer cache's storage: in memory up to a budget, then files mapped into memory;
its rows reordered in place so that each split is a slice."""

from __future__ import annotations

import errno
import os
import sys

import numpy as np
import pytest
import torch

from vitrine.config import Settings
from vitrine.errors import VitrineError
from vitrine.train_data import MapStorage, cache_budget, permute_rows_


@pytest.mark.parametrize("seed", range(6))
def test_rows_are_reordered_in_place_like_an_index(seed, tmp_path):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    order = rng.permutation(n).tolist() if seed else list(range(n))
    storage = MapStorage(tmp_path, budget=0 if seed % 2 else 2**30)
    tensor = storage.zeros((n, 2, 3))
    tensor[:] = torch.from_numpy(rng.normal(size=(n, 2, 3)).astype(np.float32))
    expected = tensor[order].clone()
    permute_rows_(tensor, order)
    assert torch.equal(tensor, expected)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
def test_storage_keeps_tensors_in_memory_up_to_its_budget_then_in_files(tmp_path):
    """Past the budget a tensor is a file mapped into memory, unlinked at once: its blocks
    go back when the map goes, even if the run is killed."""
    folder = tmp_path / "cache"
    storage = MapStorage(folder, budget=4 * 10 * 8)
    first = storage.zeros((10, 8))  # exactly the budget
    assert not folder.exists() and storage.in_memory == 320 and storage.on_disk == 0
    second = storage.zeros((5, 2, 3))
    assert storage.on_disk == 4 * 30 and list(folder.iterdir()) == []
    with open("/proc/self/maps") as fh:
        mapped = [line for line in fh if str(folder) in line]
    assert len(mapped) == 1 and mapped[0].rstrip().endswith("(deleted)")
    second[4, 1] = torch.tensor([1.0, 2.0, 3.0])
    second[0] += 7
    assert second[4, 1].tolist() == [1.0, 2.0, 3.0] and (second[0] == 7).all()
    assert second[1:4].sum() == 0 and first.sum() == 0
    assert storage.zeros((0, 8)).shape == (0, 8)  # nothing to map
    del second
    import gc

    gc.collect()
    with open("/proc/self/maps") as fh:
        assert not any(str(folder) in line for line in fh)  # the blocks are free


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="blocks reserved on Linux")
def test_a_full_disk_is_one_sentence_and_leaves_no_file(tmp_path, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    storage = MapStorage(tmp_path / "cache", budget=0)
    with pytest.raises(VitrineError, match="cannot write the training cache .* free disk "
                                           "space there or raise VITRINE_TRAIN_CACHE_MEMORY_MB"):
        storage.zeros((1000, 64))
    assert list((tmp_path / "cache").iterdir()) == [] and storage.on_disk == 0


def test_a_cache_folder_that_cannot_be_made_is_one_sentence(tmp_path):
    """A folder name too long for the file system (beside a long --out) was a traceback."""
    storage = MapStorage(tmp_path / ("x" * 300) / "cache", budget=0)
    with pytest.raises(VitrineError, match="cannot write the training cache .*File name "
                                           "too long"):
        storage.zeros((10, 4))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/meminfo")
def test_cache_budget_is_the_setting_or_half_the_available_memory():
    assert cache_budget(0) == 0 and cache_budget(3) == 3 * 2**20
    with open("/proc/meminfo") as fh:
        available = next(int(line.split()[1]) * 1024 for line in fh
                         if line.startswith("MemAvailable:"))
    # 0 when a control group is at its limit; 64 MiB of slack: memory moves meanwhile
    assert 0 <= cache_budget(None) <= available // 2 + 2**26


def test_cgroup_headroom_reads_the_groups_limits_less_their_unreclaimable_usage(tmp_path):
    from vitrine.train_data import cgroup_headroom

    gib = 2**30

    def group(folder, limit, usage, stat):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("memory.max" if "fs/cgroup/memory" not in str(folder) else
                   "memory.limit_in_bytes")).write_text(f"{limit}\n")
        (folder / ("memory.current" if "fs/cgroup/memory" not in str(folder) else
                   "memory.usage_in_bytes")).write_text(f"{usage}\n")
        (folder / "memory.stat").write_text("".join(f"{k} {v}\n" for k, v in stat.items()))

    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text(
        "not a cgroup line\n7:pids:/user.slice\n5:memory:/docker/abc\n0::/user.slice/job\n")
    v2 = tmp_path / "sys/fs/cgroup"
    group(v2 / "user.slice", 8 * gib, 3 * gib, {"inactive_file": gib, "anon": 2 * gib})
    group(v2 / "user.slice/job", "max", 2 * gib, {"inactive_file": 0})  # no limit of its own
    v1 = tmp_path / "sys/fs/cgroup/memory"  # /docker/abc is not shown: the mount's root
    group(v1, 4 * gib, gib, {"total_inactive_file": gib // 2,
                             "hierarchical_memory_limit": 3 * gib})
    assert sorted(cgroup_headroom(tmp_path)) == [gib * 5 // 2, 6 * gib]
    (tmp_path / "proc/self/cgroup").write_bytes(b"0::/\xff\n")  # nothing readable: none
    assert cgroup_headroom(tmp_path) == [] and cgroup_headroom(tmp_path / "none") == []


def test_the_cache_budget_is_not_a_training_choice(monkeypatch):
    """It changes where the maps are kept, not the model: model.json does not record it and
    a model trained under another budget is reused (same fingerprint)."""
    monkeypatch.setenv("VITRINE_TRAIN_CACHE_MEMORY_MB", "0")
    low = Settings()
    monkeypatch.setenv("VITRINE_TRAIN_CACHE_MEMORY_MB", "")
    unset = Settings()
    assert low.train_cache_memory_mb == 0 and unset.train_cache_memory_mb is None
    assert low.training_choices() == unset.training_choices()
    assert "train_cache_memory_mb" not in low.training_choices()
    assert "train_seed" in low.training_choices(mode="json")


@pytest.mark.parametrize("budget", [0, 2**30])
def test_each_split_is_a_slice_holding_its_own_photos_maps(budget, tmp_path):
    """split_caches reorders the clean maps instead of copying them: each split's maps are
    those of its photos, in its order; photos of a category the training split lacks, and
    photos that could not be read, are in no split."""
    from pathlib import Path

    from vitrine.catalog import Product
    from vitrine.split import Split
    from vitrine.train import split_caches
    from vitrine.train_data import FrozenPass

    rng = np.random.default_rng(budget)
    products = [Product(f"p{i:02d}", Path(f"/photos/{i}.jpg"), category="abc"[i % 3])
                for i in range(30)]
    splits = ["train"] * 18 + ["val"] * 6 + ["test"] * 6
    rng.shuffle(splits)
    assignment = {p.product_id: s for p, s in zip(products, splits, strict=True)}
    assignment = {pid: s for pid, s in assignment.items() if pid != "p07"}  # unreadable
    for p in products:  # category c only outside the training split: unscored
        if p.category == "c" and assignment.get(p.product_id) == "train":
            assignment[p.product_id] = "val"
    storage = MapStorage(tmp_path, budget)
    clean = FrozenPass(storage.zeros((30, 1, 2, 2, 2)), [], [], [])
    for i in range(30):
        clean.maps[i] = i
    row = {p.product_id: i for i, p in enumerate(products)}
    classes, caches = split_caches(None, products, row, clean, Split(assignment), None,
                                   Settings(train_views=1), storage, show_progress=False)
    assert classes == ["a", "b"]
    start = 0
    for name in ("train", "val", "test"):
        cache = caches[name]
        ids = [p.product_id for p in cache.products]
        assert ids == [pid for pid in Split(assignment).ids(name)
                       if products[row[pid]].category != "c"]
        assert [int(m.flatten()[0]) for m in cache.maps] == [row[pid] for pid in ids]
        assert all((m == m.flatten()[0]).all() for m in cache.maps)
        assert cache.maps.data_ptr() == clean.maps[start:].data_ptr()  # a slice, no copy
        assert cache.labels.tolist() == [classes.index(p.category) for p in cache.products]
        start += len(ids)


def test_a_photo_gone_before_its_augmented_views_trains_on_its_clean_view(tmp_path,
                                                                          monkeypatch):
    """A training photo that could not be read again for its augmented views (changed or
    gone since it was read) had views of zeros, trained under its label without a word
    (helper-190): its clean view stands in for them, and it is named."""
    import types
    from pathlib import Path

    from vitrine import train
    from vitrine.catalog import Product
    from vitrine.split import Split
    from vitrine.train_data import FrozenPass

    products = [Product(f"p{i}", Path(f"/photos/{i}.jpg"), category="ab"[i % 2])
                for i in range(6)]
    assignment = {p.product_id: "train" if i < 4 else "val" for i, p in enumerate(products)}
    storage = MapStorage(tmp_path, 0)
    clean = FrozenPass(storage.zeros((6, 1, 2, 2, 2)), [], [], [])
    for i in range(6):
        clean.maps[i] = i + 1

    def augmented(base, images, views, prep, *, out, **kwargs):
        errors = ["cannot identify image file" if path.name == "0.jpg" else None
                  for path in images]
        for j, error in enumerate(errors):
            out[j] = 0 if error else 100  # (frozen_pass leaves a failed photo's rows zero)
        return FrozenPass(out, [], [], errors)

    monkeypatch.setattr(train, "frozen_pass", augmented)
    unaugmented: list[dict] = []
    row = {p.product_id: i for i, p in enumerate(products)}
    _, caches = train.split_caches(types.SimpleNamespace(base=None, companion=None), products,
                                   row, clean, Split(assignment), None,
                                   Settings(train_views=2), storage, show_progress=False,
                                   unaugmented=unaugmented)
    cache = caches["train"]
    gone = [p.product_id for p in cache.products].index("p0")
    assert unaugmented == [{"product_id": "p0", "reason": "cannot identify image file"}]
    assert (cache.maps[gone, 1] == cache.maps[gone, 0]).all() and (cache.maps[gone] == 1).all()
    assert all((cache.maps[i, 1] == 100).all() for i in range(4) if i != gone)


class _Net:
    """Stands for a TrainedNet: outputs that are simple functions of the maps."""

    ref_top = torch.nn.Identity()

    def pooled(self, maps, reference):
        return maps.flatten(1) * 2

    def outputs(self, maps, side, names):
        return {"pooled": maps.flatten(1) + 1, "logits": maps.flatten(1)[:, :2] * -1}


@pytest.mark.parametrize("budget", [0, 2**30])
def test_per_photo_outputs_are_written_batch_by_batch_into_one_tensor(budget, tmp_path):
    from vitrine.train_data import FeatureCache
    from vitrine.train_fit import clean_outputs, pool_views

    storage = MapStorage(tmp_path, budget)
    maps = torch.arange(10 * 2 * 3, dtype=torch.float32).reshape(10, 2, 3, 1, 1)
    pooled = pool_views(_Net(), maps, batch=3, zeros=storage.zeros)
    assert torch.equal(pooled, maps.reshape(10, 2, 3) * 2)
    cache = FeatureCache(maps, torch.zeros(10, dtype=torch.long))
    outputs = clean_outputs(_Net(), cache, batch=4, zeros=storage.zeros)
    assert torch.equal(outputs["pooled"], maps[:, 0].flatten(1) + 1)
    assert torch.equal(outputs["logits"], -maps[:, 0].flatten(1)[:, :2])
    assert (storage.on_disk > 0) == (budget == 0)


@pytest.mark.parametrize("budget", [0, 2**30])
def test_combined_vectors_of_several_splits_are_written_chunk_by_chunk(budget, tmp_path):
    """The duplicate calibration's and the test retrieval's vectors: each split's layers
    combined, a chunk at a time, into one tensor of the storage, as combining each split whole
    and concatenating them would give."""
    from vitrine.trained_net import combine, combine_rows

    storage = MapStorage(tmp_path, budget)
    g = torch.Generator().manual_seed(0)
    splits = [{"hidden": torch.randn(n, 4, generator=g), "probs": torch.rand(n, 3, generator=g)}
              for n in (5, 4, 0, 2)]
    parts, weights = ["hidden", "probs"], [0.7, 0.3]
    rows = combine_rows(splits, parts, weights, zeros=storage.zeros, chunk=3)
    assert torch.allclose(rows, torch.cat([combine(s, parts, weights) for s in splits]),
                          atol=0, rtol=0)
    assert rows.shape == (11, 7) and (storage.on_disk > 0) == (budget == 0)


@pytest.mark.parametrize("views, said", [
    (1, "Frozen blocks run once per photo (1 view, no augmentation"),
    (2, "2 views per training photo (the photo and 1 seeded augmentation)"),
    (4, "4 views per training photo (the photo and 3 seeded augmentations)")])
def test_the_cache_note_says_the_views_as_counted(views, said, tmp_path):
    """It said "1 views per training photo (the photo and 1-1 seeded augmentations)" and
    called a run without augmentation "a fixed set of views" (helper-148)."""
    from vitrine.train import cache_note

    note = cache_note(Settings(train_views=views), MapStorage(tmp_path, 1 << 20))
    assert said in note and "-1" not in note
    assert ("fixed set of views" in note) == (views > 1)
