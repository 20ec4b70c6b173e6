"""Dataset readers: parquet streaming, JSON annotations, image decoding, crops."""
