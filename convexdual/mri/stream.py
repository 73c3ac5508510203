"""Primal Adam training streamed from a :class:`~convexdual.mri.prepare.SliceCache` on disk.

For training sets larger than memory: each step reads one batch of slices from the
HDF5 cache (one chunk per slice), so memory holds one batch plus the network. The
minibatch objective has the units of (2) over the whole cached set, exactly as in
:func:`convexdual.train.train_primal` (which needs the data in memory):
``(N / B) * sum_batch L(f(x) - y) + beta/2 sum_j (||u_j||^2 + v_j^2)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from convexdual.losses import get_loss
from convexdual.mri.coils import center_crop
from convexdual.mri.prepare import SliceCache, to_examples
from convexdual.nets import TwoLayerConvNet

__all__ = ["StreamTrainResult", "train_primal_streaming", "cache_objective"]


@dataclass(frozen=True)
class StreamTrainResult:
    """Trained net, final objective (2) over the cache, and per-epoch history."""

    network: TwoLayerConvNet
    objective: float
    history: tuple[dict[str, float], ...]
    epochs: int


def _batch(cache: SliceCache, index, crop, dev, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    zf, tg = cache.slices(index)
    if crop is not None:
        zf, tg = center_crop(zf, crop), center_crop(tg, crop)
    x, y = to_examples(zf, tg)
    return torch.from_numpy(x).to(dev, dtype), torch.from_numpy(y).to(dev, dtype)


def cache_objective(net: TwoLayerConvNet, cache: SliceCache, beta: float, *, crop: tuple[int, int] | None = None,
                    slices_per_read: int = 8, loss: str = "squared") -> tuple[float, float]:
    """``(objective (2), per-pixel loss)`` of a net over every example of the cache, read in chunks."""
    lo = get_loss(loss)
    p = next(net.parameters())
    fit, pixels = 0.0, 0
    with torch.no_grad():
        for s in range(0, cache.num_slices, slices_per_read):
            x, y = _batch(cache, slice(s, min(s + slices_per_read, cache.num_slices)), crop, p.device, p.dtype)
            fit += float(lo.torch_value(net(x)[:, 0] - y))
            pixels += y.numel()
        reg = float((net.conv1.weight**2).sum() + (net.conv2.weight**2).sum())
    return fit + 0.5 * beta * reg, fit / max(pixels, 1)


def train_primal_streaming(cache: SliceCache, *, width: int, kernel_size: int = 7, beta: float, epochs: int = 10,
                           slices_per_batch: int = 1, lr: float = 1e-3, crop: tuple[int, int] | None = None,
                           seed: int = 0, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float64, time_limit: float | None = None) -> StreamTrainResult:
    """Adam on the residual net over the cached slices, one batch read from disk per step.

    Args:
        cache: prepared slices (both real and imaginary parts of each slice form a batch).
        width, kernel_size, beta: the network and objective (2) (residual, squared loss).
        epochs, slices_per_batch, lr: Adam schedule (the paper's batch of 2 = one slice).
        crop: centre crop applied to every slice read.
        seed: initialisation and batch order.
        time_limit: stop after this many seconds.
    """
    if int(width) < 1 or int(epochs) < 1 or int(slices_per_batch) < 1 or not (lr > 0) or not (beta > 0):
        raise ValueError("width, epochs, slices_per_batch must be >= 1 and lr, beta > 0")
    lo = get_loss("squared")
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(int(seed))
    net = TwoLayerConvNet(1, int(width), int(kernel_size), residual=True, dtype=dtype)
    with torch.no_grad():
        for conv in (net.conv1, net.conv2):
            torch.nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=gen)
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    N = cache.num_examples
    t0 = time.perf_counter()
    history = []
    obj, ploss = cache_objective(net, cache, beta, crop=crop)
    history.append({"epoch": 0.0, "time": 0.0, "objective": obj, "train_loss": ploss})
    epoch = 0
    for epoch in range(1, int(epochs) + 1):
        order = rng.permutation(cache.num_slices)
        for s in range(0, len(order), int(slices_per_batch)):
            x, y = _batch(cache, np.sort(order[s : s + int(slices_per_batch)]), crop, dev, dtype)
            opt.zero_grad(set_to_none=True)
            fit = lo.torch_value(net(x)[:, 0] - y) * (N / x.shape[0])
            reg = (net.conv1.weight**2).sum() + (net.conv2.weight**2).sum()
            (fit + 0.5 * beta * reg).backward()
            opt.step()
        obj, ploss = cache_objective(net, cache, beta, crop=crop)
        history.append({"epoch": float(epoch), "time": time.perf_counter() - t0, "objective": obj,
                        "train_loss": ploss})
        if time_limit is not None and time.perf_counter() - t0 >= time_limit:
            break
    return StreamTrainResult(network=net, objective=history[-1]["objective"], history=tuple(history), epochs=epoch)
