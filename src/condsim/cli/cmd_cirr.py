"""``condsim eval cirr`` and ``condsim synth cirr``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from condsim.cli.common import DEVICE_HELP, PRECISION_HELP, WORKERS_HELP, console, make_encoder


def _print_groups(title: str, metrics: dict, groups: tuple[str, ...]) -> None:
    """Rich table of ``metrics[group][k] = {mean, ci_low, ci_high}`` rows, in percent."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value")
    for group in groups:
        for k, r in metrics[group].items():
            table.add_row(f"{group}@{k}", f"{r['mean'] * 100:.2f} [{r['ci_low'] * 100:.2f}, "
                          f"{r['ci_high'] * 100:.2f}]")
    console.print(table)


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("cirr")
    def eval_cirr(
        model: str = typer.Option(..., "--model", "-m", help="Model name."),
        root: Path = typer.Option(..., help="CIRR folder (captions/, image_splits/, img_raw/)."),
        split: str = typer.Option("val", help="val (scored) | test1 (writes submissions)."),
        img_root: Path = typer.Option(None, help="Image folder (default ROOT/img_raw)."),
        seed: int = typer.Option(0), bootstrap: int = typer.Option(1000),
        max_missing: int = typer.Option(0), workers: int = typer.Option(2, help=WORKERS_HELP),
        cache_dir: Path = typer.Option(None),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
        out: Path = typer.Option(Path("runs/cirr"), "--out"),
    ) -> None:
        """CIRR: global Recall@1/5/10/50 (reference removed) and Recall_subset@1/2/3 on val;
        on test1, the two submission files for the evaluation server."""
        from condsim.benchmarks.cirr import CirrConfig, evaluate_cirr, write_submissions
        from condsim.progress import rich_progress

        cfg = CirrConfig(root=str(root), split=split,
                         img_root=str(img_root) if img_root else None, seed=seed,
                         n_bootstrap=bootstrap, max_missing=max_missing, num_workers=workers,
                         cache_dir=str(cache_dir) if cache_dir else None)
        encoder = make_encoder(model, device, precision)
        with rich_progress() as progress:
            if split == "test1":
                files = write_submissions(encoder, cfg, out, progress=progress)
                console.print(f"wrote {files['recall']} and {files['recall_subset']}")
                return
            res = evaluate_cirr(encoder, cfg, out, progress=progress)
        _print_groups(f"CIRR {split}: {res.model['name']} (95% CI)", res.metrics,
                      ("recall", "recall_subset"))

    @synth_app.command("cirr")
    def synth_cirr(out: Path = typer.Option(..., "--out"),
                   queries: int = typer.Option(40, help="Queries of val and of test1."),
                   train_queries: int = typer.Option(200, help="Queries of train."),
                   seed: int = typer.Option(0)) -> None:
        """Write a synthetic CIRR (val, test1, train) in the real layout."""
        from condsim.synthetic.cirr import write_cirr

        path = write_cirr(out, n_queries=queries, n_train=train_queries, seed=seed)
        console.print(f"wrote {path}")

    register_circo(app, eval_app, synth_app)
    register_more(app, eval_app, synth_app)


