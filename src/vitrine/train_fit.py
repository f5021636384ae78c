"""Fitting a trained network on cached frozen-layer outputs: phase 1 (the head on the frozen
network), phase 2 (the top blocks with the head) and the refit on training + validation
photos; the epochs, metrics and class weights they use. :mod:`vitrine.train` prepares the
caches and writes the model; :mod:`vitrine.train_loop` runs each phase's epochs and callbacks;
:mod:`vitrine.train_refit` says whether the refit is kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vitrine import train_loop
from vitrine.config import Settings
from vitrine.jsonfile import finite
from vitrine.train_data import FeatureCache, Zeros
from vitrine.train_loop import (
    Metrics,
    PhaseConfig,
    PhaseResult,
    fit_phase,
    replay_phase,
)
from vitrine.train_refit import (  # noqa: F401 - known here as before
    REFIT_MAX_LOSS_RISE,
    REFIT_MAX_MORE_WRONG,
    REFIT_MIN_MORE_WRONG,
    refit_check_metrics,
    refit_worse,
)
from vitrine.trained_net import TrainedNet


def class_weights(labels: Sequence[int], n_classes: int, power: float = 1.0) -> torch.Tensor:
    """Loss weights ∝ count^-power (1: inverse frequency, a balanced loss; 0.5: dampened;
    0: none), scaled to mean 1 over the samples; 0 for absent classes."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=n_classes).astype(float)
    raw = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    weights = raw * len(labels) / max(float((raw * counts).sum()), 1e-12)
    return torch.as_tensor(weights, dtype=torch.float32)


@dataclass
class Fit:
    """Both phases' results, metrics after each, and the final clean-view outputs."""

    phase1: PhaseResult
    phase2: PhaseResult
    after1: dict
    after2: dict
    outputs: dict
    seconds: dict
    refit: dict | None = None
    """With ``train_refit``: photos and epochs of the final training on train + validation,
    and the metrics after it (validation no longer held out); whether it was ``kept`` (else
    ``why_not_kept``: the validated network was, :func:`refit_worse`), the ``check`` it and
    the validated network had on train + validation, and its epochs' training losses."""


def fit_cached(net: TrainedNet, caches: dict[str, FeatureCache], n_classes: int,
               settings: Settings, checkpoint_dir: Path | None, *,
               show_progress: bool = True, zeros: Zeros = torch.zeros,
               test_rows: torch.Tensor | None = None) -> Fit:
    """Phase 1 (head on the frozen network) then phase 2 (top blocks + head) on cached
    frozen-layer outputs; ``caches`` has 'train' and 'val', and may have 'test'. The
    per-photo tensors it makes (the head's inputs, each split's outputs) come from
    ``zeros`` (vitrine.train_data.MapStorage.zeros: in memory or in files). The test
    figures after each phase are of ``test_rows`` of the test split (None: all), each
    duplicate group once, as the report's test accuracy counts them (helper-237)."""
    from vitrine.report import split_metrics

    def metrics(k: str, logits: torch.Tensor) -> dict:
        rows = test_rows if k == "test" and test_rows is not None else slice(None)
        return split_metrics(logits[rows], caches[k].labels[rows])

    torch.manual_seed(settings.train_seed)
    head_start = {k: v.clone() for k, v in net.head.state_dict().items()}
    criterion = _criterion(caches["train"].labels, n_classes, settings)
    gen = torch.Generator().manual_seed(settings.train_seed)
    steps = _steps(len(caches["train"]), settings.train_batch_size)
    ckpt = checkpoint_dir or None
    seconds = {}

    t0 = time.perf_counter()
    pooled = {k: head_views(net, c, zeros=zeros) for k, c in caches.items()}
    seconds["head_inputs"] = round(time.perf_counter() - t0, 1)  # (apart: "phase1" counted
    t0 = time.perf_counter()  # them, where the phase's own line said its epochs' 7 s)
    phase1 = _transfer_learning(net, pooled, caches, criterion, gen, steps, ckpt, settings,
                                show_progress)
    seconds["phase1"] = round(time.perf_counter() - t0, 1)
    net.head.eval()
    with torch.inference_mode():
        after1 = {k: metrics(k, net.head(pooled[k][:, 0])) for k in caches}

    t0 = time.perf_counter()
    head_after1 = {k: v.clone() for k, v in net.head.state_dict().items()}
    forward = _through_head(net)
    phase2 = _fine_tuning(net, forward, caches, criterion, gen, steps, ckpt, settings,
                          show_progress)
    _drop_worse_fine_tuning(net, phase1, phase2, head_after1, ckpt)
    seconds["phase2"] = round(time.perf_counter() - t0, 1)
    fit = Fit(phase1, phase2, after1, {}, _frozen_outputs(net, caches, zeros), seconds)
    fit.after2 = {k: metrics(k, o["logits"]) for k, o in fit.outputs.items()}
    if settings.train_refit:
        _refit_kept_or_not(net, caches, pooled, forward, fit, head_start, n_classes, settings,
                           show_progress, zeros, metrics)
    return fit


