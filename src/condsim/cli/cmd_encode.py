"""``condsim encode``: embed an image folder or a parquet image column (torchrun-aware)."""

from __future__ import annotations

from pathlib import Path

import typer

from condsim.cli.common import DEVICE_HELP, PRECISION_HELP, WORKERS_HELP, console, make_encoder


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @app.command("encode")
    def encode(
        model: str = typer.Option(..., "--model", "-m"),
        out: Path = typer.Option(..., "--out", help="Output .npy (rows in input order)."),
        images: Path = typer.Option(None, help="Folder of images (*.jpg, *.png), sorted."),
        parquet: Path = typer.Option(None, help="Parquet file(s) folder or file."),
        column: str = typer.Option("jpg", help="Image column of --parquet."),
        cache_dir: Path = typer.Option(None, help="Embedding cache (shared by all ranks)."),
        batch_size: int = typer.Option(64), workers: int = typer.Option(0, help=WORKERS_HELP),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
    ) -> None:
        """Encode images as targets into OUT. Under `torchrun --nproc-per-node N -m
        condsim.cli encode ...` each rank encodes its shard into the cache and rank 0
        merges them in order."""
        import pyarrow.dataset as pds

        from condsim.data.lrvsf import binary_values
        from condsim.distributed import encode_distributed
        from condsim.errors import CondsimError
        from condsim.paths import default_cache_dir
        from condsim.training.trainer import maybe_init_distributed

        if (images is None) == (parquet is None):
            raise CondsimError("give exactly one of --images or --parquet")
        if images is not None:
            files = sorted(p for p in images.iterdir() if p.suffix.lower() in
                           (".jpg", ".jpeg", ".png"))
            data = [p.read_bytes() for p in files]
        else:
            table = pds.dataset(str(parquet), format="parquet").to_table(columns=[column])
            data = binary_values(table.column(column), f"{parquet} column {column}")
        if not data:
            raise CondsimError("no images to encode")
        maybe_init_distributed()
        path = encode_distributed(make_encoder(model, device, precision), data,
                                  cache_dir or default_cache_dir(), out,
                                  batch_size=batch_size, num_workers=workers)
        if path is not None:
            console.print(f"wrote {path} ({len(data)} embeddings)")
