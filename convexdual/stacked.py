"""Deeper denoisers built from two-layer blocks (Section 4.3, docs/math.md §8).

:class:`StackedConvNet` composes :class:`~convexdual.nets.TwoLayerConvNet` blocks,
``f = f_L o ... o f_1``: block 1 maps the ``C``-channel input to one channel, every
later block maps one channel to one channel. Two ways to train one:

* greedily, block by block, each block the exact solution of its own convex dual (4)
  on the previous block's output (``convexdual experiment deeper-nets --mode greedy``);
* end to end by Adam on the objective of the whole net (:func:`train_stacked`): the
  paper's four-layer net of two unrolled two-layer iterations.

A stacked net is saved to one ``.pt`` file (tensors, numbers and strings only: it loads
with ``torch.load(weights_only=True)``), written atomically like the two-layer net's.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from convexdual.errors import DataFormatError
from convexdual.nets import TwoLayerConvNet, _check_config, _check_state_dict, _read_metadata

__all__ = ["StackedConvNet", "StackedTrainResult", "train_stacked", "stacked_objective_torch"]

_FORMAT = "convexdual.StackedConvNet/1"


class StackedConvNet(nn.Module):
    """``f(x) = f_L(... f_2(f_1(x)))`` with two-layer conv ReLU blocks ``f_b`` (eq. 1 each).

    Args:
        blocks: the blocks, first applied first. Block 1 takes ``C`` channels; every later
            block takes the one channel its predecessor outputs (``in_channels == 1``).

    Shapes:
        input ``(N, C, H, W)`` -> output ``(N, 1, H, W)``.
    """

    def __init__(self, blocks: Sequence[TwoLayerConvNet]) -> None:
        super().__init__()
        blocks = list(blocks)
        if not blocks:
            raise ValueError("a stacked net needs at least one block")
        for i, b in enumerate(blocks):
            if not isinstance(b, TwoLayerConvNet):
                raise TypeError(f"block {i + 1} must be a TwoLayerConvNet, got {type(b).__name__}")
            if i > 0 and b.in_channels != 1:
                raise ValueError(f"block {i + 1} takes {b.in_channels} channels but block {i} outputs one")
        dtypes = {b.conv1.weight.dtype for b in blocks}
        if len(dtypes) > 1:
            raise ValueError(f"blocks have different dtypes {sorted(map(str, dtypes))}; convert them first")
        self.blocks = nn.ModuleList(blocks)

    # ---- construction -------------------------------------------------------
    @classmethod
    def initialized(cls, in_channels: int, widths: Sequence[int], kernel_size: int = 3, *, residual: bool = False,
                    seed: int = 0, dtype: torch.dtype = torch.float64) -> "StackedConvNet":
        """Fresh blocks of the given widths, PyTorch's default Conv2d init (Kaiming uniform) seeded by ``seed``."""
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        blocks = []
        for i, w in enumerate(widths):
            if int(w) < 1:
                raise ValueError(f"block widths must be >= 1, got {list(widths)}")
            b = TwoLayerConvNet(in_channels if i == 0 else 1, int(w), kernel_size, residual=residual, dtype=dtype)
            with torch.no_grad():
                for conv in (b.conv1, b.conv2):
                    torch.nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=gen)
            blocks.append(b)
        return cls(blocks)

    @property
    def in_channels(self) -> int:
        return self.blocks[0].in_channels

    @property
    def widths(self) -> list[int]:
        return [b.width for b in self.blocks]

    # ---- inference ----------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self.blocks:
            x = b(x)
        return x

    def intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block, ``[f_1(x), f_2(f_1(x)), ...]`` (the last is ``forward(x)``)."""
        outs = []
        for b in self.blocks:
            x = b(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def predict_blocks(self, images: Any, *, batch_size: int | None = None) -> list[np.ndarray]:
        """Numpy ``(N, H, W)`` output of every block on ``images`` ``(N, [C,] H, W)``, batched
        (``batch_size`` None: sized to the widest block, :func:`convexdual.nets.images_per_pass`)."""
        from convexdual._validation import as_images
        from convexdual.nets import images_per_pass

        x = as_images(images, "images")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"images have {x.shape[1]} channel(s) but the network takes {self.in_channels}")
        p = next(self.parameters())
        batch_size = images_per_pass(batch_size, max(b.width for b in self.blocks), x.shape[2] * x.shape[3],
                                     p.element_size())
        outs: list[list[np.ndarray]] = [[] for _ in self.blocks]
        for s in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[s : s + batch_size]).to(p.device, p.dtype)
            for i, o in enumerate(self.intermediates(xb)):
                outs[i].append(o[:, 0].double().cpu().numpy())
        return [np.concatenate(o) for o in outs]

    def predict(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Numpy ``(N, H, W)`` output of the whole net."""
        return self.predict_blocks(images, batch_size=batch_size)[-1]

    def block_inputs(self, images: Any, *, batch_size: int | None = None) -> list[np.ndarray]:
        """What each block sees: ``images`` for block 1, block ``b-1``'s output ``(N, 1, H, W)`` for block ``b``."""
        from convexdual._validation import as_images

        x = as_images(images, "images")
        outs = self.predict_blocks(x, batch_size=batch_size)
        return [x] + [o[:, None] for o in outs[:-1]]

    # ---- persistence ----------------------------------------------------------
    def save(self, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Every block's config and weights plus JSON-able ``metadata`` in one ``.pt`` file, atomically.

        Read back with :meth:`load` (``(net, metadata)``); ``torch.load(weights_only=True)`` reads it.
        """
        from convexdual._io import atomic_torch_save

        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict of JSON-able values, got {type(metadata).__name__}")
        try:
            meta_json = json.dumps(metadata or {}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must hold JSON-able values (str, finite numbers, lists, dicts): {exc}") from None
        blocks = [{"config": b.config(), "state_dict": {k: v.detach().cpu() for k, v in b.state_dict().items()}}
                  for b in self.blocks]
        return atomic_torch_save({"format": _FORMAT, "blocks": blocks, "metadata_json": meta_json}, Path(path))

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str = "cpu") -> tuple["StackedConvNet", dict[str, Any]]:
        """Load a stacked net saved by :meth:`save`; returns ``(net, metadata)``.

        Raises:
            DataFormatError: no such file, not a torch file, not a stacked-net file, or a block whose
                config or weights are invalid or do not chain (block ``b > 1`` must take one channel).
        """
        from convexdual._validation import check_device

        from convexdual.nets import read_network_file

        dev = check_device(device)
        path = Path(path)
        blob = read_network_file(path, _FORMAT, "stacked-network")
        raw = blob.get("blocks")
        if not isinstance(raw, list) or not raw:
            raise DataFormatError(f"{path}: 'blocks' must be a non-empty list of {{config, state_dict}}")
        blocks = []
        for i, entry in enumerate(raw):
            where = Path(f"{path} (block {i + 1})")
            if not isinstance(entry, dict):
                raise DataFormatError(f"{where}: each block must be a dict with config and state_dict")
            cfg = _check_config(entry.get("config"), where)
            sd = _check_state_dict(entry.get("state_dict"), cfg, where)
            if i > 0 and cfg["in_channels"] != 1:
                raise DataFormatError(f"{where}: takes {cfg['in_channels']} channels but the block before outputs one")
            blocks.append(TwoLayerConvNet._from_checked(cfg, sd))
        meta = _read_metadata(blob, path)
        try:
            net = cls(blocks)
        except (TypeError, ValueError) as exc:
            raise DataFormatError(f"{path}: {exc}") from None
        return net.to(dev), meta

    def extra_repr(self) -> str:
        return f"widths={self.widths}"


# --------------------------------------------------------------------------------------------- training
@dataclass(frozen=True)
class StackedTrainResult:
    """Outcome of :func:`train_stacked` (same fields as :class:`convexdual.train.PrimalTrainResult`)."""

    network: StackedConvNet
    objective: float
    history: tuple[dict[str, float], ...]
    status: str
    epochs: int


def _weight_sq(net: StackedConvNet) -> torch.Tensor:
    return sum((p**2).sum() for p in net.parameters())


def stacked_objective_torch(net: StackedConvNet, x: torch.Tensor, y: torch.Tensor, beta: float,
                            batch_size: int = 256) -> tuple[float, float]:
    """``(objective, fit)``: ``1/2 sum (f(x) - y)^2 + beta/2 * (sum of every squared weight)``, no gradients."""
    fit = 0.0
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            r = net(x[s : s + batch_size])[:, 0] - y[s : s + batch_size]
            fit += float(0.5 * (r * r).sum())
        reg = float(_weight_sq(net))
    return fit + 0.5 * beta * reg, fit


def train_stacked(noisy: Any, clean: Any, *, widths: Sequence[int], kernel_size: int = 3, beta: float,
                  epochs: int = 100, batch_size: int = 25, lr: float = 1e-3, seed: int = 0,
                  device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
                  init_net: StackedConvNet | None = None, eval_every: int = 1,
                  test: tuple[Any, Any] | None = None, time_limit: float | None = None) -> StackedTrainResult:
    """Train a stacked net end to end with Adam on the squared loss plus weight decay on every layer.

    The minibatch objective is ``(N / B) * 1/2 sum_batch (f(x) - y)^2 + beta/2 * sum ||theta||^2``
    (an unbiased estimate of the full objective, the units of (2)); the full objective and the
    per-pixel train (and test) loss are logged every ``eval_every`` epochs, with the per-pixel
    loss after every block (``train_loss_block{b}``, ``test_loss_block{b}``).

    Args:
        noisy, clean: ``(N, [C,] H, W)`` inputs and ``(N, H, W)`` targets.
        widths: filters per block (the paper's unrolled net: two blocks).
        seed: seeds the Kaiming-uniform init and the batch order (no global seed).
        init_net: start from this net (copied) instead of a fresh init.
    """
    from convexdual._validation import as_images, as_targets, check_beta, check_kernel_size

    x = as_images(noisy, "noisy")
    y = as_targets(clean, x, "clean")
    k = check_kernel_size(kernel_size, x.shape[2], x.shape[3])
    b = check_beta(beta)
    if int(epochs) < 1 or int(batch_size) < 1 or not (lr > 0):
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    if init_net is not None:
        net = StackedConvNet([TwoLayerConvNet(bb.in_channels, bb.width, bb.kernel_size, residual=bb.residual,
                                              residual_channel=bb.residual_channel, dtype=dtype)
                              for bb in init_net.blocks])
        net.load_state_dict({kk: v.to(dtype) for kk, v in init_net.state_dict().items()})
    else:
        net = StackedConvNet.initialized(x.shape[1], widths, k, seed=int(seed), dtype=dtype)
        gen = torch.Generator(device="cpu").manual_seed(int(seed) + 1)  # batch order, independent of the init
    dev = torch.device(device)
    net = net.to(dev)
    from convexdual.train import training_tensors

    xt, yt, test_t = training_tensors(x, y, test, dev, dtype)
    N = x.shape[0]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()

    def block_losses(xx: torch.Tensor, yy: torch.Tensor) -> list[float]:
        tot = [0.0] * len(net.blocks)
        with torch.no_grad():
            for s in range(0, xx.shape[0], 256):
                for i, o in enumerate(net.intermediates(xx[s : s + 256])):
                    r = o[:, 0] - yy[s : s + 256]
                    tot[i] += float(0.5 * (r * r).sum())
        return [t / float(yy.numel()) for t in tot]

    def record(epoch: int) -> None:
        obj, _ = stacked_objective_torch(net, xt, yt, b)
        rec = {"epoch": float(epoch), "time": time.perf_counter() - t0, "objective": obj}
        for i, v in enumerate(block_losses(xt, yt)):
            rec[f"train_loss_block{i + 1}"] = v
        rec["train_loss"] = rec[f"train_loss_block{len(net.blocks)}"]
        if test_t is not None:
            for i, v in enumerate(block_losses(*test_t)):
                rec[f"test_loss_block{i + 1}"] = v
            rec["test_loss"] = rec[f"test_loss_block{len(net.blocks)}"]
        history.append(rec)

    record(0)
    status, epoch = "completed", 0
    for epoch in range(1, int(epochs) + 1):
        perm = torch.randperm(N, generator=gen).to(dev)
        for s in range(0, N, batch_size):
            idx = perm[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            r = net(xt[idx])[:, 0] - yt[idx]
            loss = 0.5 * (r * r).sum() * (N / len(idx)) + 0.5 * b * _weight_sq(net)
            loss.backward()
            opt.step()
        out_of_time = time_limit is not None and time.perf_counter() - t0 >= time_limit
        if epoch % max(1, int(eval_every)) == 0 or epoch == int(epochs) or out_of_time:
            record(epoch)
        if out_of_time:
            status = "time_limit"
            break
    if history[-1]["epoch"] != epoch:
        record(epoch)
    return StackedTrainResult(network=net, objective=history[-1]["objective"], history=tuple(history),
                              status=status, epochs=epoch)