def _transfer_learning(net: TrainedNet, pooled: dict[str, torch.Tensor],
                       caches: dict[str, FeatureCache], criterion: nn.Module,
                       gen: torch.Generator, steps: int, ckpt: Path | None, settings: Settings,
                       show_progress: bool) -> PhaseResult:
    """Phase 1: train the head alone on the frozen network's ``pooled`` head inputs."""
    net.head.requires_grad_(True)
    return fit_phase(
        _phase_config("transfer learning", settings, 1), net.head, list(net.head.parameters()),
        _epoch_fn(net.head, net.head, (pooled["train"],), caches["train"].labels, criterion,
                  gen, settings.train_batch_size),
        lambda: _metrics(net.head, (pooled["val"][:, 0],), caches["val"].labels),
        steps_per_epoch=steps, checkpoint=ckpt and ckpt / "phase1-best.pt",
        show_progress=show_progress)


def _through_head(net: TrainedNet) -> Callable:
    """The trainable part's forward pass: cached maps (and side features) to the logits."""

    def forward(maps: torch.Tensor, side: torch.Tensor | None = None) -> torch.Tensor:
        return net.head(net.head_input(maps, side))

    return forward


def _fine_tuning(net: TrainedNet, forward: Callable, caches: dict[str, FeatureCache],
                 criterion: nn.Module, gen: torch.Generator, steps: int, ckpt: Path | None,
                 settings: Settings, show_progress: bool) -> PhaseResult:
    """Phase 2: train the top blocks with the head on the cached maps."""
    trainable = nn.ModuleDict({"top": net.top, "head": net.head})
    net.top.requires_grad_(True)
    return fit_phase(
        _phase_config("fine-tuning", settings, 2), trainable, list(trainable.parameters()),
        _epoch_fn(forward, trainable, caches["train"].inputs(), caches["train"].labels,
                  criterion, gen, settings.train_batch_size,
                  freeze_bn=settings.train_freeze_bn),
        lambda: _metrics(forward, tuple(t[:, 0] for t in caches["val"].inputs()),
                         caches["val"].labels, modules=trainable),
        steps_per_epoch=steps, checkpoint=ckpt and ckpt / "phase2-best.pt",
        show_progress=show_progress)


def _drop_worse_fine_tuning(net: TrainedNet, phase1: PhaseResult, phase2: PhaseResult,
                            head_after1: dict, ckpt: Path | None) -> None:
    """Restore the weights after phase 1 when fine-tuning never did better on validation,
    marking none of its epochs best and removing its checkpoint."""
    if phase2.history and phase2.best_val_loss() >= phase1.best_val_loss() - train_loop.MIN_DELTA:
        # fine-tuning never did better on validation than transfer learning (too high a
        # learning rate, hard data): its early stopping starts afresh, so its least bad
        # epoch replaced the better weights without a word; they stay, and the refit
        # replays no fine-tuning
        net.top.load_state_dict(net.ref_top.state_dict())
        net.head.load_state_dict(head_after1)
        phase2.best_epoch = 0
        for epoch in phase2.history:  # (none is the checkpoint kept: the history's marks)
            epoch["best"] = False
        if ckpt:  # (its file went with the model: the weights dropped)
            (ckpt / "phase2-best.pt").unlink(missing_ok=True)


def _refit_kept_or_not(net: TrainedNet, caches: dict[str, FeatureCache],
                       pooled: dict[str, torch.Tensor], forward: Callable, fit: Fit,
                       head_start: dict, n_classes: int, settings: Settings,
                       show_progress: bool, zeros: Zeros,
                       metrics: Callable[[str, torch.Tensor], dict]) -> None:
    """Refit on train + validation (:func:`refit`) and keep it unless it came out worse than
    the validated network (:func:`refit_worse`); ``fit`` gets the outputs of the network
    kept, the refit's figures and its time."""
    t0 = time.perf_counter()
    # the validated network, kept to be saved in the refit's place should the refit come
    # out worse (it replaced it blindly: a collapsed refit was saved, exit 0: helper-231)
    validated = {name: {k: v.clone() for k, v in part.state_dict().items()}
                 for name, part in (("top", net.top), ("head", net.head))}
    before = refit_check_metrics(fit.outputs, caches)
    record: list[dict] = []
    epochs = refit(net, caches, pooled, forward, fit, head_start, n_classes, settings,
                   show_progress, record)
    fit.outputs = {}  # the outputs before the refit are let go first
    fit.outputs = _frozen_outputs(net, caches, zeros)
    after = refit_check_metrics(fit.outputs, caches)
    refit_metrics = {k: metrics(k, o["logits"]) for k, o in fit.outputs.items()}
    why = refit_worse(before, after, record)
    if why:
        net.top.load_state_dict(validated["top"])
        net.head.load_state_dict(validated["head"])
        fit.outputs = {}
        fit.outputs = _frozen_outputs(net, caches, zeros)
    fit.seconds["refit"] = round(time.perf_counter() - t0, 1)
    fit.refit = {"photos": len(caches["train"]) + len(caches["val"]), "epochs": epochs,
                 "seconds": fit.seconds["refit"], "metrics": finite(refit_metrics),
                 "kept": not why, "why_not_kept": why,
                 "check": {"validated": before, "refit": after},
                 "history": finite(record)}


