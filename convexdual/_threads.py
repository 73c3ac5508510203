"""The one thread-count context manager (torch intra-op threads and numba's kernels, restored afterwards)."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Iterator

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Use ``num`` torch intra-op threads inside the block, and at most ``num`` threads in the
    numba kernels of the pattern operator when numba is installed; restore both afterwards.

    ``None`` (or 0) leaves both settings alone."""
    if not num:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(num))
    numba = None
    if importlib.util.find_spec("numba") is not None:
        import numba

        old_numba = numba.get_num_threads()
        numba.set_num_threads(max(1, min(int(num), int(numba.config.NUMBA_NUM_THREADS))))
    try:
        yield
    finally:
        torch.set_num_threads(old)
        if numba is not None:
            numba.set_num_threads(old_numba)
