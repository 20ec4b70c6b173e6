"""``condsim eval genecis`` and ``condsim synth genecis``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from condsim.cli.common import DEVICE_HELP, PRECISION_HELP, WORKERS_HELP, console, make_encoder


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    @eval_app.command("genecis")
    def eval_genecis(
        model: str = typer.Option(..., "--model", "-m", help="Model name (see `condsim models`)."),
        annotations: Path = typer.Option(
            ..., help="Folder with focus_attribute.json, change_attribute.json, "
            "focus_object.json, change_object.json."),
        coco_root: Path = typer.Option(None, help="COCO 2017 val images (%012d.jpg)."),
        vg_root: list[Path] = typer.Option(
            [], help="Visual Genome image folder(s) (<image_id>.jpg); repeat for VG_100K_2."),
        tasks: str = typer.Option(
            "focus_attribute,change_attribute,focus_object,change_object", help="Tasks to run."),
        crop: str = typer.Option(
            "official", help="official (GeneCIS crop: dilation towards left/top) | centered."),
        seed: int = typer.Option(0, help="Seed of the bootstrap CIs."),
        bootstrap: int = typer.Option(1000, help="Bootstrap resamples for CIs."),
        max_missing: int = typer.Option(0, help="Missing image files tolerated (skipped)."),
        max_bad_boxes: int = typer.Option(
            0, help="Instance boxes less than half inside their image tolerated (their "
            "queries are skipped)."),
        on_duplicate: str = typer.Option(
            "drop", help="A gallery entry repeating the target or another entry: drop (either "
            "copy is correct; the published change_object.json has one) | error."),
        out: Path = typer.Option(Path("runs/genecis"), "--out", help="Output directory."),
        batch_size: int = typer.Option(64),
        workers: int = typer.Option(2, help=WORKERS_HELP),
        cache_dir: Path = typer.Option(None, help="Embedding cache directory."),
        device: str = typer.Option(None, help=DEVICE_HELP),
        precision: str = typer.Option("auto", help=PRECISION_HELP),
    ) -> None:
        """Evaluate MODEL on GeneCIS: tie-safe R@1/2/3 per task with bootstrap CIs and the
        average R@1 headline; every unique image/crop is encoded once."""
        from condsim.benchmarks.genecis import GenecisConfig, evaluate_genecis, task_table_rows
        from condsim.progress import rich_progress

        cfg = GenecisConfig(
            annotations=str(annotations), coco_root=str(coco_root) if coco_root else None,
            vg_roots=tuple(str(p) for p in vg_root),
            tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()), crop=crop,
            seed=seed, n_bootstrap=bootstrap, max_missing=max_missing, on_duplicate=on_duplicate,
            max_bad_boxes=max_bad_boxes,
            batch_size=batch_size, num_workers=workers,
            cache_dir=str(cache_dir) if cache_dir else None,
        )
        encoder = make_encoder(model, device, precision)
        with rich_progress() as progress:
            result = evaluate_genecis(encoder, cfg, out, progress=progress)
        table = Table(title=f"GeneCIS: {result.model['name']} (95% CI)")
        table.add_column("task", no_wrap=True)
        for col in ("queries", "R@1", "R@2", "R@3"):
            table.add_column(col, justify="right")
        for row in task_table_rows(result):
            table.add_row(*row)
        console.print(table)
        h = result.headline
        p = result.protocol["encoder_passes"]
        console.print(f"encoder passes: {p['unique']:,} unique images/crops/queries vs "
                      f"{p['per_query_loop']:,} for a per-query loop ({p['ratio']:.1f}x fewer); "
                      f"{p['encoded_now']:,} encoded now (rest from the cache)")
        console.print(f"average R@1: {h['mean'] * 100:.2f} [{h['ci_low'] * 100:.2f}, "
                      f"{h['ci_high'] * 100:.2f}]; wrote {out / 'results.json'}")

    @synth_app.command("genecis")
    def synth_genecis(
        out: Path = typer.Option(..., "--out", help="Output folder."),
        per_task: int = typer.Option(50, help="Templates per task."),
        gallery_size: int = typer.Option(15, help="Candidates per template (target included)."),
        seed: int = typer.Option(0),
    ) -> None:
        """Write a synthetic GeneCIS set (COCO/VG-style images + the four task JSONs)."""
        from condsim.synthetic.genecis import write_genecis

        path = write_genecis(out, n_per_task=per_task, gallery_size=gallery_size, seed=seed)
        console.print(
            f"wrote {path}: --annotations {path / 'annotations'} --coco-root "
            f"{path / 'coco' / 'val2017'} --vg-root {path / 'vg' / 'VG_100K'} "
            f"--vg-root {path / 'vg' / 'VG_100K_2'}"
        )
