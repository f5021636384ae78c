"""Early stopping, reduce-LR-on-plateau and best-checkpoint restore on a tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vitrine.train_fit import class_weights
from vitrine.train_loop import BestCheckpoint, EarlyStopping, Metrics, PhaseConfig, fit_phase


def test_early_stopping_counts_epochs_without_improvement():
    stop = EarlyStopping(patience=2)
    assert stop.step(1.0, 1) and not stop.should_stop
    assert not stop.step(1.2, 2) and not stop.should_stop
    assert stop.step(0.5, 3) and stop.best_epoch == 3
    assert not stop.step(0.5, 4)  # equal is no improvement
    assert not stop.step(0.6, 5) and stop.should_stop


def test_the_least_improvement_patched_in_the_module_is_the_default(monkeypatch):
    """``EarlyStopping(min_delta=MIN_DELTA)`` took the constant as the module was imported:
    patching ``vitrine.train_loop.MIN_DELTA`` changed nothing."""
    import vitrine.train_loop

    monkeypatch.setattr(vitrine.train_loop, "MIN_DELTA", 0.1)
    stop = EarlyStopping(patience=2)
    assert stop.step(1.0, 1)
    assert not stop.step(0.95, 2)  # (a drop of 0.05: no improvement by 0.1)
    assert stop.step(0.85, 3)


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    stop = EarlyStopping(patience=0)
    assert stop.step(1.0, 1) and not stop.should_stop  # it stopped here before
    assert stop.step(0.8, 2) and not stop.should_stop
    assert not stop.step(0.9, 3) and stop.should_stop


def test_best_checkpoint_restores_and_writes(tmp_path):
    model = nn.Linear(2, 1)
    ckpt = BestCheckpoint(model, tmp_path / "best.pt")
    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt.save()
    with torch.no_grad():
        model.weight.fill_(5.0)
    ckpt.restore()
    assert torch.all(model.weight == 1.0)
    assert torch.all(torch.load(tmp_path / "best.pt")["weight"] == 1.0)


def _scripted_phase(val_losses, tmp_path, **cfg):
    """Train a 1-parameter model; 'validation loss' follows a script; returns what
    happened and the weight value seen at each epoch."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1, bias=False)
    seen, lrs = [], []
    epoch = {"n": 0}

    def train_epoch(optimizer, advance) -> Metrics:
        optimizer.zero_grad()
        loss = (model(torch.ones(1, 1)) - 10).pow(2).sum()
        loss.backward()
        optimizer.step()
        advance(1, loss=loss.item(), acc=0.0)
        seen.append(model.weight.item())
        lrs.append(optimizer.param_groups[0]["lr"])
        return Metrics(loss.item(), 0.0)

    def validate() -> Metrics:
        epoch["n"] += 1
        return Metrics(val_losses[epoch["n"] - 1], 0.5)

    config = PhaseConfig("tiny", epochs=len(val_losses), lr=0.1, **cfg)
    result = fit_phase(config, model, list(model.parameters()), train_epoch, validate,
                       steps_per_epoch=1, checkpoint=tmp_path / "ckpt.pt", show_progress=False)
    return result, model, seen, lrs


def test_fit_phase_stops_early_and_restores_best(tmp_path):
    losses = [1.0, 0.8, 0.5, 0.7, 0.6, 0.9, 0.4, 0.3]
    result, model, seen, _ = _scripted_phase(losses, tmp_path, patience=3, lr_patience=10)
    assert result.stopped_early and len(result.history) == 6  # 3 epochs after the best (3)
    assert result.best_epoch == 3
    assert model.weight.item() == seen[2] != seen[-1]
    assert [h["best"] for h in result.history] == [True, True, True, False, False, False]
    assert (tmp_path / "ckpt.pt").is_file()


def test_patience_out_on_the_last_epoch_is_not_stopping_early(tmp_path):
    """A phase that ran every epoch it was allowed, its patience running out on the last,
    was reported "stopped early" (helper-154)."""
    result, _, _, _ = _scripted_phase([1.0, 0.5, 0.7, 0.8, 0.9], tmp_path, patience=3,
                                      lr_patience=10)
    assert len(result.history) == 5 and not result.stopped_early
    result, _, _, _ = _scripted_phase([1.0, 0.5, 0.7, 0.8, 0.9, 0.4], tmp_path, patience=3,
                                      lr_patience=10)
    assert len(result.history) == 5 and result.stopped_early  # (one epoch left unrun)


def test_fit_phase_reduces_lr_on_plateau(tmp_path):
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    result, _, _, lrs = _scripted_phase(losses, tmp_path, patience=99, lr_patience=1,
                                        lr_factor=0.5, min_lr=0.02)
    # epoch 1 best; epochs 2 and 3 bad → reduce after the 2nd bad epoch (patience 1)
    assert lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]
    assert [h["lr"] for h in result.history] == lrs
    assert not result.stopped_early


