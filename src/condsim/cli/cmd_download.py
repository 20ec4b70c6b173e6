"""``condsim download lrvsf-distractors``: fetch the LRVS-F distractor images."""

from __future__ import annotations

from pathlib import Path

import typer

from condsim.cli.common import console


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    download_app = typer.Typer(help="Download benchmark images from their URL lists.",
                               no_args_is_help=True)
    app.add_typer(download_app, name="download")

    @download_app.command("lrvsf-distractors")
    def lrvsf_distractors(
        urls: Path = typer.Option(..., help="distractors_urls.parquet from the LRVS-F test set "
                                  "(or a text file, one URL per line)."),
        data_root: Path = typer.Option(..., help="The LRVS-F data root (beside "
                                       "products.parquet); images go to DATA_ROOT/distractors/."),
        url_col: str = typer.Option(None, help="URL column of --urls (default: URL or url)."),
        size: int = typer.Option(256, help="Shortest side after resizing (the test set's 256)."),
        shard_size: int = typer.Option(10_000, help="URLs per parquet shard (the benchmark "
                                       "recommends 10k-100k images per file)."),
        threads: int = typer.Option(32, help="Concurrent downloads."),
        timeout: float = typer.Option(10.0, help="Seconds per request."),
        retries: int = typer.Option(1, help="Extra attempts after a failed request."),
        limit: int = typer.Option(0, help="Only the first N URLs (0: all), e.g. for a dry run."),
    ) -> None:
        """Download and resize the distractor images into img2dataset-style parquet shards
        that `condsim eval lrvsf` reads; the URL list's other columns (e.g. CATEGORY) are
        carried into the shards. Resumable: shards already written are kept, so an
        interrupted download continues where it stopped. Failed URLs are kept as rows with a
        null image and their reason (the evaluation skips and counts them); totals go to
        DATA_ROOT/distractors/download_stats.json."""
        from condsim.data.download import DownloadConfig, download_distractors, read_url_list
        from condsim.progress import rich_progress

        url_list, extra = read_url_list(urls, url_col)
        if limit > 0:
            url_list = url_list[:limit]
            extra = None if extra is None else extra.slice(0, len(url_list))
        cfg = DownloadConfig(size=size, shard_size=shard_size, threads=threads,
                             timeout=timeout, retries=retries)
        with rich_progress() as progress:
            stats = download_distractors(url_list, data_root, cfg, extra=extra,
                                         progress=progress("download", len(url_list)))
        failed = sum(stats["failed"].values())
        console.print(f"{stats['success']:,} images, {failed:,} failed "
                      f"({', '.join(f'{k}: {v:,}' for k, v in stats['failed'].items()) or '-'}); "
                      f"{stats['shards']} shard(s), {stats['shards_reused']} kept from an "
                      f"earlier run -> {data_root / 'distractors'}")
