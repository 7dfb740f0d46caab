"""Joint search-and-training filter pruning (METHODS.md section 4; Lu et al., IJCAI 2020).

Structured and from scratch. Every group of tied output channels (a plain conv, or the convs a residual
addition joins, as listed by ``shrink.coupled_convs``) carries one learnable vector ``alpha`` with one
entry per channel, drawn from U(0, 1) with the config's seed. Each search iteration

1. *flexible thresholding*: :class:`ThresholdPolicy` maps each group's alpha to a categorical over the
   keep ratios (0.60 ... 0.85 by default) and samples one ratio per group;
2. *perturbation*: ``alpha~ = alpha + gumbel_scale * G`` with G standard Gumbel (:func:`gumbel_perturb`);
3. *sampling*: ``p = softmax(alpha~)`` per group and :func:`sample_keep` keeps the smallest set of
   filters whose probability mass reaches the group's ratio;
4. *train the sub-network*: ``shrink`` builds the physically narrower network (copying the target
   network's weights), it is trained for the current stage's epochs (coarse-to-fine: ``epochs`` and
   ``lrs`` are stages, the iterations are split evenly across them; device, augmentation, memory layout and
   gradient clipping as the config says), and its weights and BatchNorm statistics are written back into the
   full target network (:func:`writeback_indices`, :func:`write_back`); the policy then takes one REINFORCE step;
5. *alpha step*: one pass over the held-out data trains alpha alone on ``CE - mean_l Var(alpha_l)``,
   the full network's channels being multiplied by alpha (after the BatchNorm that follows the conv,
   where there is one: a scale before a BatchNorm would be normalised away and get no gradient).

Choices where METHODS.md leaves a detail open (the authors' TPAMI code, GitHub Lxtccc/Adaptive-, is cited
where it was read):

- Policy input. The official actor feeds the raw alpha vector to a linear layer per width (16/32/64).
  Here one small MLP (11 -> 32 -> tanh -> len(ratios)) is shared by all groups and reads a fixed-size
  summary, so it works for any width: alpha's mean, std, min, max, its 10/25/50/75/90% quantiles, the
  group's relative depth and log2(width)/8. The last layer starts at zero, so the first choices are uniform.
- Reward. ``-(mean training loss of the sub-network over this iteration's steps) - size_penalty *
  (sub-network MACs / full MACs)`` (MACs by ``dvolver.costs.count``). The official code averages the
  training loss too, and subtracts the mean over a batch of episodes; here the baseline is an
  exponential moving average (``baseline_momentum``) initialised to the first reward, so the first
  iteration's advantage is zero. The policy loss is ``-(reward - baseline) * sum_l log pi(ratio_l)``.
- Gumbel noise is ``-log(-log U)`` times the scale, as in the official sampler.
- ``sample_keep`` counts the mass in float64 and accepts it within 1e-6 of the ratio (so a boundary that
  decimals hit exactly, e.g. 0.7 + 0.1 for 0.8, is reached); ties in p keep the lower channel index.
- The alpha step runs the full network in train mode (batch statistics, as the official ``valid``) but with
  every BatchNorm's momentum set to 0 for the step, so the held-out data never enters running statistics.
- Result. After each iteration the sampled sub-network is scored on the held-out data; the best (later
  wins ties: it has had more training) is kept as it was then, fine-tuned for ``finetune_epochs`` on the
  training data, and returned with its keep sets and ratios.

Limitation: the members of a coupled group must number their channels alike (true of the ResNets, VGGs
and ConvNets of ``search_spaces.backbones``); a network that concatenates channels would need a mapping.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dvolver import costs
from dvolver.pruning.shrink import coupled_convs, shrink
from dvolver.training import accuracy, check_finite, optimizer_step, place, training_batch

__all__ = ["JointConfig", "JointResult", "ThresholdPolicy", "alpha_features", "gumbel_perturb", "reinforce_step",
           "sample_keep", "search_and_train", "write_back", "writeback_indices"]

DEFAULT_RATIOS = (0.60, 0.65, 0.70, 0.75, 0.80, 0.85)
_MASS_TOLERANCE = 1e-6


@dataclass
class JointConfig:
    ratios: Sequence[float] = DEFAULT_RATIOS  # keep ratios the policy chooses from, each in (0, 1]
    gumbel_scale: float = 0.05
    iterations: int = 30
    epochs: Sequence[int] = (40, 30, 10)  # coarse-to-fine stages: epochs per iteration
    lrs: Sequence[float] = (0.05, 0.01, 0.005)  # sub-network SGD learning rate per stage
    momentum: float = 0.9
    weight_decay: float = 3e-4
    batch_size: int = 128
    alpha_lr: float = 1e-3
    policy_lr: float = 0.01
    baseline_momentum: float = 0.9
    size_penalty: float = 1.0  # weight of the kept-MACs fraction in the reward
    finetune_epochs: int = 10
    finetune_lr: float = 0.01
    seed: int = 0
    # How the sub-networks train and fine-tune, as dvolver.training.fit would; the target network and alpha stay
    # on the CPU with the data given.
    device: torch.device | str = "cpu"
    augment: bool = False  # random crop + flip of each training batch (dvolver.training.crop_flip)
    channels_last: bool = False
    grad_clip: float | None = None  # max global gradient norm per step; None: no clipping
    amp: torch.dtype | None = None  # autocast dtype of the sub-networks' forward passes; None: float32

    def __post_init__(self) -> None:
        self.ratios = tuple(float(r) for r in self.ratios)
        if not self.ratios:
            raise ValueError("ratios must name at least one keep ratio")
        for r in self.ratios:
            _check_ratio(r)
        self.epochs, self.lrs = tuple(int(e) for e in self.epochs), tuple(float(lr) for lr in self.lrs)
        if not self.epochs or any(e < 1 for e in self.epochs):
            raise ValueError(f"epochs must be a non-empty list of positive stage lengths, got {self.epochs}")
        if len(self.lrs) != len(self.epochs) or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must give one positive learning rate per epochs stage, got {self.lrs}")
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.gumbel_scale < 0 or self.finetune_epochs < 0 or self.batch_size < 1:
            raise ValueError("gumbel_scale and finetune_epochs must be non-negative and batch_size positive")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        self.device = torch.device(self.device)


@dataclass
class JointResult:
    model: nn.Module  # the best sub-network, physically narrowed and fine-tuned
    keep: dict[str, list[int]]  # group root conv (first of coupled_convs' tuple) -> kept output channels
    ratios: dict[str, float]  # group root conv -> the keep ratio the policy sampled for it
    history: list[dict[str, object]] = field(default_factory=list)


def _check_ratio(ratio: float) -> None:
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise ValueError(f"keep ratio must lie in (0, 1], got {ratio}")


def sample_keep(p: Tensor, ratio: float) -> Tensor:
    """The smallest set of channels whose probabilities ``p`` sum to at least ``ratio``, as sorted indices.

    Channels are taken by descending ``p`` (ties: lower index first) until the cumulative mass is within
    1e-6 of ``ratio``; at least one channel is kept, and all of them if the mass never gets there.
    """
    _check_ratio(ratio)
    p = p.detach().reshape(-1).to(torch.float64).cpu()
    if p.numel() == 0:
        raise ValueError("sample_keep needs at least one channel")
    order = torch.sort(p, descending=True, stable=True).indices
    mass = torch.cumsum(p[order], 0)
    reached = torch.nonzero(mass >= ratio - _MASS_TOLERANCE)
    count = int(reached[0, 0]) + 1 if reached.numel() else p.numel()
    return order[:count].sort().values


def gumbel_perturb(alpha: Tensor, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """``alpha + scale * G``, G standard Gumbel (``-log(-log U)``), drawn from ``generator``."""
    u = torch.rand(alpha.shape, generator=generator, dtype=torch.float64)
    u = u.clamp(1e-12, 1 - 1e-12)
    return alpha.detach() + scale * (-torch.log(-torch.log(u))).to(alpha.dtype)


def alpha_features(alpha: Tensor, position: float) -> Tensor:
    """The policy's fixed-size view of one group's alpha (see the module docstring)."""
    a = alpha.detach().reshape(-1).float()
    q = torch.quantile(a, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9]))
    std = a.std() if a.numel() > 1 else a.new_zeros(())
    return torch.cat([torch.stack([a.mean(), std, a.min(), a.max()]), q,
                      torch.tensor([position, math.log2(a.numel()) / 8.0])])


class ThresholdPolicy(nn.Module):
    """Per-group categorical over keep ratios from a summary of the group's alpha (REINFORCE-trained)."""

    n_features = 11

    def __init__(self, n_ratios: int, hidden: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(self.n_features, hidden), nn.Tanh(), nn.Linear(hidden, n_ratios))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def forward(self, alphas: Sequence[Tensor]) -> Tensor:
        """Logits, one row per group."""
        n = len(alphas)
        feats = torch.stack([alpha_features(a, i / max(n - 1, 1)) for i, a in enumerate(alphas)])
        return self.net(feats)

    def sample(self, alphas: Sequence[Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """One ratio index per group and the summed log-probability of the choice (with gradient)."""
        log_probs = F.log_softmax(self(alphas), dim=-1)
        actions = torch.multinomial(log_probs.detach().exp(), 1, generator=generator).squeeze(1)
        return actions, log_probs.gather(1, actions[:, None]).sum()


def reinforce_step(optimizer: torch.optim.Optimizer, log_prob: Tensor, advantage: float) -> float:
    """One policy-gradient step on ``-advantage * log_prob``; returns that loss."""
    optimizer.zero_grad()
    loss = -float(advantage) * log_prob
    loss.backward()
    optimizer.step()
    return loss.item()


def writeback_indices(model: nn.Module, keep: Mapping[str, Sequence[int] | Tensor], example_input: Tensor
                      ) -> dict[str, Tensor]:
    """For each floating-point entry of ``shrink(model, keep, ...).state_dict()``: the flat positions in
    the full model's entry its values come from.

    Read from ``shrink`` itself: a float64 copy whose every tensor holds its own flat positions is shrunk,
    and what survives in each slot is where it came from. So the map is exactly shrink's selection, for
    any layer shrink narrows (conv in/out channels, BatchNorm, a Linear after a flatten, coupled groups).
    """
    tagged = copy.deepcopy(model).double()
    with torch.no_grad():
        for t in tagged.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.arange(t.numel(), dtype=torch.float64).reshape(t.shape))
    sub = shrink(tagged, keep, example_input.double())
    return {name: t.detach().reshape(-1).round().long() for name, t in sub.state_dict().items()
            if t.is_floating_point()}


@torch.no_grad()
def write_back(full: nn.Module, sub: nn.Module, indices: Mapping[str, Tensor]) -> None:
    """Copy ``sub``'s (trained) weights and statistics into their places in ``full``; others stay as they are.

    Only floating-point entries move (weights, biases, BatchNorm running mean/var); integer counters such
    as ``num_batches_tracked`` are not per channel and stay the full network's. ``sub`` may be on another
    device or in another memory format than ``full``."""
    full_state = full.state_dict()
    for name, t in sub.state_dict().items():
        if name in indices:
            dst = full_state[name]
            dst.view(-1)[indices[name].to(dst.device)] = t.reshape(-1).to(dst)


# ---------------------------------------------------------------------------------------------- internals


def _batches(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    order = torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]


def _train(model: nn.Module, x: Tensor, y: Tensor, epochs: int, lr: float, cfg: JointConfig,
           generator: torch.Generator) -> float:
    """SGD at the constant ``lr`` for ``epochs`` on ``cfg.device``, moving ``model`` there, in ``cfg.amp``
    precision, with fit's optimiser step and divergence check; the mean training loss over all steps."""
    place(model, cfg.device, cfg.channels_last)
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(torch.device(cfg.device).type, enabled=cfg.amp is torch.float16)
    model.train()
    total, steps = 0.0, 0
    for epoch in range(epochs):
        for xb, yb in _batches(x, y, cfg.batch_size, generator):
            xb = training_batch(xb, generator, cfg.augment, cfg.device, cfg.channels_last)
            with torch.autocast(torch.device(cfg.device).type, dtype=cfg.amp, enabled=cfg.amp is not None):
                loss = F.cross_entropy(model(xb), yb.to(cfg.device))
            optimizer_step(loss, opt, scaler, params, cfg.grad_clip)
            total += loss.item()
            steps += 1
        check_finite(total / max(steps, 1), epoch)
    return total / max(steps, 1)


def _scaled_modules(model: nn.Module, groups: Sequence[tuple[str, ...]], example_input: Tensor
                    ) -> dict[str, list[nn.Module]]:
    """Per group root: the modules whose outputs alpha scales (each member conv's BatchNorm, or the conv)."""
    convs = {name for g in groups for name in g}
    modules = dict(model.named_modules())
    produced: dict[int, str] = {}
    bn_of: dict[str, nn.Module] = {}
    keep_alive: list[Tensor] = []

    def record_conv(name: str):
        def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor) -> None:
            produced[id(out)] = name
            keep_alive.append(out)
        return hook

    def record_bn(bn: nn.Module):
        def hook(_m: nn.Module, inp: tuple[Tensor, ...], _out: Tensor) -> None:
            name = produced.get(id(inp[0]))
            if name is not None:
                bn_of.setdefault(name, bn)
        return hook

    handles = [modules[n].register_forward_hook(record_conv(n)) for n in convs]
    handles += [m.register_forward_hook(record_bn(m)) for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    return {g[0]: [bn_of.get(n, modules[n]) for n in g] for g in groups}


@contextmanager
def _alpha_scaling(targets: Mapping[str, list[nn.Module]], alphas: Mapping[str, Tensor]) -> Iterator[None]:
    """Multiply each target module's output per channel by its group's alpha; BN running stats frozen."""
    handles = []
    for root, mods in targets.items():
        for m in mods:
            def hook(_m: nn.Module, _inp: tuple[Tensor, ...], out: Tensor, a: Tensor = alphas[root]) -> Tensor:
                return out * a.view(1, -1, *([1] * (out.dim() - 2)))
            handles.append(m.register_forward_hook(hook))
    bns = {m: m.momentum for mods in targets.values() for m in mods if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    try:
        for m in bns:
            m.momentum = 0.0
        yield
    finally:
        for h in handles:
            h.remove()
        for m, mom in bns.items():
            m.momentum = mom


def _alpha_step(model: nn.Module, targets: Mapping[str, list[nn.Module]], alphas: Mapping[str, Tensor],
                opt: torch.optim.Optimizer, x: Tensor, y: Tensor, cfg: JointConfig, generator: torch.Generator
                ) -> float:
    """One pass over the held-out data on ``CE - mean_l Var(alpha_l)``, updating alpha only."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    was = model.training
    model.train()
    total, steps = 0.0, 0
    try:
        with _alpha_scaling(targets, alphas):
            for xb, yb in _batches(x, y, cfg.batch_size, generator):
                opt.zero_grad()
                var = torch.stack([a.var() if a.numel() > 1 else a.sum() * 0 for a in alphas.values()]).mean()
                loss = F.cross_entropy(model(xb), yb) - var
                loss.backward()
                opt.step()
                total, steps = total + loss.item(), steps + 1
    finally:
        model.train(was)
        for p in frozen:
            p.requires_grad_(True)
    return total / max(steps, 1)


def search_and_train(model: nn.Module, train_xy: tuple[Tensor, Tensor], val_xy: tuple[Tensor, Tensor],
                     example_input: Tensor, cfg: JointConfig | None = None) -> JointResult:
    """Joint search-and-training pruning of ``model`` (trained in place as the target network).

    ``train_xy`` trains the sub-networks (and the final fine-tune); ``val_xy`` is the held-out data of the
    alpha step and of the choice of the best sub-network. ``example_input`` is one batch (batch 1 is
    enough) that the model accepts. ``model``, the data and ``example_input`` are on the CPU; the sub-networks,
    and so the returned one, are on ``cfg.device``. Raises ``ValueError`` for a model without Conv2d layers,
    before any training.
    """
    cfg = cfg or JointConfig()
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} has no Conv2d layer; joint search-and-training prunes conv filters")
    x_train, y_train = train_xy
    x_val, y_val = val_xy
    example_input = example_input[:1]
    input_shape = tuple(example_input.shape[1:])
    modules = dict(model.named_modules())
    groups = coupled_convs(model, example_input)
    for g in groups:
        widths = {modules[n].out_channels for n in g}
        if len(widths) != 1:
            raise ValueError(f"coupled convs {g} have different widths {sorted(widths)}; joint pruning needs "
                             "tied channels numbered alike")
    roots = [g[0] for g in groups]

    gen = torch.Generator().manual_seed(cfg.seed)
    alphas = {r: torch.rand(modules[r].out_channels, generator=gen).requires_grad_(True) for r in roots}
    alpha_opt = torch.optim.SGD(list(alphas.values()), lr=cfg.alpha_lr, momentum=cfg.momentum)
    targets = _scaled_modules(model, groups, example_input)
    with torch.random.fork_rng(devices=[]):  # seeded without touching the caller's global generator
        torch.manual_seed(cfg.seed)
        policy = ThresholdPolicy(len(cfg.ratios))
    policy_opt = torch.optim.Adam(policy.parameters(), lr=cfg.policy_lr)
    full_macs = costs.count(model, input_shape).macs

    baseline: float | None = None
    best: tuple[float, nn.Module, dict[str, list[int]], dict[str, float]] | None = None
    history: list[dict[str, object]] = []
    for it in range(cfg.iterations):
        stage = min(it * len(cfg.epochs) // cfg.iterations, len(cfg.epochs) - 1)
        epochs, lr = cfg.epochs[stage], cfg.lrs[stage]
        # 1. flexible thresholding
        actions, log_prob = policy.sample([alphas[r] for r in roots], generator=gen)
        ratios = {r: cfg.ratios[int(a)] for r, a in zip(roots, actions)}
        # 2-3. perturb and sample
        keep = {r: sample_keep(F.softmax(gumbel_perturb(alphas[r], cfg.gumbel_scale, gen), 0), ratios[r]).tolist()
                for r in roots}
        # 4. build, train, write back
        sub = shrink(model, keep, example_input)
        indices = writeback_indices(model, keep, example_input)
        train_loss = _train(sub, x_train, y_train, epochs, lr, cfg, gen)
        write_back(model, sub, indices)
        val_acc = accuracy(sub, x_val, y_val, cfg.device, cfg.channels_last, cfg.batch_size) / 100
        macs_fraction = costs.count(sub, input_shape).macs / full_macs
        reward = -train_loss - cfg.size_penalty * macs_fraction
        baseline = reward if baseline is None else baseline
        policy_loss = reinforce_step(policy_opt, log_prob, reward - baseline)
        baseline = cfg.baseline_momentum * baseline + (1 - cfg.baseline_momentum) * reward
        # 5. alpha step
        alpha_loss = _alpha_step(model, targets, alphas, alpha_opt, x_val, y_val, cfg, gen)
        if best is None or val_acc >= best[0]:
            best = (val_acc, copy.deepcopy(sub), keep, ratios)
        history.append({"iteration": it, "epochs": epochs, "lr": lr, "ratios": ratios,
                        "widths": {r: len(k) for r, k in keep.items()}, "train_loss": train_loss,
                        "val_acc": val_acc, "macs_fraction": macs_fraction, "reward": reward,
                        "baseline": baseline, "policy_loss": policy_loss, "alpha_loss": alpha_loss})

    assert best is not None
    _, final, keep, ratios = best
    if cfg.finetune_epochs:
        _train(final, x_train, y_train, cfg.finetune_epochs, cfg.finetune_lr, cfg, gen)
    final.eval()
    return JointResult(model=final, keep=keep, ratios=ratios, history=history)
