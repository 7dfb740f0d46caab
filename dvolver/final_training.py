"""Final training: one found architecture retrained at its final scale with a FinalTraining recipe (issue 19).

The loop is the search's (dvolver.training: SGD steps, schedules, crop and flip, BatchNorm recalibration, the
split rules) with the final models' regularisers added: drop-path rising over the epochs, NASNet's auxiliary
head, label smoothing, cutout and an average of the weights. It can stop after any epoch and return a
checkpoint, as bytes, that continues the run: on the CPU, a run stopped and resumed, in another process or
not, ends with the weights of a straight run, bit for bit. Every random draw comes from the recipe's seed:
the weight init and drop-path from torch's global generators, the batch order and augmentation from one
torch.Generator, and the checkpoint holds all of them.

Validation accuracy, what the search optimised, is measured after every epoch; test accuracy once, at the end.
"""

from __future__ import annotations

import copy
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn
from torch.nn import functional as F

import search_spaces

from . import data
from .errors import SpecError
from .final_spec import FinalTraining
from .training import (
    accuracy,
    autocast_dtype,
    check_finite,
    crop_flip,
    make_scheduler,
    optimizer_step,
    place,
    recalibrate_batchnorm,
    resume_run,
    run_state,
    training_batch,
)
from .training_spec import joined_errors

# The state_dict prefix of NASNet's auxiliary head: it trains the network and is no part of the one deployed.
AUX_PREFIX = "aux_head."
# Images this size and larger are augmented when the recipe leaves it open, as the search's augment auto.
AUGMENT_MIN_SIDE = 32
AUTO_CUTOUT = 16  # DARTS's CIFAR-10 cutout
# Recipe fields a resumed run may differ in: where the data and the run live, not what the run computes.
_RESUMABLE_ANYWHERE = ("dataset", "device")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float  # mean loss minimised over the epoch, auxiliary term included
    val_acc: float  # of the weights measured (averaged when ema_decay is on), in %
    lr: float  # at the epoch's last step
    drop_path: float  # the rate the epoch trained at
    seconds: float


@dataclass(frozen=True)
class FinalResult:
    """What `train_final` ran. Stopped at `until_epoch`: `checkpoint` continues it, and there is no test
    accuracy and no weights yet. Finished: `weights`, the measured network's state_dict as torch.save bytes,
    loads into ``space.build(genome, ...)`` at `space_options` (no auxiliary head)."""

    epochs: int  # epochs trained, of the recipe's
    finished: bool
    history: tuple[EpochMetrics, ...]
    val_acc: float
    test_acc: float | None
    weights: bytes | None
    checkpoint: bytes | None
    space_options: dict[str, Any]
    input_shape: tuple[int, int, int]
    num_classes: int
    device: str
    precision: str
    train_seconds: float  # this call's


def train_final(genome: tuple[int, ...], space_name: str, final: FinalTraining, dataset: data.Dataset | None = None,
                *, space_options: dict[str, Any] | None = None, until_epoch: int | None = None,
                resume_state: bytes | None = None,
                on_epoch: Callable[[EpochMetrics, Callable[[], bytes]], None] | None = None) -> FinalResult:
    """Retrains ``genome`` of ``space_name`` with ``final``, built from ``space_options`` (the search's) at the
    recipe's scale. ``dataset``: the recipe's, when the caller has loaded it.

    ``until_epoch``: stop after that epoch, the schedule still spanning all of them. ``resume_state``: a
    checkpoint this function returned (or handed to ``on_epoch``), to continue from. ``on_epoch`` is called
    after every epoch with its metrics and a function that returns the checkpoint of the run at that point."""
    if until_epoch is not None and until_epoch < 1:
        raise ValueError(f"until_epoch must be at least 1, got {until_epoch}")
    start = time.perf_counter()
    final = final.for_space(space_name)
    options = final.space_options(space_name, space_options)
    space = final_space(space_name, options, genome)
    dataset = data.load(final.dataset) if dataset is None else dataset
    run = _Run(space, tuple(int(g) for g in genome), space_name, options, final, dataset)
    if resume_state is not None:
        run.resume(resume_state)
    stop = final.epochs if until_epoch is None else min(until_epoch, final.epochs)
    measured: nn.Module | None = None
    while len(run.history) < stop:
        measured = run.epoch()
        if on_epoch is not None:
            on_epoch(run.history[-1], run.checkpoint)
    finished = len(run.history) == final.epochs
    if finished and measured is None:
        measured = run.measured()  # resumed from the last epoch's checkpoint: nothing was left to train
    return FinalResult(
        epochs=len(run.history), finished=finished, history=tuple(run.history),
        val_acc=run.history[-1].val_acc,
        test_acc=run.accuracy(measured, dataset.x_test, dataset.y_test) if finished else None,
        weights=_deployed_weights(measured) if finished else None,
        checkpoint=None if finished else run.checkpoint(),
        space_options=options, input_shape=dataset.input_shape, num_classes=dataset.num_classes,
        device=str(run.device), precision=str(run.amp or torch.float32).removeprefix("torch."),
        train_seconds=time.perf_counter() - start)


