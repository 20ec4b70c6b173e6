"""Content-addressed, append-only, resumable embedding cache."""

from condsim.cache.store import EmbeddingCache, item_keys

__all__ = ["EmbeddingCache", "item_keys"]