def test_class_weights_balance_the_loss():
    w = class_weights([0, 0, 0, 1], 3)
    assert torch.allclose(w, torch.tensor([2 / 3, 2.0, 0.0]))  # mean 1 over the 4 samples
    assert torch.allclose(class_weights([0, 0, 0, 1], 3, power=0.0), torch.tensor([1.0, 1.0, 0.0]))


def test_freeze_bn_keeps_running_statistics_while_weights_train():
    from vitrine.train_fit import _epoch_fn

    def epoch(freeze_bn: bool):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        inputs = torch.randn(64, 2, 4) * 3 + 1  # 64 photos, 2 cached views each
        labels = torch.randint(0, 2, (64,))
        run = _epoch_fn(net, net, (inputs,), labels, nn.CrossEntropyLoss(),
                        torch.Generator().manual_seed(0), 16, freeze_bn=freeze_bn)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        run(torch.optim.SGD(net.parameters(), lr=0.1), lambda *a, **k: None)
        return before, net.state_dict()

    before, after = epoch(freeze_bn=True)
    assert torch.equal(before["1.running_mean"], after["1.running_mean"])
    assert torch.equal(before["1.running_var"], after["1.running_var"])
    assert not torch.equal(before["1.weight"], after["1.weight"])  # BN's scale still trains
    assert not torch.equal(before["0.weight"], after["0.weight"])
    before, after = epoch(freeze_bn=False)
    assert not torch.equal(before["1.running_mean"], after["1.running_mean"])


def test_replay_phase_reruns_the_chosen_epochs_with_their_learning_rates():
    from vitrine.train_loop import replay_phase

    model = nn.Linear(2, 1)
    seen = []

    def epoch(optimizer, advance):
        seen.append(optimizer.param_groups[0]["lr"])
        advance(1, loss=0.0, acc=1.0)
        return Metrics(0.0, 1.0)

    history = [{"lr": 1e-3}, {"lr": 1e-3}, {"lr": 3e-4}]
    cfg = PhaseConfig("refit", 10, 1e-2, weight_decay=1e-4)
    assert replay_phase(cfg, history, list(model.parameters()), epoch, steps_per_epoch=1,
                        show_progress=False) == 3
    assert seen == [1e-3, 1e-3, 3e-4]
    assert replay_phase(cfg, [], list(model.parameters()), epoch, steps_per_epoch=1,
                        show_progress=False) == 0 and len(seen) == 3


def test_refit_trains_on_the_validation_photos_too_and_repeats_exactly():
    """The refit starts from the given weights, learns from the validation photos (other
    validation labels give another head) and is deterministic; on a random-weight
    MobileNetV2 cut before its last block, with synthetic cached maps."""
    from vitrine.config import Settings
    from vitrine.models import get_spec
    from vitrine.train_data import FeatureCache
    from vitrine.train_fit import Fit, pool_views, refit
    from vitrine.train_loop import PhaseResult
    from vitrine.trained_net import build_trained_net

    gen = torch.Generator().manual_seed(0)
    caches = {"train": FeatureCache(torch.randn(24, 2, 320, 2, 2, generator=gen),
                                    torch.arange(24) % 3),
              "val": FeatureCache(torch.randn(9, 1, 320, 2, 2, generator=gen),
                                  torch.arange(9) % 3)}
    settings = Settings(train_refit=True, train_head_units=0, train_batch_size=8)
    history = [{"lr": 1e-2}, {"lr": 1e-2}]
    fit = Fit(PhaseResult(history, best_epoch=2), PhaseResult(history[:1], best_epoch=1),
              {}, {}, {}, {})

    def run(val_labels: torch.Tensor) -> dict:
        torch.manual_seed(0)
        net = build_trained_net(get_spec("mobilenet_v2"), None, 18, 3, 0, 0.0)
        data = {**caches, "val": FeatureCache(caches["val"].maps, val_labels)}
        pooled = {k: pool_views(net, c.maps) for k, c in data.items()}
        top = [p.clone() for p in net.top.parameters()]
        head_start = {k: v.clone() for k, v in net.head.state_dict().items()}
        epochs = refit(net, data, pooled, lambda maps: net.head(net.pooled(maps)), fit,
                       head_start, 3, settings, show_progress=False)
        assert epochs == [2, 1]
        moved = [not torch.equal(a, b) for a, b in zip(top, net.top.parameters(), strict=True)]
        assert any(moved)  # phase 2 was replayed
        return {k: v.clone() for k, v in net.state_dict().items()}

    first, again = run(caches["val"].labels), run(caches["val"].labels)
    other = run((caches["val"].labels + 1) % 3)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["head.out.1.weight"], other["head.out.1.weight"])


