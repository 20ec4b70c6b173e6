"""Stub encoders shared by the benchmark tests."""

from __future__ import annotations

import torch

from condsim.types import ModelMeta


class ConstantEncoder:
    """Every query and target embeds to the same vector: all scores tie (chance level)."""

    meta = ModelMeta("test/constant", 4, "const")

    def encode_targets(self, images):
        return torch.ones(len(images), 4)

    def encode_queries(self, images, conditions):
        return torch.ones(len(images), 4)