def _frozen_outputs(net: TrainedNet, caches: dict[str, FeatureCache], zeros: Zeros) -> dict:
    """Freeze the trained parts (eval mode, no gradients) and return every split's clean-view
    outputs."""
    net.eval()
    net.top.requires_grad_(False)
    net.head.requires_grad_(False)
    with torch.inference_mode():
        return {k: clean_outputs(net, c, zeros=zeros) for k, c in caches.items()}


def refit(net: TrainedNet, caches: dict[str, FeatureCache], pooled: dict[str, torch.Tensor],
          forward: Callable, fit: Fit, head_start: dict, n_classes: int, settings: Settings,
          show_progress: bool, record: list[dict] | None = None) -> list[int]:
    """Train the head (from ``head_start``) and the top (from the pretrained weights) again
    on the training and validation photos together, replaying both phases up to their best
    epochs with the learning rates they had (the schedule validation chose). Validation
    photos contribute their clean view only. Returns the epochs run per phase; ``record``
    gets each epoch's training loss (:func:`vitrine.train_loop.replay_phase`)."""
    net.head.load_state_dict(head_start)
    net.top.load_state_dict(net.ref_top.state_dict())
    train, val = caches["train"], caches["val"]
    labels = torch.cat([train.labels, val.labels])
    criterion = _criterion(labels, n_classes, settings)
    gen = torch.Generator().manual_seed(settings.train_seed)
    torch.manual_seed(settings.train_seed)
    steps = _steps(len(labels), settings.train_batch_size)
    net.head.requires_grad_(True)
    epochs = [replay_phase(
        _phase_config("refit: transfer learning", settings, 1),
        fit.phase1.history[:fit.phase1.best_epoch], list(net.head.parameters()),
        _epoch_fn(net.head, net.head, (Joined(pooled["train"], pooled["val"]),), labels,
                  criterion, gen, settings.train_batch_size),
        steps_per_epoch=steps, show_progress=show_progress, record=record)]
    trainable = nn.ModuleDict({"top": net.top, "head": net.head})
    net.top.requires_grad_(True)
    inputs = tuple(Joined(a, b) for a, b in zip(train.inputs(), val.inputs(), strict=True))
    epochs.append(replay_phase(
        _phase_config("refit: fine-tuning", settings, 2),
        fit.phase2.history[:max(fit.phase2.best_epoch, 0)], list(trainable.parameters()),
        _epoch_fn(forward, trainable, inputs, labels, criterion, gen,
                  settings.train_batch_size, freeze_bn=settings.train_freeze_bn),
        steps_per_epoch=steps, show_progress=show_progress, record=record))
    return epochs