def test_joined_reads_both_caches_like_one_tensor():
    from vitrine.train_fit import Joined

    train, val = torch.randn(5, 3, 2, 2), torch.randn(4, 1, 2, 2)
    whole = torch.cat([train, val.expand(-1, 3, -1, -1)])
    joined = Joined(train, val)
    rows, views = torch.tensor([8, 0, 5, 4, 7]), torch.tensor([2, 1, 0, 2, 1])
    assert joined.shape == whole.shape
    assert torch.equal(joined[rows, views], whole[rows, views])


def test_a_bar_in_a_log_is_not_cut_at_80_columns(capsys):
    """Piped or logged (stderr not a terminal), a training bar's last frame keeps its text:
    rich cut it at 80 columns ("transfer learning 11/… loss 0.704 acc 0.9…")."""
    from vitrine.train_loop import _epoch_bar

    with _epoch_bar("transfer learning", 10, True) as bar:
        bar.describe("transfer learning 11/40")
        bar.advance(10, loss=0.7041, acc=0.9571)
        bar.show("val loss 0.285 acc 0.928 · lr 3.0e-04")
        bar.finish()
    frame = capsys.readouterr().err.strip().splitlines()[-1]
    assert "…" not in frame
    assert "loss 0.704 acc 0.957" in frame and "lr 3.0e-04" in frame


def test_frozen_pass_fills_one_tensor_and_zeros_unreadable_photos(tmp_path):
    """Every view of every photo lands in its row of one tensor (or of ``out``, a view into a
    bigger cache, whose other views stay as they were); a photo that cannot be decoded is a
    row of zeros with its error, whichever batch it falls in."""
    import numpy as np
    import pytest
    from PIL import Image

    from vitrine.errors import ImageError
    from vitrine.images import Preprocessing, open_image, to_array
    from vitrine.train_data import augment, frozen_pass

    prep = Preprocessing(size=32)
    paths = []
    for i, colour in enumerate(["red", None, "blue", "green", None]):
        path = tmp_path / f"{i}.jpg"
        if colour is None:
            path.write_bytes(b"not a photo")
        else:
            Image.new("RGB", (48, 40), colour).save(path)
        paths.append(path)
    base = nn.Conv2d(3, 2, 3, stride=4)

    def expected(path, view, key):
        img = open_image(path, draft_size=prep.draft_size)
        if view:
            img = augment(img, np.random.default_rng([7, key, view]))
        with torch.no_grad():
            return base(torch.from_numpy(to_array(img, prep)[None]))[0]

    done = frozen_pass(base, paths, [0, 1], prep, seed=7, batch_size=4)  # 2 photos a batch
    assert done.maps.shape[:2] == (5, 2)
    assert [e is None for e in done.errors] == [True, False, True, True, False]
    for i in (0, 2, 3):
        for v in (0, 1):
            assert torch.allclose(done.maps[i, v], expected(paths[i], v, i), atol=1e-6)
    assert not done.maps[[1, 4]].any()

    cache = torch.full((5, 3, *done.maps.shape[2:]), 9.0)
    into = frozen_pass(base, paths, [1, 2], prep, seed=7, keys=range(5), batch_size=6,
                       out=cache[:, 1:])
    assert into.maps.data_ptr() == cache[:, 1:].data_ptr()
    assert torch.all(cache[:, 0] == 9.0)  # the view it was not asked for is untouched
    assert torch.allclose(cache[3, 2], expected(paths[3], 2, 3), atol=1e-6)
    assert not cache[[1, 4], 1:].any()
    with pytest.raises(ImageError, match=r"1 photo\(s\): none of them could be decoded "
                                         r"\(the first: "):
        frozen_pass(base, [paths[1]], [0], prep, seed=7)


def test_a_diverged_loss_stops_the_model_from_replacing_the_old_one(tmp_path):
    """A loss that is not a number (learning rates far too high) is a TrainingError naming
    the epoch, raised before the model is written (it used to replace a working model with
    one that predicts nothing)."""
    import pytest

    from vitrine.errors import TrainingError
    from vitrine.train import check_converged

    good = [{"phase": "transfer learning", "epoch": 1, "loss": 0.9, "val_loss": 0.8}]
    check_converged(good, tmp_path)
    for bad in ({"loss": float("nan"), "val_loss": 0.8}, {"loss": 0.5, "val_loss": float("inf")}):
        history = [*good, {"phase": "fine-tuning", "epoch": 3, **bad}]
        with pytest.raises(TrainingError, match="fine-tuning epoch 3.*left as it was"):
            check_converged(history, tmp_path)


