"""The GeneCIS training recipe: captions -> scene graphs -> triplets (-> contrastive training).

- :mod:`condsim.training.scenegraph`: ``condsim parse`` (spaCy + ``sng_parser``, optional
  extra ``parse``), resumable parquet shards of (caption, relation) rows;
- :mod:`condsim.training.mining`: ``condsim mine``, the GeneCIS mining rules, vectorised and
  deterministic for a seed whatever the shard count; :func:`read_triplets` for trainers.
"""

from condsim.training.mining import (
    MiningConfig,
    TripletMiner,
    combine_shards,
    mine,
    read_triplets,
)
from condsim.training.scenegraph import ParserUnavailableError, parse_captions, parse_shard

__all__ = [
    "MiningConfig",
    "ParserUnavailableError",
    "TripletMiner",
    "combine_shards",
    "mine",
    "parse_captions",
    "parse_shard",
    "read_triplets",
]
