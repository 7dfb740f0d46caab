"""The proxy training that scores a candidate: SGD with momentum, one-cycle or cosine schedule.

Deterministic under a seed: the batch order and the augmentation draw from one seeded generator,
and the caller seeds the weight initialisation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .cpu_forms import use_cpu_forms
from .data import Dataset
from .kernel_guards import run_unsafe_convs_in_nchw
from .training_spec import TrainingSpec


class TrainingDiverged(RuntimeError):
    """The loss stopped being a number; the candidate is recorded as failed."""


@dataclass(frozen=True)
class Fitted:
    """What one `fit` ran: the mean loss of its last epoch, and how long it trained."""

    train_loss: float
    epochs: int  # epochs run: fewer than asked when patience stopped it
    steps: int
    best_epoch: int | None = None  # keep_best: the epoch (1-based) whose state was kept
    stopped_early: bool = False  # patience ran out before the last epoch
    state: dict[str, Any] | None = None  # stopped at `until`: what resumes the run (fit's resume)


@dataclass(frozen=True)
class TrainResult:
    val_acc: float
    test_acc: float
    train_loss: float
    epochs: int
    train_seconds: float
    state: dict[str, Any] | None = None  # trained to a rung below the last: what continues the run


def use_channels_last(cfg: TrainingSpec, device: torch.device) -> bool:
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cpu")


def use_augmentation(cfg: TrainingSpec, input_shape: tuple[int, int, int]) -> bool:
    return cfg.augment == "crop_flip" or (cfg.augment == "auto" and min(input_shape[1:]) >= 32)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and a horizontal flip half of the time, per image.

    The draws come from the CPU ``generator`` wherever ``x`` lives, so a batch already on the GPU is
    cropped exactly as it would be on the CPU; only the gather runs on ``x``'s device."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)[None, :]
    cols = torch.where(flip[:, None], ox[:, None] + torch.arange(w - 1, -1, -1)[None, :],
                       ox[:, None] + torch.arange(w)[None, :])
    index = [t.to(x.device) for t in (torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None],
                                      rows[:, None, :, None], cols[:, None, None, :])]
    return padded[index[0], index[1], index[2], index[3]]


def autocast_dtype(cfg: TrainingSpec, device: torch.device) -> torch.dtype | None:
    """The precision training runs its forward pass in, None for full float32."""
    if cfg.amp == "off" or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def place(model: nn.Module, device: torch.device, channels_last: bool, cpu_forms: bool = True) -> nn.Module:
    """Moves ``model`` to ``device``, in channels-last layout if asked; returns it.

    On the CPU, small convolutions take their cheaper exact forms (cpu_forms) unless ``cpu_forms`` is
    False, and the convolutions a oneDNN bug makes unsafe in channels-last stay NCHW (kernel_guards)."""
    model.to(device)
    if device.type == "cpu" and cpu_forms:
        use_cpu_forms(model, channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if device.type == "cpu":
            run_unsafe_convs_in_nchw(model)
    return model


def training_batch(x: torch.Tensor, generator: torch.Generator, augment: bool, device: torch.device,
                   channels_last: bool) -> torch.Tensor:
    """Training images as the model takes them: augmented on the CPU from ``generator`` if asked, then moved."""
    if augment:
        x = crop_flip(x, generator)
    return _to(x, device, channels_last)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
             channels_last: bool, batch_size: int = 1024) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            xb = _to(x[start : start + batch_size], device, channels_last)
            correct += int((model(xb).argmax(1).cpu() == y[start : start + batch_size]).sum())
    return 100.0 * correct / max(1, len(x))


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, device: torch.device, channels_last: bool,
                          batch_size: int, max_images: int = 2048) -> None:
    """Re-estimates BatchNorm statistics with the final weights.

    After a proxy training of a few dozen steps the running averages still mix in statistics of
    much earlier weights, and eval-mode accuracy can fall 30 points below what the network does
    (measured on digits). An exact average over some training images fixes that for a few forward
    passes, as NAS supernets do.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for start in range(0, min(len(x), max_images), batch_size):
            model(_to(x[start : start + batch_size], device, channels_last))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def train(model: nn.Module, data: Dataset, cfg: TrainingSpec, seed: int, device: torch.device,
          rung: Rung | None = None) -> TrainResult:
    """Trains every parameter of ``model`` at the spec's learning rate, then measures it. With a
    ``rung``, only up to its epochs (from its ``resume`` state); the result's ``state`` continues the
    run (None at the last rung)."""
    start = time.perf_counter()
    if rung is None:
        fitted = fit(model, data, cfg, seed, device)
    else:
        fitted = fit(model, data, cfg, seed, device, epochs=rung.max_epochs, until=rung.epochs, resume=rung.resume)
    return replace(measure(model, data, cfg, device, fitted.train_loss, fitted.epochs, start), state=fitted.state)


@dataclass(frozen=True)
class Rung:
    """One rung of a candidate's training: up to `epochs` of a run scheduled over `max_epochs`, continuing
    from `resume` (the state the rung before returned; None at the first)."""

    epochs: int
    max_epochs: int
    resume: dict[str, Any] | None = None


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int
                   ) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step learning-rate schedule over ``total_steps``, scaling each group's own peak lr."""
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    warmup = 0.25
    # OneCycleLR ends its warm-up at step warmup * total_steps - 1: at step 0 (4 steps here) it divides by zero,
    # before it there is no warm-up at all and a single step runs at lr ~0. Cosine works for any length.
    if schedule == "one_cycle" and warmup * total_steps > 1:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total_steps, pct_start=warmup,
            cycle_momentum=False)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   params: list[nn.Parameter], grad_clip: float | None) -> None:
    """One SGD step from ``loss``: its gradient scaled for float16 (a no-op otherwise), clipped to
    ``grad_clip`` in global norm."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip is not None:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(params, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def check_finite(mean_loss: float, epoch: int, lr_field: str = "training.lr") -> None:
    """Checked once an epoch: a check per step would make the CPU wait for the GPU at every step. `lr_field`
    names the learning rate to lower where the caller's settings hold it."""
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(f"loss became {mean_loss} in epoch {epoch + 1}; lower {lr_field}")


