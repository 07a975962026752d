"""The name of the device a benchmark ran on: the GPU's, or the CPU model (speeds are only comparable on one)."""
from __future__ import annotations

import platform

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
