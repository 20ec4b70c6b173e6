"""``condsim synth <dataset>``: small synthetic datasets in each benchmark's real file format.

Datasets with their own options are written by the commands below; every other registered
benchmark gets ``condsim synth <name> --out DIR [--seed N]`` from its spec's writer.
"""

from __future__ import annotations

from pathlib import Path

import typer

from condsim.cli.common import console


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
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

    @synth_app.command("cirr")
    def synth_cirr(out: Path = typer.Option(..., "--out"),
                   queries: int = typer.Option(40, help="Queries of val and of test1."),
                   train_queries: int = typer.Option(200, help="Queries of train."),
                   seed: int = typer.Option(0)) -> None:
        """Write a synthetic CIRR (val, test1, train) in the real layout."""
        from condsim.synthetic.cirr import write_cirr

        path = write_cirr(out, n_queries=queries, n_train=train_queries, seed=seed)
        console.print(f"wrote {path}")

    @synth_app.command("circo")
    def synth_circo(out: Path = typer.Option(..., "--out"),
                    queries: int = typer.Option(30), seed: int = typer.Option(0)) -> None:
        """Write a synthetic CIRCO (val + test) in the real layout."""
        from condsim.synthetic.circo import write_circo

        console.print(f"wrote {write_circo(out, n_queries=queries, seed=seed)}")

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

    from condsim.registry import list_benchmarks

    own = {c.name for c in synth_app.registered_commands}
    for spec in list_benchmarks():
        if spec.name not in own:
            synth_app.command(spec.name)(_generic(spec))


def _generic(spec: object) -> object:
    def synth(out: Path = typer.Option(..., "--out", help="Output folder."),
              seed: int = typer.Option(0, help="Seed of the generator.")) -> None:
        fields = spec.synthetic(out, seed)  # type: ignore[attr-defined]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in fields.items())
        console.print(f"wrote {out}: condsim eval {spec.name} {flags}")  # type: ignore

    synth.__doc__ = f"Write a small synthetic {spec.name} set in its real layout."  # type: ignore
    return synth
