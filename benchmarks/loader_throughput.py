"""Loader throughput vs training throughput, side by side in one process.

Measures samples/s of :class:`dynamics.data.TensorLoader` over MNIST-shaped data (60,000 x 1 x 28 x 28
float32 in memory; random pixels, since only shapes matter for speed) without augmentation, with crop + flip,
and with crop + flip + small affine, against samples/s of one SGD training step (forward, cross-entropy,
backward, update) of ``resnet_small`` at batch 64. The loader must be at least 10x faster than the training
step so that it is never the bottleneck. Times only what it claims: the loader rows time batch production
(including the augmentation), the training row times steps on a fixed batch.

    OMP_NUM_THREADS=1 python benchmarks/loader_throughput.py [--device cpu|cuda] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

import dynamics.models as dm
from dynamics.data import Augment, TensorLoader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader_rate(x, y, batch_size, transform, device, min_time=1.0) -> float:
    loader = TensorLoader(x, y, batch_size=batch_size, seed=0, transform=transform)
    n, start = 0, time.perf_counter()
    while True:
        for xb, _ in loader:
            n += len(xb)
            if time.perf_counter() - start > min_time:
                _sync(device)
                return n / (time.perf_counter() - start)


def train_rate(batch_size, device, steps=30) -> float:
    torch.manual_seed(0)
    model = dm.create("resnet_small", 1, 10).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xb = torch.rand(batch_size, 1, 28, 28, device=device)
    yb = torch.randint(0, 10, (batch_size,), device=device)

    def step():
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    device = torch.device(args.device)
    x = torch.rand(60000, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (60000,), device=device)
    print(f"# machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"python {platform.python_version()}, device {device}, threads {torch.get_num_threads()}, "
          f"batch {args.batch_size}")
    train = train_rate(args.batch_size, device)
    rows = [
        ("loader, no augmentation", loader_rate(x, y, args.batch_size, None, device)),
        ("loader, crop 2 + flip", loader_rate(x, y, args.batch_size, Augment(crop_padding=2, flip=True), device)),
        ("loader, crop + flip + affine", loader_rate(
            x, y, args.batch_size,
            Augment(crop_padding=2, flip=True, affine_degrees=10, affine_translate=0.1, affine_scale=(0.9, 1.1)),
            device)),
    ]
    print(f"{'what':34s} {'samples/s':>12s} {'x training step':>16s}")
    print(f"{'training step, resnet_small':34s} {train:12,.0f} {1.0:16.1f}")
    for name, rate in rows:
        print(f"{name:34s} {rate:12,.0f} {rate / train:16.1f}")


if __name__ == "__main__":
    main()