def register_circo(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("circo")
    def eval_circo(
        model: str = typer.Option(..., "--model", "-m", help="Model name."),
        root: Path = typer.Option(..., help="Folder with annotations/ and unlabeled2017/."),
        split: str = typer.Option("val", help="val (scored) | test (writes the submission)."),
        keep_reference: bool = typer.Option(
            False, help="Leave the reference image in the ranking (removed by default)."),
        seed: int = typer.Option(0), bootstrap: int = typer.Option(1000),
        max_missing: int = typer.Option(0, help="Missing image files tolerated (skipped)."),
        batch_size: int = typer.Option(64),
        workers: int = typer.Option(2, help=WORKERS_HELP), cache_dir: Path = typer.Option(None),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
        out: Path = typer.Option(Path("runs/circo"), "--out"),
    ) -> None:
        """CIRCO: mAP@5/10/25/50 (normalised by min(#gt, K)), Recall@K on the target,
        semantic mAP@10 per aspect; on test, the top-50 submission file."""
        from condsim.benchmarks.circo import CircoConfig, evaluate_circo, write_submission
        from condsim.progress import rich_progress

        cfg = CircoConfig(root=str(root), split=split, remove_reference=not keep_reference,
                          seed=seed, n_bootstrap=bootstrap, max_missing=max_missing,
                          batch_size=batch_size, num_workers=workers,
                          cache_dir=str(cache_dir) if cache_dir else None)
        encoder = make_encoder(model, device, precision)
        with rich_progress() as progress:
            if split == "test":
                console.print(f"wrote {write_submission(encoder, cfg, out, progress=progress)}")
                return
            res = evaluate_circo(encoder, cfg, out, progress=progress)
        _print_groups(f"CIRCO {split}: {res.model['name']} (95% CI)", res.metrics,
                      ("map", "recall"))

    @synth_app.command("circo")
    def synth_circo(out: Path = typer.Option(..., "--out"),
                    queries: int = typer.Option(30), seed: int = typer.Option(0)) -> None:
        """Write a synthetic CIRCO (val + test) in the real layout."""
        from condsim.synthetic.circo import write_circo

        console.print(f"wrote {write_circo(out, n_queries=queries, seed=seed)}")


def register_more(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("mitstates")
    def eval_mitstates(
        model: str = typer.Option(..., "--model", "-m"),
        root: Path = typer.Option(..., help="Folder holding images/<adj> <noun>/."),
        complete_text: bool = typer.Option(False, help='Condition "<adj> <noun>".'),
        seed: int = typer.Option(0), bootstrap: int = typer.Option(1000),
        workers: int = typer.Option(2, help=WORKERS_HELP), cache_dir: Path = typer.Option(None),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
        out: Path = typer.Option(Path("runs/mitstates"), "--out"),
    ) -> None:
        """MIT-States (GeneCIS protocol): Recall@1/5/10 of any image of the target state."""
        from condsim.benchmarks.mitstates import MitStatesConfig, evaluate_mitstates
        from condsim.progress import rich_progress

        cfg = MitStatesConfig(root=str(root), complete_text=complete_text, seed=seed,
                              n_bootstrap=bootstrap, num_workers=workers,
                              cache_dir=str(cache_dir) if cache_dir else None)
        with rich_progress() as progress:
            res = evaluate_mitstates(make_encoder(model, device, precision), cfg, out,
                                         progress=progress)
        _print_groups(f"MIT-States: {res.model['name']} (95% CI)", res.metrics, ("recall",))

    @eval_app.command("fashioniq")
    def eval_fashioniq(
        model: str = typer.Option(..., "--model", "-m"),
        root: Path = typer.Option(..., help="Folder with captions/, image_splits/, images/."),
        join: str = typer.Option("and", help='Caption joining: and ("c1 and c2") | dot '
                                 '("c1. c2") | first | clip4cir (CLIP4Cir\'s "C1 and c2").'),
        seed: int = typer.Option(0), bootstrap: int = typer.Option(1000),
        max_missing: int = typer.Option(0, help="Missing image files tolerated (skipped)."),
        workers: int = typer.Option(2, help=WORKERS_HELP), cache_dir: Path = typer.Option(None),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
        out: Path = typer.Option(Path("runs/fashioniq"), "--out"),
    ) -> None:
        """FashionIQ val: R@10/R@50 per category and their average."""
        from condsim.benchmarks.fashioniq import FashionIQConfig, evaluate_fashioniq
        from condsim.progress import rich_progress

        cfg = FashionIQConfig(root=str(root), join=join, seed=seed, n_bootstrap=bootstrap,
                              max_missing=max_missing, num_workers=workers,
                              cache_dir=str(cache_dir) if cache_dir else None)
        with rich_progress() as progress:
            res = evaluate_fashioniq(make_encoder(model, device, precision), cfg, out,
                                         progress=progress)
        for cat, m in res.metrics["categories"].items():
            console.print(f"{cat}: R@10 {m['recall']['10']['mean'] * 100:.2f}, "
                          f"R@50 {m['recall']['50']['mean'] * 100:.2f}")
        console.print(f"average: {res.headline['mean'] * 100:.2f} (join rule {join!r})")

    @synth_app.command("mitstates")
    def synth_mitstates(out: Path = typer.Option(..., "--out"), seed: int = typer.Option(0)
                        ) -> None:
        """Write a synthetic MIT-States folder."""
        from condsim.synthetic.mitstates import write_mitstates

        console.print(f"wrote {write_mitstates(out, seed=seed)}")

    @synth_app.command("fashioniq")
    def synth_fashioniq(out: Path = typer.Option(..., "--out"), seed: int = typer.Option(0)
                        ) -> None:
        """Write a synthetic FashionIQ (val) in the real layout."""
        from condsim.synthetic.fashioniq import write_fashioniq

        console.print(f"wrote {write_fashioniq(out, seed=seed)}")
