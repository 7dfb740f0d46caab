"""What one CPU training step costs, op by op, and what Dvolver's exact CPU forms save.

Issue 15 part 3: for the ops the default NASNet network (N=1, F=8 on digits' 8x8) and the CIFAR proxy
(N=2, F=32 on 32x32) run, at the resolutions, widths and strides they run them, forward + backward at
the given batch on one thread:
  - NCHW against channels-last;
  - the cheaper exact form `dvolver.cpu_forms` swaps in, where there is one, and which of its ways it
    takes there: a pointwise (1x1) convolution as one matrix product over the channels-last pixels; a
    k x k kernel cropped to the taps its input can reach; a small depthwise one as each channel's
    (output pixels x input pixels) matrix, broadcast or batched; the weight gradient on a canvas.
Each form is checked against the plain convolution (forward and both gradients, float tolerance)
before it is timed. Then whole SGD steps of the default network for several genomes, as training
laid them out before the forms (plain PyTorch modules, channels-last, unsafe 1x1 convs guarded) and
with them, in the same run: the ratio is the speed-up. Each one's first-step gradients are compared
with the same network's float64 NCHW gradients, and the ReLU inputs that float32 put on the other
side of zero from float64 are counted: one such input sends its whole gradient the other way, and
it, not a wrong kernel, is what makes the worst gradient error large.

    python bench/train_step.py [--batch 128] [--repeats 20] [--genomes 5]

`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2` runs the same on an AVX-512 CPU as oneDNN and
ATen run on an AVX2-only one (an AMD EPYC before Zen 4): the same kernels, not the same timings.
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
import time

import torch
import torch.nn.functional as F
from machine import header
from torch import nn

from dvolver.cpu_forms import CroppedSamePadding, restore_plain, use_cpu_forms


def time_op(conv: nn.Conv2d, x: torch.Tensor, repeats: int) -> float:
    """Median ms of forward + backward."""
    times = []
    for i in range(repeats + 3):
        xi = x.detach().requires_grad_()
        start = time.perf_counter()
        conv(xi).sum().backward()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def same_function(ref: nn.Conv2d, alt: nn.Conv2d, x: torch.Tensor) -> bool:
    outs = []
    for conv in (ref, alt):
        conv.zero_grad()
        xi = x.detach().clone().requires_grad_()
        y = conv(xi)
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        outs.append((y.detach(), xi.grad, conv.weight.grad))
    # Relative to each tensor's largest entry: a weight gradient sums batch x pixels terms, in another order.
    return all(float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7 for a, b in zip(*outs))


Case = tuple[str, int, int, int, int]


def cases() -> list[Case]:
    """(label, channels, resolution, kernel: 1 for pointwise, else depthwise k x k, stride)."""
    rows: list[Case] = []
    for name, widths in (("default F=8 on 8x8", ((8, 8), (16, 4), (32, 2))),
                         ("CIFAR proxy F=32 on 32x32", ((32, 32), (64, 16), (128, 8)))):
        for i, (c, h) in enumerate(widths):
            strides = (1, 2) if i + 1 < len(widths) else (1,)  # a reduction cell's first convolutions
            for stride in strides:
                for k in (3, 5, 7):
                    at = f" at stride {stride}" if stride > 1 else ""
                    rows.append((f"{name}: depthwise {k}x{k}, {c} ch at {h}x{h}{at}", c, h, k, stride))
            rows.append((f"{name}: pointwise 1x1, {c} ch at {h}x{h}", c, h, 1, 1))
    return rows


def _form_name(form: nn.Conv2d, x: torch.Tensor) -> str:
    if isinstance(form, CroppedSamePadding):
        how, weight, _ = form.path(x.detach().requires_grad_())
        kernel = "x".join(map(str, weight.shape[2:]))
        return {"broadcast": f"{kernel} as matrices, broadcast", "batched": f"{kernel} as matrices, batched",
                "canvas": f"{kernel}, canvas", "conv": f"{kernel} kernel"}[how]
    return "matrix product" if form.takes_product(x) else "1x1 kernel (too many pixels for the product)"


def op_row(label: str, c: int, h: int, k: int, stride: int, batch: int, repeats: int) -> str:
    conv = nn.Conv2d(c, c, k, stride=stride, padding=k // 2, groups=1 if k == 1 else c, bias=False)
    x = torch.randn(batch, c, h, h)
    nchw = time_op(conv, x, repeats)
    conv.to(memory_format=torch.channels_last)
    xl = x.contiguous(memory_format=torch.channels_last)
    cl = time_op(conv, xl, repeats)
    form = copy.deepcopy(conv)
    if not use_cpu_forms(form, channels_last=True):
        return f"| {label} | {nchw:.3f} | {cl:.3f} | - | - | - |"
    ok = same_function(conv, form, xl)
    return (f"| {label} | {nchw:.3f} | {cl:.3f} | {_form_name(form, xl)} | {time_op(form, xl, repeats):.3f} | "
            f"{'yes' if ok else 'NO'} |")


class _ReluSigns:
    """Which inputs of each ReLU of ``model`` are positive, in its forward passes while open."""

    def __init__(self, model: nn.Module):
        self.positive: dict[str, torch.Tensor] = {}
        self._hooks = [m.register_forward_pre_hook(functools.partial(self._keep, name))
                       for name, m in model.named_modules() if isinstance(m, nn.ReLU)]

    def _keep(self, name: str, module: nn.Module, args: tuple) -> None:
        self.positive[name] = args[0].detach() > 0

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()

    def across_zero_from(self, other: _ReluSigns) -> int:
        return sum(int((p != other.positive[name]).sum()) for name, p in self.positive.items())


def _float64_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], _ReluSigns]:
    """Gradients of ``model``'s plain float64 NCHW copy, the reference both forms answer to, and the
    signs of its ReLU inputs."""
    reference = copy.deepcopy(model).double().to(memory_format=torch.contiguous_format)
    restore_plain(reference)
    signs = _ReluSigns(reference)
    F.cross_entropy(reference(x.double().contiguous()), y).backward()
    signs.close()
    return [p.grad for p in reference.parameters()], signs


def _worst_error(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    """The largest gradient error, relative to each tensor's largest reference entry."""
    return max(float((g.double() - r).abs().max()) / (float(r.abs().max()) + 1e-12) for g, r in zip(grads, reference))


