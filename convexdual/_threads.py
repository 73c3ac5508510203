"""The one thread-count context manager (torch intra-op threads, restored afterwards)."""

from __future__ import annotations

import contextlib
from typing import Iterator

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Use ``num`` torch intra-op threads inside the block and restore the previous number.

    ``None`` (or 0) leaves torch's setting alone."""
    if not num:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(num))
    try:
        yield
    finally:
        torch.set_num_threads(old)
