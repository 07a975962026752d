"""Mixed precision by name: ``none`` (fp32), ``bf16`` autocast, ``fp16`` autocast with a gradient scaler."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Optional

import torch

__all__ = ["AMP_DTYPES", "amp_dtype", "autocast", "grad_scaler"]

AMP_DTYPES: dict[str, Optional[torch.dtype]] = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str) -> Optional[torch.dtype]:
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}; got {amp!r}")
    return AMP_DTYPES[amp]


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """``torch.autocast`` for ``amp`` on ``device``'s type (disabled for ``none``)."""
    dtype = amp_dtype(amp)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has fp32's range); disabled it passes calls straight through."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(amp) is torch.float16)
