"""``test/tiny-clip``: a small, seeded, randomly initialised CLIPModel, built offline.

It is written once with ``save_pretrained`` under ``<condsim_home>/models`` and loaded
through the very same ``hf:`` adapter as real checkpoints, so tests and the demo exercise
the real loading path. Its tokenizer is a byte-level BPE with no merges (one token per byte).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from condsim.io import atomic_directory, remove_stale_temps
from condsim.models.clip_hf import HFClipEncoder
from condsim.paths import condsim_home
from condsim.registry import register_model

TINY_VERSION = "v1"
TINY_SEED = 0


def _byte_vocab() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def build_tiny_clip(out_dir: str | Path, *, seed: int = TINY_SEED, image_size: int = 64) -> Path:
    """Write a seeded random-init tiny CLIP checkpoint (model + tokenizer + processor) to
    the new directory ``out_dir``, built under a temporary name and renamed into place
    (:func:`condsim.io.atomic_directory`: an existing ``out_dir`` is refused)."""
    import torch
    from transformers import (
        CLIPConfig,
        CLIPImageProcessorPil,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    out = Path(out_dir)
    vocab = _byte_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=16,
        ),
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
    )
    # not model.save_pretrained: under torch.distributed, transformers 5 writes weights on
    # rank 0 only, and a rank > 0 building this first would leave a checkpoint without them
    from safetensors.torch import save_file

    with atomic_directory(out) as tmp_out:
        model.config.save_pretrained(tmp_out)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  str(tmp_out / "model.safetensors"), metadata={"format": "pt"})
        processor.save_pretrained(tmp_out)
    return out


def tiny_clip_dir() -> Path:
    """The local directory of ``test/tiny-clip``, built on first use. Concurrent first uses
    (torchrun ranks, submitit tasks, parallel test workers) build it once: the builder holds
    an exclusive lock on ``<dir>.lock`` and the others wait for the finished directory."""
    path = condsim_home() / "models" / f"tiny-clip-{TINY_VERSION}"
    if _complete(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f"{path.name}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # no fcntl (Windows): the rename below still never half-writes
            pass
        if not _complete(path):
            if path.exists():  # a half-built directory from an interrupted build
                import shutil

                shutil.rmtree(path)
            remove_stale_temps(path)  # builds killed midway (we hold the lock)
            build_tiny_clip(path)
    return path


def _complete(path: Path) -> bool:
    return all((path / f).is_file() for f in ("config.json", "model.safetensors",
                                              "tokenizer_config.json"))


@register_model("test/tiny-clip", description="seeded random-init tiny CLIP (offline)",
                dim=32)
def create_tiny_clip(**kwargs: Any) -> HFClipEncoder:
    return HFClipEncoder(str(tiny_clip_dir()), name="test/tiny-clip", **kwargs)