# Up to this many bytes of training images are copied to the GPU once, instead of batch by batch.
_DEVICE_RESIDENT_BYTES = 2 * 2**30


def fit(model: nn.Module, data: Dataset, cfg: TrainingSpec, seed: int, device: torch.device, *,
        param_groups: list[dict[str, Any]] | None = None, penalty: Callable[[], torch.Tensor] | None = None,
        epochs: int | None = None, lr_scale: float = 1.0, keep_best: bool = False,
        until: int | None = None, resume: dict[str, Any] | None = None) -> Fitted:
    """The training loop every method shares.

    ``param_groups``: SGD groups, each with its own peak ``lr`` (default: every parameter at
    ``cfg.lr``); the schedule scales them all alike. ``penalty``: a term added to the loss at every
    step (the pruning budget). ``keep_best``: measure validation accuracy after each epoch and
    restore the best state at the end (early stopping, as the mask-learning methods use); with
    ``cfg.patience``, training also stops once that many epochs have passed without a new best.

    ``until``: stop after that many of the ``epochs`` (a rung of early stopping), the schedule still
    spanning all ``epochs``; the returned ``state`` continues the run where it stopped when passed back
    as ``resume``, so that rungs trained one after the other are one continuous run, bit for bit.
    """
    channels_last = use_channels_last(cfg, device)
    place(model, device, channels_last)
    epochs = cfg.epochs if epochs is None else epochs
    x_train, y_train = training_split(data, cfg)
    if device.type == "cuda" and x_train.element_size() * x_train.nelement() <= _DEVICE_RESIDENT_BYTES:
        # One copy instead of one per step; the batches and their augmentation are the same either way.
        x_train, y_train = x_train.to(device), y_train.to(device)
    augment = use_augmentation(cfg, data.input_shape)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total_steps = epochs * steps_per_epoch
    groups = param_groups or [{"params": [p for p in model.parameters() if p.requires_grad]}]
    for group in groups:
        group["lr"] = group.get("lr", cfg.lr) * lr_scale
        group.setdefault("momentum", cfg.momentum)
        group.setdefault("weight_decay", cfg.weight_decay)
        group.setdefault("nesterov", group["momentum"] > 0)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.SGD(groups)
    scheduler = make_scheduler(optimizer, cfg.schedule, total_steps)
    amp = autocast_dtype(cfg, device)
    # float16 needs its loss scaled so small gradients survive; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    loss_sum, seen, ran, stopped_early = 0.0, 0, 0, False
    if resume is not None:
        ran = resume_run(resume, model, optimizer, scheduler, scaler, generator)
    for epoch in range(ran, epochs if until is None else until):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(x_train.device)
        epoch_loss, seen = torch.zeros((), dtype=torch.float64, device=device), 0
        for step in range(steps_per_epoch):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb = training_batch(x_train[idx], generator, augment, device, channels_last)
            yb = y_train[idx].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(xb), yb)
            if penalty is not None:
                loss = loss + penalty()
            optimizer_step(loss, optimizer, scaler, params, cfg.grad_clip)
            scheduler.step()
            epoch_loss += loss.detach().double() * len(idx)
            seen += len(idx)
        loss_sum = epoch_loss.item()
        check_finite(loss_sum / max(1, seen), epoch)
        ran = epoch + 1
        if keep_best:
            acc = accuracy(model, data.x_val, data.y_val, device, channels_last)
            if best is None or acc > best[0]:
                best = acc, ran, {k: v.detach().clone() for k, v in model.state_dict().items()}
            if cfg.patience is not None and ran - best[1] >= cfg.patience and ran < epochs:
                stopped_early = True
                break
    if best is not None:
        model.load_state_dict(best[2])
    # Taken before the BatchNorm recalibration below, which the continuous run never does mid-way.
    continues = ran < epochs and not stopped_early
    state = run_state(ran, model, optimizer, scheduler, scaler, generator) if continues else None
    recalibrate_batchnorm(model, x_train, device, channels_last, cfg.batch_size)
    return Fitted(loss_sum / max(1, seen), ran, ran * steps_per_epoch, best[1] if best else None, stopped_early,
                  state)


def run_state(epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
              scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
              generator: torch.Generator) -> dict[str, Any]:
    """Everything the rest of the run depends on: weights and buffers, the optimizer's momenta, the
    schedule's position and both random streams."""
    return {"epoch": epoch, "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state()}


def resume_run(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, scaler: torch.amp.GradScaler,
               generator: torch.Generator) -> int:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        scaler.load_state_dict(state["scaler"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["epoch"])


def training_split(data: Dataset, cfg: TrainingSpec) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.train_limit is None:
        return data.x_train, data.y_train
    return data.x_train[: cfg.train_limit], data.y_train[: cfg.train_limit]


def measure(model: nn.Module, data: Dataset, cfg: TrainingSpec, device: torch.device, train_loss: float,
            epochs: int, start: float) -> TrainResult:
    """Validation and test accuracy of a trained model, with the time since ``start``."""
    channels_last = use_channels_last(cfg, device)
    return TrainResult(
        val_acc=accuracy(model, data.x_val, data.y_val, device, channels_last),
        test_acc=accuracy(model, data.x_test, data.y_test, device, channels_last),
        train_loss=train_loss,
        epochs=epochs,
        train_seconds=time.perf_counter() - start,
    )


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
