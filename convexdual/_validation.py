"""Input checks shared by the public entry points.

Every check raises ValueError/TypeError with what was wrong and what is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["as_images", "as_targets", "check_beta", "check_kernel_size", "check_finite", "check_device",
           "check_num_threads", "check_fields"]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc
    if x.dtype == bool:
        raise TypeError(f"{name} is a bool array; it must hold real numbers (intensities). If 0/1 values are "
                        f"meant, convert it first, e.g. {name}.astype(float)")
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise TypeError(
            f"{name} is complex; split real and imaginary parts into separate examples "
            "(convexdual.mri.prepare.to_examples does this for MRI)"
        )
    return x


def check_finite(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s); all entries must be finite")


def as_images(x: Any, name: str = "noisy") -> np.ndarray:
    """Return ``x`` as a float64 array ``(N, C, H, W)``.

    Accepts ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.
    """
    x = _to_numpy(x, name)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}"
        )
    if min(x.shape) == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    check_finite(x, name)
    return x


def as_targets(y: Any, images: np.ndarray, name: str = "clean") -> np.ndarray:
    """Return ``y`` as float64 ``(N, H, W)`` matching ``images`` ``(N, C, H, W)``."""
    y = _to_numpy(y, name)
    if y.ndim == 4:
        if y.shape[1] != 1:
            raise ValueError(
                f"{name} must have a single channel (N, 1, H, W) or be (N, H, W); got shape {tuple(y.shape)}"
            )
        y = y[:, 0]
    if y.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W); got shape {tuple(y.shape)}")
    N, _, H, W = images.shape
    if y.shape != (N, H, W):
        raise ValueError(
            f"{name} has shape {tuple(y.shape)} but the inputs imply (N, H, W) = {(N, H, W)}; "
            "inputs and targets must hold the same images"
        )
    y = np.ascontiguousarray(y, dtype=np.float64)
    check_finite(y, name)
    return y


def check_beta(beta: Any) -> float:
    """``beta`` as a float: a finite real number > 0 (bools and strings are refused)."""
    if isinstance(beta, (bool, np.bool_)) or str(getattr(beta, "dtype", "")) in ("bool", "torch.bool"):
        raise TypeError(f"beta must be a positive real number (the weight decay of (2)), got the bool {beta!r}")
    if isinstance(beta, (str, bytes)):
        raise TypeError(f"beta must be a positive real number (the weight decay of (2)), got the string {beta!r}")
    try:
        b = float(beta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"beta must be a positive real number, got {beta!r}") from exc
    if not np.isfinite(b) or b <= 0:
        raise ValueError(f"beta must be a finite number > 0 (the weight decay of (2)); got {beta!r}")
    return b


def check_kernel_size(k: Any, height: int, width: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"kernel_size must be an odd positive int, got {k!r}")
    k = int(k)
    if k < 1 or k % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd and >= 1 (zero padding (k-1)/2 keeps the image size); got {k}"
        )
    if k > min(height, width):
        raise ValueError(
            f"kernel_size {k} is larger than the image ({height}x{width}); use a kernel no larger than "
            f"{min(height, width) if min(height, width) % 2 else min(height, width) - 1}"
        )
    return k


def check_fields(obj: Any, names: tuple[str, ...], op: str, bound: float, note: str = "") -> None:
    """Range-check the fields ``names`` of an options object: each must be ``op bound``
    (``op`` ">" or ">="; NaN fails). ``int`` bounds compare ``int(value)`` (iteration and size
    counts). Raises ``ValueError``: ``"<name> must be <op> <bound><note>, got <value>"``."""
    if op not in (">", ">="):
        raise ValueError(f"op must be '>' or '>=', got {op!r}")
    for name in names:
        value = getattr(obj, name)
        v = int(value) if isinstance(bound, int) else value
        if not (v > bound if op == ">" else v >= bound):
            raise ValueError(f"{name} must be {op} {bound:g}{note}, got {value}")


def check_num_threads(num_threads: Any, name: str = "num_threads") -> int | None:
    """``None`` (torch's default) or an int >= 1 (torch intra-op threads)."""
    if num_threads is None:
        return None
    if isinstance(num_threads, (bool, np.bool_)) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= 1 (torch intra-op threads) or None for torch's default; "
                        f"got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"{name} must be >= 1 (torch intra-op threads) or None for torch's default; "
                         f"got {int(num_threads)}")
    return int(num_threads)


def check_device(device: Any) -> "torch.device":
    """``device`` as a ``torch.device`` that this torch can use, checked before any work.

    Accepts "cpu", "cuda", "cuda:N", "mps" or a ``torch.device``.

    Raises:
        TypeError: not a str or ``torch.device``.
        ValueError: an unknown device string, or a device this machine / torch build lacks
            (e.g. "cuda" on a CPU-only torch), saying what is available.
    """
    import torch

    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str such as 'cpu' or 'cuda', or a torch.device; got {device!r}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'mps' ({exc})") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
            raise ValueError(f"device {str(device)!r} needs a CUDA build of torch, but this torch "
                             f"({torch.__version__}) is CPU-only; use device='cpu', or install a CUDA build of torch")
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: torch has CUDA support but no CUDA device is usable here "
                             "(torch.cuda.is_available() is False); use device='cpu'")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r}: only {count} CUDA device(s) here (cuda:0 .. cuda:{count - 1})")
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use device='cpu'")
        return dev
    raise ValueError(f"device {str(device)!r} is not supported: use 'cpu', 'cuda', 'cuda:N' or 'mps'")
