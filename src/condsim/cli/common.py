"""Shared CLI helpers: parsing lists, printing result tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from condsim.errors import CondsimError

console = Console()


def int_list(text: str, what: str) -> tuple[int, ...]:
    """``"10000,100000"`` -> ``(10000, 100000)``; accepts ``10K``/``1M`` suffixes."""
    out = []
    for part in text.split(","):
        part = part.strip().upper().replace("_", "")
        if not part:
            continue
        mult = 1
        if part[-1] in "KM":
            mult = 1000 if part[-1] == "K" else 1_000_000
            part = part[:-1]
        try:
            out.append(int(float(part) * mult))
        except ValueError as exc:
            raise CondsimError(f"{what}: cannot parse {text!r} as a list of integers") from exc
    if not out:
        raise CondsimError(f"{what}: empty list")
    return tuple(out)


WORKERS_HELP = "Decode threads overlapped with the forward pass (0: decode inline)."
DEVICE_HELP = "cpu | cuda | cuda:N (default: cuda when available)."
PRECISION_HELP = ("Forward precision: auto (bf16 autocast + channels-last on CUDA, fp32 on CPU) "
                  "| fp32 | bf16 | fp16 (CUDA). Part of the cache identity.")


def make_encoder(model: str, device: str | None = None, precision: str = "auto") -> Any:
    """``create_model`` with the CLI's --device/--precision options. Under torchrun on a
    CUDA machine each rank defaults to its own GPU (``cuda:$LOCAL_RANK``)."""
    import os

    import torch

    from condsim.registry import create_model

    kwargs: dict[str, Any] = {"precision": precision}
    if not device and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if device:
        kwargs["device"] = device
    return create_model(model, **kwargs)