def default_network_steps(batch: int, repeats: int, genome_seed: int) -> dict[str, float]:
    """Median seconds of one SGD step of the default search's network (genome drawn with
    `genome_seed`), channels-last on the CPU, with plain modules and with the CPU forms, interleaved
    step by step so that both see the same machine; and how far each one's first-step gradients lie
    from the same network's float64 NCHW gradients."""
    import numpy as np

    from dvolver.data import load
    from dvolver.spec import SearchSpec
    from dvolver.training import place

    spec = SearchSpec()
    data = load(spec.dataset)
    genome = spec.search_space().sample(np.random.default_rng(genome_seed))
    x = data.x_train[:batch].contiguous(memory_format=torch.channels_last)
    y = data.y_train[:batch]
    runs = {}
    for name, forms in (("plain", False), ("forms", True)):
        torch.manual_seed(0)
        model = place(spec.search_space().build(genome, data.input_shape, data.num_classes), torch.device("cpu"),
                      True, cpu_forms=forms)
        runs[name] = (model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), [])
    reference, reference_signs = _float64_gradients(runs["plain"][0], x, y)  # same initial weights for both
    errors, across = {}, {}
    for i in range(repeats + 3):
        for name, (model, optimizer, times) in runs.items():
            signs = _ReluSigns(model) if i == 0 else None
            start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if signs is not None:  # the first step, a warm-up: not timed
                signs.close()
                errors[name] = _worst_error([p.grad for p in model.parameters()], reference)
                across[name] = signs.across_zero_from(reference_signs)
            optimizer.step()
            if i >= 3:
                times.append(time.perf_counter() - start)
    return {"plain": statistics.median(runs["plain"][2]), "forms": statistics.median(runs["forms"][2]),
            "plain_error": errors["plain"], "forms_error": errors["forms"],
            "plain_across": across["plain"], "forms_across": across["forms"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--genomes", type=int, default=5, help="default-network genomes timed (seeds 0, 1, ...)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(header() + f"  torch {torch.__version__}, 1 thread, batch {args.batch}")
    print("| op | NCHW ms | channels-last ms | CPU form | its ms (channels-last) | same function |")
    print("|---|---|---|---|---|---|")
    for label, c, h, k, stride in cases():
        print(op_row(label, c, h, k, stride, args.batch, args.repeats))
    print(f"\ndefault network, one SGD step at batch {args.batch}, channels-last:")
    print("| genome seed | plain modules s | CPU forms s | speed-up | gradient error vs float64: plain | CPU forms "
          "| ReLU inputs across zero from float64: plain | CPU forms |")
    print("|---|---|---|---|---|---|---|---|")
    ratios, worst = [], 0.0
    for seed in range(args.genomes):
        r = default_network_steps(args.batch, args.repeats, seed)
        ratios.append(r["plain"] / r["forms"])
        worst = max(worst, r["forms_error"])
        print(f"| {seed} | {r['plain']:.4f} | {r['forms']:.4f} | {ratios[-1]:.2f}x | {r['plain_error']:.1e} | "
              f"{r['forms_error']:.1e} | {r['plain_across']} | {r['forms_across']} |", flush=True)
    print(f"speedup_geomean {statistics.geometric_mean(ratios):.2f}")
    print(f"forms_worst_gradient_error {worst:.1e}")


if __name__ == "__main__":
    main()