def cutout(x: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Zeroes a ``length`` x ``length`` square at a random centre of each image, clipped at its borders
    (DeVries and Taylor, as DARTS: rows and columns centre +- length // 2). The data are normalised, so zero
    is the mean image. The draws come from the CPU ``generator`` wherever ``x`` lives, as crop_flip's."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1), generator=generator)
    cx = torch.randint(0, w, (b, 1), generator=generator)
    rows, cols = torch.arange(h)[None], torch.arange(w)[None]
    in_rows = (rows >= cy - length // 2) & (rows < cy + length // 2)
    in_cols = (cols >= cx - length // 2) & (cols < cx + length // 2)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.device, x.dtype)


class _Run:
    """One final training in progress: the network, its optimiser and schedule, the weights' average and
    the random streams, which together are everything the rest of the run depends on."""

    def __init__(self, space: search_spaces.SearchSpace, genome: tuple[int, ...], space_name: str,
                 options: dict[str, Any], final: FinalTraining, dataset: data.Dataset) -> None:
        self.final, self.dataset, self.genome = final, dataset, genome
        self.space_name, self.options = space_name, options
        self.device = _device(final)
        self.channels_last = self.device.type == "cpu"  # the search's channels_last auto
        self.amp = autocast_dtype(final, self.device)
        torch.manual_seed(final.seed)
        aux = {"aux_head": True} if final.aux_weight else {}
        self.model = place(space.build(genome, dataset.input_shape, dataset.num_classes, **aux), self.device,
                           self.channels_last)
        self.x_train, self.y_train = dataset.x_train, dataset.y_train
        if final.train_limit is not None:
            self.x_train, self.y_train = self.x_train[: final.train_limit], self.y_train[: final.train_limit]
        large = min(dataset.input_shape[1:]) >= AUGMENT_MIN_SIDE
        self.crop_flip = large if final.crop_flip is None else final.crop_flip
        self.cutout = (AUTO_CUTOUT if large else 0) if final.cutout is None else final.cutout
        self.generator = torch.Generator().manual_seed(final.seed)
        self.steps_per_epoch = math.ceil(len(self.x_train) / final.batch_size)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(self.params, lr=final.lr, momentum=final.momentum,
                                         weight_decay=final.weight_decay, nesterov=final.nesterov)
        self.scheduler = _scheduler(self.optimizer, final, self.steps_per_epoch)
        # float16 needs its loss scaled so small gradients survive; bfloat16 has float32's range.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp is torch.float16)
        self.ema = ({k: v.detach().clone() for k, v in self.model.state_dict().items()}
                    if final.ema_decay else None)
        self.history: list[EpochMetrics] = []

    def epoch(self) -> nn.Module:
        """Trains one epoch and measures it; returns the network measured (the averaged weights, when on)."""
        begin, final, epoch = time.perf_counter(), self.final, len(self.history)
        rate = final.drop_path * epoch / final.epochs  # DARTS's ramp: from 0 at the first epoch
        if final.drop_path:
            self.model.drop_path_rate = rate
        self.model.train()
        order = torch.randperm(len(self.x_train), generator=self.generator)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        for step in range(self.steps_per_epoch):
            idx = order[step * final.batch_size : (step + 1) * final.batch_size]
            loss = self._loss(self._batch(self.x_train[idx]), self.y_train[idx].to(self.device, non_blocking=True))
            optimizer_step(loss, self.optimizer, self.scaler, self.params, final.grad_clip)
            self.scheduler.step()
            if self.ema is not None:
                self._average(epoch * self.steps_per_epoch + step)
            loss_sum += loss.detach().double() * len(idx)
        train_loss = loss_sum.item() / len(self.x_train)
        check_finite(train_loss, epoch, "the final training's lr")
        measured = self.measured()
        self.history.append(EpochMetrics(
            epoch + 1, train_loss, self.accuracy(measured, self.dataset.x_val, self.dataset.y_val),
            self.optimizer.param_groups[0]["lr"], rate, time.perf_counter() - begin))
        return measured

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        # Crop and flip, then cutout (DARTS's order), drawn from the run's generator in that order.
        if self.crop_flip:
            x = crop_flip(x, self.generator)
        if self.cutout:
            x = cutout(x, self.cutout, self.generator)
        return training_batch(x, self.generator, False, self.device, self.channels_last)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        smoothing = self.final.label_smoothing
        with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
            out = self.model(x)
            logits, aux = out if isinstance(out, tuple) else (out, None)
            loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
            if aux is not None:
                loss = loss + self.final.aux_weight * F.cross_entropy(aux, y, label_smoothing=smoothing)
        return loss

    def _average(self, step: int) -> None:
        """One step of the weights' average; its decay starts low and rises to ema_decay (TensorFlow's
        num_updates rule), so a short run is not averaged with its random init."""
        assert self.ema is not None and self.final.ema_decay is not None
        decay = min(self.final.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, value in self.model.state_dict().items():
                if value.is_floating_point():
                    self.ema[name].lerp_(value, 1 - decay)
                else:
                    self.ema[name].copy_(value)  # BatchNorm's batch counts

    def measured(self) -> nn.Module:
        """A copy of the network as it is measured: the averaged weights when on, no drop-path, and its
        BatchNorm statistics re-estimated on training images, as the search measures its candidates. The
        training network itself is left as it is, so measuring changes nothing in the run."""
        net = copy.deepcopy(self.model)
        if self.ema is not None:
            net.load_state_dict(self.ema)
        if self.final.drop_path:
            net.drop_path_rate = 0.0
        recalibrate_batchnorm(net, self.x_train, self.device, self.channels_last, self.final.batch_size)
        return net

    def accuracy(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        return accuracy(net, x, y, self.device, self.channels_last)

    def checkpoint(self) -> bytes:
        state = run_state(len(self.history), self.model, self.optimizer, self.scheduler, self.scaler, self.generator)
        state |= {
            "ema": None if self.ema is None else {k: v.cpu().clone() for k, v in self.ema.items()},
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "history": [asdict(m) for m in self.history],
            "run": self._identity(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def resume(self, checkpoint: bytes) -> None:
        try:
            state = torch.load(io.BytesIO(checkpoint), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many types for bytes that are not a checkpoint
            raise SpecError(f"resume_state cannot be read as a final-training checkpoint: {exc}") from None
        if state.get("run") != self._identity():
            raise SpecError("resume_state is the checkpoint of another training (another genome, recipe, scale or "
                            "dataset): resume a training with the recipe it started with")
        resume_run(state, self.model, self.optimizer, self.scheduler, self.scaler, self.generator)
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.ema is not None:
            self.ema = {k: v.to(self.device) for k, v in state["ema"].items()}
        self.history = [EpochMetrics(**m) for m in state["history"]]

    def _identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed by this run."""
        recipe = {k: v for k, v in self.final.model_dump().items() if k not in _RESUMABLE_ANYWHERE}
        return {"genome": list(self.genome), "space": self.space_name, "space_options": self.options,
                "recipe": recipe, "dataset": self.dataset.fingerprint}


def _scheduler(optimizer: torch.optim.Optimizer, final: FinalTraining, steps_per_epoch: int
               ) -> torch.optim.lr_scheduler.LRScheduler:
    """The search's per-step schedule over all epochs, after a linear warm-up when the recipe has one."""
    total, warmup = final.epochs * steps_per_epoch, final.warmup_epochs * steps_per_epoch
    if not warmup:
        return make_scheduler(optimizer, final.schedule, total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if final.schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def final_space(name: str, options: dict[str, Any], genome: tuple[int, ...]) -> search_spaces.SearchSpace:
    """The space ``genome`` is built from at ``options`` (FinalTraining.space_options). Raises SpecError, naming
    the recipe's scale, for options the space refuses, and for a genome not of the space."""
    if name not in search_spaces.SPACES:
        raise SpecError(f"unknown space {name!r}; choose among {', '.join(search_spaces.SPACES)}")
    try:
        full = search_spaces.options_model(name)(**options).model_dump()
    except ValidationError as exc:
        raise SpecError(f"invalid final training: scale: the {name} space cannot be built so: "
                        f"{joined_errors(exc)}") from None
    space = search_spaces.make_space(name, full)
    try:
        space.codec().check(tuple(int(g) for g in genome))
    except ValueError as exc:
        raise SpecError(f"genome does not belong to the {name} space: {exc}") from None
    return space


def _device(final: FinalTraining) -> torch.device:
    if final.device == "cuda" and not torch.cuda.is_available():
        raise SpecError("invalid final training: device: cuda was asked for and no GPU is present; use auto or cpu")
    if final.device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    # Same recipe and seed, same weights: cuDNN must not pick kernels by timing.
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return torch.device("cuda")


def _deployed_weights(net: nn.Module) -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not k.startswith(AUX_PREFIX)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()
