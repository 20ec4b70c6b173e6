"""Model adapters: every model implements the ConditionalEncoder protocol (condsim.types)."""
