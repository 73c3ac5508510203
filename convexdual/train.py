"""Primal training of the network (2) with Adam: the baseline the convex program is compared to.

The minibatch objective is an unbiased estimate of (2) in the same units as (4):
``(N / B) * sum_{batch} L(f(x) - y) + beta/2 * sum_j (||u_j||^2 + v_j^2)``; the full
objective (2) is evaluated on all data every ``eval_every`` epochs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from convexdual._validation import as_images, as_targets, check_beta, check_kernel_size
from convexdual.losses import Loss, get_loss
from convexdual.nets import TwoLayerConvNet

__all__ = ["PrimalTrainResult", "train_primal", "network_objective_torch"]


@dataclass(frozen=True)
class PrimalTrainResult:
    """Outcome of :func:`train_primal`.

    Attributes:
        network: the trained net (on the training device).
        objective: final full objective (2) (exact sum, float64 evaluation).
        history: per evaluation: epoch, seconds, objective, train_loss (per pixel, the
            paper's unit), and test_loss when test data were given.
        status: "completed" or "time_limit".
        epochs: epochs run.
    """

    network: TwoLayerConvNet
    objective: float
    history: tuple[dict[str, float], ...]
    status: str
    epochs: int


def network_objective_torch(net: TwoLayerConvNet, x: torch.Tensor, y: torch.Tensor, beta: float, loss: Loss,
                            batch_size: int = 256, comm: Any = None) -> tuple[float, float]:
    """``(objective (2), fit term)`` evaluated without gradients on tensors already on the net's device
    (with ``comm``: ``x, y`` are this rank's images and the fit is summed over the ranks)."""
    fit = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            fit += float(loss.torch_value(net(x[s : s + batch_size])[:, 0] - y[s : s + batch_size]))
        reg = float((net.conv1.weight**2).sum() + (net.conv2.weight**2).sum())
    if comm is not None:
        fit = comm.sum(fit)
    return fit + 0.5 * beta * reg, fit


class _Shard:
    """Where this rank's images sit among all of them (one process: all of them, no wrapping)."""

    def __init__(self, comm: Any, counts: list[int], test_counts: list[int] | None) -> None:
        self.comm = comm
        self.world = 1 if comm is None else comm.world
        rank = 0 if comm is None else comm.rank
        self.start, self.stop = sum(counts[:rank]), sum(counts[: rank + 1])
        self.total = sum(counts)
        self.test_total = sum(test_counts) if test_counts is not None else 0

    @classmethod
    def of(cls, comm: Any, n_local: int, test_t: Any) -> "_Shard":
        from convexdual.distributed import shard_sizes

        nt = None if test_t is None else int(test_t[0].shape[0])
        if comm is None or comm.world == 1:
            return cls(None, [n_local], None if nt is None else [nt])
        return cls(comm, shard_sizes(comm, n_local), None if nt is None else shard_sizes(comm, nt))

    def wrap(self, net: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
        if self.comm is None:
            return net
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)

    def local(self, idx: torch.Tensor) -> torch.Tensor:
        """The positions, among this rank's images, of the global image indices ``idx`` it holds."""
        if self.comm is None:
            return idx
        keep = (idx >= self.start) & (idx < self.stop)
        return idx[keep] - self.start

    def clock(self, t0: float) -> float:
        """Seconds since ``t0`` (rank 0's, so that every rank stops at the same epoch)."""
        t = time.perf_counter() - t0
        if self.comm is not None:
            t = float(self.comm.broadcast(np.array([t]))[0])
        return t


def training_tensors(x: np.ndarray, y: np.ndarray, test: tuple[Any, Any] | None, dev: torch.device,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Checked inputs/targets (and the optional ``(noisy_test, clean_test)``) as tensors on ``dev``."""
    xt = torch.from_numpy(x).to(dev, dtype)
    yt = torch.from_numpy(y).to(dev, dtype)
    test_t = None
    if test is not None:
        tx = as_images(test[0], "test noisy")
        test_t = (torch.from_numpy(tx).to(dev, dtype), torch.from_numpy(as_targets(test[1], tx, "test clean")).to(dev, dtype))
    return xt, yt, test_t


def train_primal(
    noisy: Any,
    clean: Any,
    *,
    width: int,
    kernel_size: int = 3,
    beta: float,
    loss: str | Loss = "squared",
    residual: bool = False,
    residual_channel: int = 0,
    epochs: int = 100,
    batch_size: int = 25,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    init_net: TwoLayerConvNet | None = None,
    time_limit: float | None = None,
    eval_every: int = 1,
    test: tuple[Any, Any] | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, float]], None] | None = None,
    comm: Any = None,
) -> PrimalTrainResult:
    """Train ``f(x) = sum_j v_j relu(x * u_j)`` on (2) with Adam (the paper's primal baseline).

    Args:
        noisy, clean: training inputs ``(N, [C,] H, W)`` and targets ``(N, H, W)``.
        width: number of filters m (paper: 512 for MNIST, 1,024 for MRI).
        kernel_size: odd k. beta: weight decay of (2). loss: convex loss.
        residual / residual_channel: skip connection (Corollary 1.1).
        epochs, batch_size, lr: Adam schedule (paper: batch 25 MNIST, 2 MRI).
        seed: seeds the Kaiming-uniform initialisation and the batch order (no global seed).
        device, dtype: where and in what precision to train.
        init_net: start from this network (copied) instead of a fresh init.
        time_limit: stop after this many seconds (status "time_limit").
        eval_every: epochs between full-objective evaluations.
        test: optional ``(noisy_test, clean_test)`` for the per-pixel test loss.
        progress: show a tqdm bar.
        callback: called with each history record.
        comm: the ranks over which the images are sharded (:mod:`convexdual.distributed`, under
            torchrun): ``noisy``/``clean`` (and ``test``) are this rank's contiguous block of images,
            in rank order. The net is wrapped in ``DistributedDataParallel``; every rank draws the same
            global minibatches (same seed) and trains on the images of them it holds, and the
            gradients are averaged, so the steps are those of one process on all the images.
    """
    x = as_images(noisy, "noisy")
    y = as_targets(clean, x, "clean")
    k = check_kernel_size(kernel_size, x.shape[2], x.shape[3])
    b = check_beta(beta)
    lo = get_loss(loss)
    if int(width) < 1 or int(epochs) < 1 or int(batch_size) < 1 or not (lr > 0):
        raise ValueError(f"width, epochs and batch_size must be >= 1 and lr > 0; got {width}, {epochs}, {batch_size}, {lr}")
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if init_net is not None:
        net = TwoLayerConvNet(init_net.in_channels, init_net.width, init_net.kernel_size,
                              residual=init_net.residual, residual_channel=init_net.residual_channel, dtype=dtype)
        net.load_state_dict({kk: v.to(dtype) for kk, v in init_net.state_dict().items()})
    else:
        net = TwoLayerConvNet(x.shape[1], int(width), k, residual=residual, residual_channel=residual_channel,
                              dtype=dtype)
        with torch.no_grad():  # PyTorch's default Conv2d init (Kaiming uniform), seeded locally
            for conv in (net.conv1, net.conv2):
                torch.nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=gen)
    net = net.to(dev)
    xt, yt, test_t = training_tensors(x, y, test, dev, dtype)
    shard = _Shard.of(comm, x.shape[0], test_t)
    N = shard.total
    pixels = float(N * x.shape[2] * x.shape[3])
    model = shard.wrap(net, dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    status = "completed"

    def record(epoch: int) -> None:
        obj, fit = network_objective_torch(net, xt, yt, b, lo, comm=shard.comm)
        rec = {"epoch": float(epoch), "time": shard.clock(t0), "objective": obj, "train_loss": fit / pixels}
        if test_t is not None:
            _, tfit = network_objective_torch(net, test_t[0], test_t[1], b, lo, comm=shard.comm)
            rec["test_loss"] = tfit / float(shard.test_total * test_t[0].shape[2] * test_t[0].shape[3])
        history.append(rec)
        if callback is not None:
            callback(rec)

    record(0)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(epochs), desc="primal Adam", unit="epoch")
    epoch = 0
    for epoch in range(1, int(epochs) + 1):
        perm = torch.randperm(N, generator=gen).to(dev)
        for s in range(0, N, batch_size):
            idx = perm[s : s + batch_size]
            mine = shard.local(idx)
            opt.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients: each rank's part of the fit counts `world` times
            fit = lo.torch_value(model(xt[mine])[:, 0] - yt[mine]) * (N / len(idx) * shard.world)
            reg = (net.conv1.weight**2).sum() + (net.conv2.weight**2).sum()
            (fit + 0.5 * b * reg).backward()
            opt.step()
        out_of_time = time_limit is not None and shard.clock(t0) >= time_limit
        if epoch % max(1, int(eval_every)) == 0 or epoch == int(epochs) or out_of_time:
            record(epoch)
            if bar is not None:
                bar.set_postfix(objective=f"{history[-1]['objective']:.6g}")
        if bar is not None:
            bar.update(1)
        if out_of_time:
            status = "time_limit"
            break
    if bar is not None:
        bar.close()
    if history[-1]["epoch"] != epoch:
        record(epoch)
    return PrimalTrainResult(network=net, objective=history[-1]["objective"], history=tuple(history),
                             status=status, epochs=epoch)