class Joined:
    """The photos of ``first`` (n, views, …) then those of ``second`` (m, 1, …), indexed like
    one (n + m, views, …) tensor in which each photo of ``second`` has its one view everywhere,
    without copying either (the refit reads the cached training and validation views)."""

    def __init__(self, first: torch.Tensor, second: torch.Tensor):
        self.first, self.second = first, second
        self.shape = (len(first) + len(second), *first.shape[1:])

    def __getitem__(self, key: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        rows, views = key
        out = self.first.new_empty((len(rows), *self.first.shape[2:]))
        here = rows < len(self.first)
        out[here] = self.first[rows[here], views[here]]
        out[~here] = self.second[rows[~here] - len(self.first), 0]
        return out


def _criterion(labels: torch.Tensor, n_classes: int, settings: Settings) -> nn.Module:
    """Cross-entropy with the class weights and label smoothing of the settings."""
    return nn.CrossEntropyLoss(
        weight=class_weights(labels.tolist(), n_classes, settings.train_class_weight_power),
        label_smoothing=settings.train_label_smoothing)


@torch.no_grad()
def pool_views(net: TrainedNet, maps: torch.Tensor, batch: int = 256,
               zeros: Zeros = torch.zeros) -> torch.Tensor:
    """Pooled output of the frozen (reference) top for every cached view: (n, views, dim)."""
    return _per_view(lambda m, _: net.pooled(m, reference=True), net, maps, None, batch, zeros)


@torch.no_grad()
def head_views(net: TrainedNet, cache: FeatureCache, batch: int = 256,
               zeros: Zeros = torch.zeros) -> torch.Tensor:
    """The head's input from the frozen (reference) network for every cached view (phase 1
    trains on these): (n, views, head_dim)."""
    return _per_view(lambda m, s: net.head_input(m, s, reference=True), net, cache.maps,
                     cache.side, batch, zeros)


def _per_view(fn: Callable, net: TrainedNet, maps: torch.Tensor, side: torch.Tensor | None,
              batch: int, zeros: Zeros) -> torch.Tensor:
    """``fn`` of every view, a batch at a time, written into one tensor from ``zeros``."""
    n, v = maps.shape[:2]
    flat = maps.reshape(n * v, *maps.shape[2:])
    flat_side = None if side is None else side.reshape(n * v, *side.shape[2:])
    net.ref_top.eval()
    out = None
    for i in range(0, len(flat), batch):
        part = fn(flat[i:i + batch], None if flat_side is None else flat_side[i:i + batch])
        if out is None:
            out = zeros((len(flat), part.shape[1]))
        out[i:i + len(part)] = part
    return torch.zeros(0, v, 1) if out is None else out.reshape(n, v, -1)


@torch.no_grad()
def clean_outputs(net: TrainedNet, cache: FeatureCache, batch: int = 128,
                  zeros: Zeros = torch.zeros) -> dict:
    """imagenet / pooled / hidden / logits / probs of each photo's clean view, each written
    into one tensor from ``zeros``."""
    maps = cache.maps[:, 0]
    side = None if cache.side is None else cache.side[:, 0]
    names = {"imagenet", "pooled", "hidden", "logits", "probs"}
    outputs: dict[str, torch.Tensor] = {}
    for i in range(0, len(maps), batch):
        out = net.outputs(maps[i:i + batch], None if side is None else side[i:i + batch],
                          names)
        for k, v in out.items():
            if k not in outputs:
                outputs[k] = zeros((len(maps), *v.shape[1:]))
            outputs[k][i:i + len(v)] = v
    return outputs


def _steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))


def _epoch_fn(forward: Callable, module: nn.Module, inputs: tuple[torch.Tensor, ...],
              labels: torch.Tensor, criterion: nn.Module, gen: torch.Generator, batch: int, *,
              freeze_bn: bool = False):
    """One epoch over shuffled photos, each with a randomly drawn cached view (the same view
    of every tensor in ``inputs`` — (photos, views, …) tensors or :class:`Joined` — passed to
    ``forward`` in that order); with ``freeze_bn`` the batch-norm layers keep their running
    statistics (eval mode)."""

    def run(optimizer: torch.optim.Optimizer, advance) -> Metrics:
        module.train()
        if freeze_bn:
            for m in module.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        n, n_views = inputs[0].shape[:2]
        order = torch.randperm(n, generator=gen)
        views = torch.randint(0, n_views, (n,), generator=gen)
        total_loss, correct = 0.0, 0
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            x = [t[idx, views[idx]] for t in inputs]
            y = labels[idx]
            optimizer.zero_grad(set_to_none=True)
            logits = forward(*x)
            loss = criterion(logits, y)
            loss.backward()
            optimizer.step()
            hits = int((logits.argmax(1) == y).sum())
            value = loss.item()
            total_loss += value * len(idx)
            correct += hits
            advance(1, loss=value, acc=hits / len(idx))
        return Metrics(total_loss / n, correct / n)

    return run


@torch.no_grad()
def _metrics(forward: Callable, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, *,
             modules: nn.Module | None = None, batch: int = 128) -> Metrics:
    """Plain cross-entropy and accuracy in eval mode."""
    module = modules if modules is not None else forward
    module.eval()
    logits = torch.cat([forward(*(t[i:i + batch] for t in inputs))
                        for i in range(0, len(labels), batch)])
    loss = nn.functional.cross_entropy(logits, labels)
    return Metrics(float(loss), float((logits.argmax(1) == labels).float().mean()))


def _phase_config(name: str, settings: Settings, phase: int) -> PhaseConfig:
    return PhaseConfig(name, getattr(settings, f"train_phase{phase}_epochs"),
                       getattr(settings, f"train_phase{phase}_lr"), settings.train_patience,
                       settings.train_lr_patience, settings.train_lr_factor,
                       settings.train_min_lr, settings.train_weight_decay)
