"""The name of the device a benchmark ran on: the GPU's, or the CPU model (speeds are only comparable on one)."""
from __future__ import annotations

import platform
from pathlib import Path

import torch


def device_name(device: torch.device = torch.device("cpu")) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        return models[0]
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def machine_id() -> str:
    """A tag shared only by processes of one boot of one machine. Times compare between runs with the same tag,
    not merely the same CPU name: virtual machines that all report "Intel(R) Xeon(R) Processor" trained the same
    model at twice each other's speed."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:  # not Linux: the host name is the best there is
        return platform.node()
