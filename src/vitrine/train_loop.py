"""One training phase: epochs with live progress, early stopping, reduce-LR-on-plateau and
the best checkpoint (kept in memory, written to disk, restored at the end)."""

from __future__ import annotations

import contextlib
import copy
import errno
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from vitrine.progress import bar_console

Advance = Callable[..., None]


def save_state(state: dict, path: Path) -> None:
    """``torch.save``; a disk that fills up meanwhile, which torch reports as a RuntimeError
    of its own, is raised as ``OSError(ENOSPC)`` (one sentence for the user)."""
    try:
        torch.save(state, path)
    except RuntimeError as exc:
        free = 2**20
        with contextlib.suppress(OSError):
            free = shutil.disk_usage(path.parent).free
        if free < 2**20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


@dataclass
class PhaseConfig:
    """Hyper-parameters of one phase; all come from :class:`vitrine.config.Settings`."""

    name: str
    epochs: int
    lr: float
    patience: int = 5
    lr_patience: int = 2
    lr_factor: float = 0.3
    min_lr: float = 1e-6
    weight_decay: float = 0.0


@dataclass
class Metrics:
    loss: float
    acc: float


MIN_DELTA = 1e-4
"""The least drop of the validation loss that counts as an improvement."""


class EarlyStopping:
    """Stops after ``patience`` epochs without the monitored value dropping by ``min_delta``."""

    def __init__(self, patience: int, min_delta: float | None = None):
        self.patience = patience
        self.min_delta = MIN_DELTA if min_delta is None else min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is the best so far."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """After ``patience`` epochs without improvement (patience 0: the first such epoch,
        never right after an improving one)."""
        return self.bad_epochs > 0 and self.bad_epochs >= self.patience


class BestCheckpoint:
    """Keeps a copy of a module's best state in memory (and in ``path``) and restores it."""

    def __init__(self, module: nn.Module, path: Path | None = None):
        self.module = module
        self.path = path
        self.state: dict | None = None

    def save(self) -> None:
        self.state = copy.deepcopy(self.module.state_dict())
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_state(self.state, self.path)

    def restore(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


@dataclass
class PhaseResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    """The epoch whose weights the phase ends with; -1 when it ran none, 0 when none was
    kept (fine-tuning that never beat transfer learning on validation)."""
    stopped_early: bool = False
    seconds: float = 0.0

    def best_val_loss(self) -> float:
        """The validation loss of the weights the phase ended with (inf: none)."""
        return next((e["val_loss"] for e in self.history if e["epoch"] == self.best_epoch),
                    math.inf)


TrainEpoch = Callable[[torch.optim.Optimizer, Advance], Metrics]
Validate = Callable[[], Metrics]


def fit_phase(cfg: PhaseConfig, module: nn.Module, params: list[nn.Parameter],
              train_epoch: TrainEpoch, validate: Validate, *, steps_per_epoch: int,
              checkpoint: Path | None = None, show_progress: bool = True) -> PhaseResult:
    """Train ``params`` with Adam for up to ``cfg.epochs`` epochs, monitoring validation loss.

    ``train_epoch(optimizer, advance)`` runs one epoch (calling ``advance(loss=…, acc=…)``
    after each batch) and returns its training metrics; ``validate()`` returns validation
    metrics. At the end ``module`` holds the weights of the epoch with the lowest validation
    loss.
    """
    started = time.perf_counter()
    optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience,
        min_lr=cfg.min_lr)
    stopper = EarlyStopping(cfg.patience)
    best = BestCheckpoint(module, checkpoint)
    result = PhaseResult()
    with _epoch_bar(cfg.name, cfg.epochs * steps_per_epoch, show_progress) as bar:
        for epoch in range(1, cfg.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            bar.describe(f"{cfg.name} {epoch}/{cfg.epochs}")
            epoch_start = time.perf_counter()
            train = train_epoch(optimizer, bar.advance)
            val = validate()
            improved = stopper.step(val.loss, epoch)
            if improved:
                best.save()
            scheduler.step(val.loss)
            result.history.append({
                "phase": cfg.name, "epoch": epoch, "lr": lr, "loss": train.loss,
                "acc": train.acc, "val_loss": val.loss, "val_acc": val.acc,
                "best": improved, "seconds": round(time.perf_counter() - epoch_start, 2)})
            bar.show(f"val loss {val.loss:.3f} acc {val.acc:.3f} · lr {lr:.1e}")
            if stopper.should_stop:
                # (its patience out on the last epoch allowed: it ran them all, not early)
                result.stopped_early = epoch < cfg.epochs
                bar.finish()
                break
    best.restore()
    result.best_epoch = stopper.best_epoch
    result.seconds = time.perf_counter() - started
    return result


class _Bar:
    def __init__(self, progress: Progress | None, total: int):
        self.progress = progress
        self.task = progress.add_task("", total=total, stats="", val="") if progress else None
        self._loss = self._acc = 0.0
        self._n = 0

    def describe(self, text: str) -> None:
        if self.progress:
            self.progress.update(self.task, description=text)
        self._loss = self._acc = 0.0
        self._n = 0

    def advance(self, steps: int = 1, *, loss: float = 0.0, acc: float = 0.0) -> None:
        """One batch done: update the running training loss and accuracy."""
        self._n += 1
        self._loss += (loss - self._loss) / self._n
        self._acc += (acc - self._acc) / self._n
        if self.progress:
            self.progress.update(self.task, advance=steps,
                                 stats=f"loss {self._loss:.3f} acc {self._acc:.3f}")

    def show(self, text: str) -> None:
        if self.progress:
            self.progress.update(self.task, val=text)

    def finish(self) -> None:
        if self.progress:
            task = self.progress.tasks[self.task]
            self.progress.update(self.task, total=task.completed)


@contextlib.contextmanager
def _epoch_bar(name: str, total: int, enabled: bool) -> Iterator[_Bar]:
    if not enabled or not total:  # (a phase of 0 epochs: no empty bar)
        yield _Bar(None, total)
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[stats]}"), TextColumn("[cyan]{task.fields[val]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=bar_console()) as progress:
        yield _Bar(progress, total)


def replay_phase(cfg: PhaseConfig, history: list[dict], params: list[nn.Parameter],
                 train_epoch: TrainEpoch, *, steps_per_epoch: int,
                 show_progress: bool = True, record: list[dict] | None = None) -> int:
    """Train ``params`` again for the epochs of ``history`` (a phase's, cut at its best
    epoch), each with the learning rate that epoch had: the schedule validation chose, without
    validation. Returns the number of epochs run; each epoch's training loss and accuracy are
    appended to ``record`` (the refit's were dropped, so a loss that stopped being a number
    there went unseen: helper-231)."""
    if not history:
        return 0
    optimizer = torch.optim.Adam(params, lr=history[0]["lr"], weight_decay=cfg.weight_decay)
    with _epoch_bar(cfg.name, len(history) * steps_per_epoch, show_progress) as bar:
        for i, past in enumerate(history, start=1):
            for group in optimizer.param_groups:
                group["lr"] = past["lr"]
            bar.describe(f"{cfg.name} {i}/{len(history)}")
            epoch_start = time.perf_counter()
            train = train_epoch(optimizer, bar.advance)
            if record is not None:
                record.append({"phase": cfg.name, "epoch": i, "lr": past["lr"],
                               "loss": train.loss, "acc": train.acc,
                               "seconds": round(time.perf_counter() - epoch_start, 2)})
    return len(history)
