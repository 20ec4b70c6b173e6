"""``condsim encode``: embed an image folder or a parquet image column (torchrun-aware)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from condsim.cli.common import (
    DEVICE_HELP,
    PRECISION_HELP,
    WORKERS_HELP,
    check_device,
    check_out_dir,
    console,
    make_encoder,
)


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
        import pyarrow as pa
        import pyarrow.dataset as pds

        from condsim.data.lazy_images import FileImage, stream_cells
        from condsim.distributed import encode_distributed, maybe_init_distributed
        from condsim.errors import CondsimError
        from condsim.paths import default_cache_dir

        if (images is None) == (parquet is None):
            raise CondsimError("give exactly one of --images or --parquet")
        if out.is_dir():
            raise CondsimError(f"--out {out}: is a folder; give the .npy file to write")
        check_out_dir(out.parent, "--out")
        cache_root = check_out_dir(cache_dir or default_cache_dir(), "--cache-dir")
        check_device(device)
        if images is not None:
            if not images.is_dir():
                raise CondsimError(f"--images {images}: "
                                   + ("is a file; give the folder of images" if images.exists()
                                      else "no such folder"))
            files = sorted(p for p in images.iterdir() if p.is_file() and p.suffix.lower() in
                           (".jpg", ".jpeg", ".png"))
            # references (path + digest), not bytes: memory does not grow with the images
            data: list[Any] = [FileImage.of(p) for p in files]
            names = [str(p) for p in files]
            where = f"--images {images}"
        else:
            if not parquet.exists():
                raise CondsimError(f"--parquet {parquet}: no such file or folder")
            try:
                dataset = pds.dataset(str(parquet), format="parquet")
                if column not in dataset.schema.names:
                    raise CondsimError(f"--parquet {parquet}: no column {column!r} (found "
                                       f"{dataset.schema.names}); name it with --column")
                # streamed file by file (the dataset's order): references, not bytes
                data = [cell for f in dataset.files for cell in stream_cells(f, column)]
            except (pa.ArrowInvalid, OSError) as exc:
                raise CondsimError(f"--parquet {parquet}: not readable parquet ({exc})") from exc
            names = [c.where if c is not None else f"{parquet} row {i} (null)"
                     for i, c in enumerate(data)]
            where = f"--parquet {parquet}"
        if not data:
            raise CondsimError(f"{where}: no images to encode (*.jpg, *.jpeg, *.png files or "
                               "parquet rows)")
        maybe_init_distributed()
        path = encode_distributed(make_encoder(model, device, precision), data,
                                  cache_root, out,
                                  batch_size=batch_size, num_workers=workers, names=names)
        if path is not None:
            console.print(f"wrote {path} ({len(data)} embeddings)")