def test_fine_tuning_that_never_beats_transfer_learning_is_dropped(tmp_path):
    """Phase 2's early stopping starts afresh, so its least bad epoch was kept however much
    worse than phase 1's weights (a too-high fine-tuning rate took test accuracy from 1.0 to
    0.33, exit 0). Such a phase is dropped: the top is the pretrained one again, the head
    phase 1's best, the refit replays no fine-tuning, and the run says so."""
    from vitrine.config import Settings
    from vitrine.models import get_spec
    from vitrine.report import best_epoch_text, dropped_fine_tuning_line
    from vitrine.train_data import FeatureCache
    from vitrine.train_fit import fit_cached
    from vitrine.trained_net import build_trained_net

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % 3
    maps = torch.randn(3, 320, 2, 2, generator=gen)[labels].unsqueeze(1) + 0.3 * torch.randn(
        30, 1, 320, 2, 2, generator=gen)  # three separable classes
    caches = {"train": FeatureCache(maps[:21], labels[:21]),
              "val": FeatureCache(maps[21:], labels[21:])}
    settings = Settings(train_refit=True, train_head_units=0, train_batch_size=8,
                        train_phase1_epochs=15, train_phase2_epochs=3, train_phase2_lr=1.0)
    torch.manual_seed(0)
    net = build_trained_net(get_spec("mobilenet_v2"), None, 18, 3, 0, 0.0)
    fit = fit_cached(net, caches, 3, settings, tmp_path, show_progress=False)
    assert fit.phase2.history and fit.phase2.best_epoch == 0
    assert (tmp_path / "phase1-best.pt").is_file()  # the checkpoint shipped is phase 1's:
    assert not (tmp_path / "phase2-best.pt").exists()  # the dropped weights went
    assert min(e["val_loss"] for e in fit.phase2.history) > fit.phase1.best_val_loss()
    assert not any(e["best"] for e in fit.phase2.history)
    assert fit.refit["epochs"][1] == 0  # no fine-tuning replayed
    assert fit.after2["val"]["loss"] == pytest.approx(fit.after1["val"]["loss"], rel=1e-4)
    top = dict(net.top.state_dict())
    assert all(torch.equal(v, net.ref_top.state_dict()[k]) for k, v in top.items())
    history = fit.phase1.history + fit.phase2.history
    summary = {"history": history, "phases": {
        "fine_tuning": {"epochs": len(fit.phase2.history), "best_epoch": 0}}}
    assert dropped_fine_tuning_line(summary).startswith(
        "Fine-tuning never lowered the validation loss below transfer learning's")
    assert best_epoch_text(summary["phases"]["fine_tuning"]) == "none"
    assert best_epoch_text({"epochs": 0, "best_epoch": -1}) == "—"


def test_a_drop_smaller_than_min_delta_is_no_improvement():
    """A validation loss lower by less than ``min_delta`` (noise) neither becomes the best
    epoch (its weights kept) nor resets the patience: training stops on time."""
    stop = EarlyStopping(patience=2, min_delta=1e-3)
    assert stop.step(1.0, 1)
    assert not stop.step(0.9995, 2) and stop.best_epoch == 1 and stop.best == 1.0
    assert not stop.step(0.9992, 3) and stop.should_stop
    assert stop.step(0.99, 4) and stop.best_epoch == 4 and not stop.should_stop


def test_the_least_improvement_patched_in_the_module_drops_fine_tuning(monkeypatch):
    """``train_fit`` imported ``MIN_DELTA`` by name: with ``vitrine.train_loop.MIN_DELTA``
    patched, fine-tuning that beat transfer learning by less than it was still kept."""
    from types import SimpleNamespace

    import vitrine.train_loop
    from vitrine.train_fit import _drop_worse_fine_tuning
    from vitrine.train_loop import PhaseResult

    def phase(loss):
        return PhaseResult(history=[{"epoch": 1, "val_loss": loss, "best": True}],
                           best_epoch=1)

    def tuned(delta):
        monkeypatch.setattr(vitrine.train_loop, "MIN_DELTA", delta)
        net = SimpleNamespace(top=nn.Linear(1, 1), ref_top=nn.Linear(1, 1),
                              head=nn.Linear(1, 1))
        phase2 = phase(0.95)
        _drop_worse_fine_tuning(net, phase(1.0), phase2, nn.Linear(1, 1).state_dict(), None)
        return phase2.best_epoch

    assert tuned(1e-4) == 1  # (0.05 better: kept)
    assert tuned(0.1) == 0  # (not better by 0.1: dropped)
