"""Thin command-line layer: parses arguments and calls importable library functions."""
