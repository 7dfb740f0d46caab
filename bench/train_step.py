"""What one CPU training step costs, op by op, and what PyTorch's alternatives to each op would save.

Issue 15 part 3's measurement, before any op is replaced: for the ops the default NASNet network (N=1,
F=8 on digits' 8x8) and the CIFAR proxy (N=2, F=32 on 32x32) run, at the resolutions and widths they
run them, forward + backward at the given batch on one thread:
  - NCHW against channels-last;
  - a k x k depthwise convolution over an H x W input with padding k//2 only ever reaches its central
    (2H-1) x (2W-1) taps, so the kernel cropped to those computes the same function;
  - a stride-1 pointwise (1x1) convolution as one matrix product over the channels-last pixels.
Each alternative is checked against the reference op (forward and both gradients, float tolerance)
before it is timed. Then one whole training step of the default network, as Dvolver trains it today.

    python bench/train_step.py [--batch 128] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from machine import header

Op = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def depthwise(k: int) -> Op:
    return lambda x, w: F.conv2d(x, w, padding=k // 2, groups=x.shape[1])


def depthwise_cropped(k: int) -> Op:
    def op(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        h, wd = x.shape[2:]
        kh, kw = min(k, 2 * h - 1), min(k, 2 * wd - 1)
        top, left = (k - kh) // 2, (k - kw) // 2
        return F.conv2d(x, w[:, :, top : top + kh, left : left + kw], padding=(kh // 2, kw // 2), groups=x.shape[1])
    return op


def pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w)


def pointwise_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    n, c, h, wd = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # free for a channels-last x
    out = pixels @ w.view(w.shape[0], c).t()
    return out.view(n, h, wd, -1).permute(0, 3, 1, 2)  # a channels-last view, as the conv returns


def time_op(op: Op, x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:
    """Median ms of forward + backward."""
    times = []
    for i in range(repeats + 3):
        xi, wi = x.detach().requires_grad_(), w.detach().requires_grad_()
        start = time.perf_counter()
        op(xi, wi).sum().backward()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def same_function(ref: Op, alt: Op, x: torch.Tensor, w: torch.Tensor) -> bool:
    outs = []
    for op in (ref, alt):
        xi, wi = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        y = op(xi, wi)
        (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum().backward()
        outs.append((y.detach(), xi.grad, wi.grad))
    # Relative to each tensor's largest entry: a weight gradient sums batch x pixels terms, in another order.
    return all(float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7 for a, b in zip(*outs))


Case = tuple[str, int, int, int | None, Op, Op | None, str]


def cases() -> list[Case]:
    """(label, channels, resolution, depthwise kernel or None for pointwise, reference op, alternative, its name)."""
    rows: list[Case] = []
    for name, widths in (("default F=8 on 8x8", ((8, 8), (16, 4), (32, 2))),
                         ("CIFAR proxy F=32 on 32x32", ((32, 32), (64, 16), (128, 8)))):
        for c, h in widths:
            for k in (3, 5, 7):
                rows.append((f"{name}: depthwise {k}x{k}, {c} ch at {h}x{h}", c, h, k, depthwise(k),
                             depthwise_cropped(k) if k > 2 * h - 1 else None, "cropped kernel"))
            rows.append((f"{name}: pointwise 1x1, {c} ch at {h}x{h}", c, h, None, pointwise, pointwise_matmul,
                         "matmul"))
    return rows


def default_network_step(batch: int, repeats: int) -> dict[str, float]:
    """Median seconds of one SGD step of the default search's network (genome drawn with seed 0), as
    `dvolver.training` lays it out on the CPU (channels-last, unsafe 1x1 convs guarded) and in NCHW."""
    import numpy as np

    from dvolver.data import load
    from dvolver.spec import SearchSpec
    from dvolver.training import place

    spec = SearchSpec()
    data = load(spec.dataset)
    genome = spec.search_space().sample(np.random.default_rng(0))
    out = {}
    for layout, channels_last in (("channels-last", True), ("NCHW", False)):
        torch.manual_seed(0)
        model = place(spec.search_space().build(genome, data.input_shape, data.num_classes), torch.device("cpu"),
                      channels_last)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x = data.x_train[:batch]
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        y = data.y_train[:batch]
        times = []
        for i in range(repeats + 3):
            start = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= 3:
                times.append(time.perf_counter() - start)
        out[layout] = statistics.median(times)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(header() + f"  torch {torch.__version__}, 1 thread, batch {args.batch}")
    print("| op | NCHW ms | channels-last ms | alternative | its ms (channels-last) | same function |")
    print("|---|---|---|---|---|---|")
    for label, c, h, k, ref, alt, alt_name in cases():
        w = torch.randn(c, c, 1, 1) * 0.1 if k is None else torch.randn(c, 1, k, k) * 0.1
        x = torch.randn(args.batch, c, h, h)
        xl = x.contiguous(memory_format=torch.channels_last)
        wl = w.contiguous(memory_format=torch.channels_last)
        nchw, cl = time_op(ref, x, w, args.repeats), time_op(ref, xl, wl, args.repeats)
        if alt is None:
            print(f"| {label} | {nchw:.3f} | {cl:.3f} | - | - | - |")
            continue
        ok = same_function(ref, alt, xl, wl)
        print(f"| {label} | {nchw:.3f} | {cl:.3f} | {alt_name} | {time_op(alt, xl, wl, args.repeats):.3f} | "
              f"{'yes' if ok else 'NO'} |")
    step = default_network_step(args.batch, args.repeats)
    print(f"default network, one SGD step at batch {args.batch}: "
          + ", ".join(f"{layout} {s:.3f} s" for layout, s in step.items()))


if __name__ == "__main__":
    main()
