"""``condsim eval lrvsf`` and ``condsim synth lrvsf``."""

from __future__ import annotations

from pathlib import Path

import typer

from condsim.cli.common import (
    DEVICE_HELP,
    PRECISION_HELP,
    WORKERS_HELP,
    console,
    int_list,
    lrvsf_table,
    make_encoder,
)


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("lrvsf")
    def eval_lrvsf(
        model: str = typer.Option(..., "--model", "-m", help="Model name (see `condsim models`)."),
        data_root: Path = typer.Option(
            ..., "--data-root", help="Folder with products.parquet and distractors/*.parquet."),
        conditioning: str = typer.Option("category", help="category | text"),
        n_dists: str = typer.Option(
            "10000,100000,500000,1000000", "--n-dists",
            help="Distractor counts per gallery (drawn with replacement), e.g. 10K,100K,1M."),
        ks: str = typer.Option("1,5,10,20,50", "--ks", help="Recall cut-offs K."),
        seed: int = typer.Option(0, help="Seed of the distractor draws (and of seeded folds)."),
        folds: str = typer.Option(
            "official", help="official (authors' 20x1000 folds) | seeded | PATH (.pt or .npy)."),
        out: Path = typer.Option(Path("runs/lrvsf"), "--out", help="Output directory."),
        dist_img_col: str = typer.Option("jpg", help="Image column of the distractor files."),
        dist_category_col: str = typer.Option(
            None, help="Category column of the distractor files: also report same-category "
            "recall (each gallery restricted to the query's category; the CondViT authors' "
            "filtered recall)."),
        aggregate_batches: int = typer.Option(100_000, help="Distractor rows per encode call."),
        fragments_readahead: int = typer.Option(2, help="Parquet files read ahead."),
        dev_run: bool = typer.Option(False, help="Only the first aggregated distractor batch."),
        batch_size: int = typer.Option(64, help="Images per forward pass."),
        workers: int = typer.Option(2, help=WORKERS_HELP),
        cache_dir: Path = typer.Option(None, help="Embedding cache (default ~/.cache/condsim)."),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
    ) -> None:
        """Evaluate MODEL on LRVS-Fashion: recall@K with 20 bootstrap folds for each
        distractor count, computed exactly in one pass. Writes results.json and
        model_card.yaml (leaderboard format) to --out."""
        from condsim.benchmarks.lrvsf import LRVSFConfig, evaluate_lrvsf
        from condsim.progress import rich_progress

        cfg = LRVSFConfig(
            data_root=str(data_root), conditioning=conditioning,
            n_dists=int_list(n_dists, "--n-dists"), ks=int_list(ks, "--ks"), seed=seed,
            folds=folds, dist_img_col=dist_img_col, aggregate_batches=aggregate_batches,
            fragments_readahead=fragments_readahead, dev_run=dev_run, batch_size=batch_size,
            num_workers=workers, cache_dir=str(cache_dir) if cache_dir else None, device=device,
            dist_category_col=dist_category_col,
        )
        encoder = make_encoder(model, device, precision)
        with rich_progress() as progress:
            result = evaluate_lrvsf(encoder, cfg, out, progress=progress)
        console.print(lrvsf_table(result))
        same = result.metrics.get("recall_same_category")
        if same:
            k0 = str(result.protocol["ks"][0])
            console.print("same-category R@" + k0 + ": " + ", ".join(
                f"+{int(n):,}: {v[k0]['mean'] * 100:.2f} ± {v[k0]['std'] * 100:.2f}"
                for n, v in same.items()))
        if result.skipped.get("corrupt_distractors"):
            console.print(
                f"[yellow]{result.skipped['corrupt_distractors']} corrupt distractor images "
                "skipped (listed in results.json)[/]"
            )
        console.print(f"wrote {out / 'results.json'} and {out / 'model_card.yaml'}")

    @synth_app.command("lrvsf")
    def synth_lrvsf(
        out: Path = typer.Option(..., "--out", help="Output folder (LRVS-F test-set layout)."),
        products: int = typer.Option(200, help="Number of products."),
        distractors: int = typer.Option(1000, help="Number of distractor images."),
        files: int = typer.Option(4, help="Distractor parquet files."),
        seed: int = typer.Option(0, help="Seed of the generator."),
    ) -> None:
        """Write a synthetic LRVS-F test set (real JPEGs, official parquet layout)."""
        from condsim.synthetic.lrvsf import write_lrvsf

        path = write_lrvsf(out, n_products=products, n_distractors=distractors,
                           files=files, seed=seed)
        console.print(f"wrote synthetic LRVS-F set to {path}")
