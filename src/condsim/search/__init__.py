"""Exact scoring engines: blockwise, streamed, tie-safe."""

from condsim.search.exact import (
    DistractorDraws,
    FoldCounts,
    draw_multiplicities,
    fold_rank_counts,
    score_blocks,
)

__all__ = [
    "DistractorDraws", "FoldCounts", "draw_multiplicities", "fold_rank_counts", "score_blocks",
]
