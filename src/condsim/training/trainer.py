"""A small, exact-resume contrastive trainer (single process or torchrun DDP).

A *task* turns batches of triplet indices into (query, target) embeddings; the trainer owns
the loop: seeded per-epoch permutations split into global batches (each rank takes a
contiguous slice, like ``DistributedSampler`` with a shared permutation), AdamW, cosine or
constant learning rate with warm-up, gradient accumulation, optional bf16/fp16 autocast on
GPU, checkpoints (weights as safetensors + optimizer/RNG/position in ``state.pt``) every
``ckpt_every`` steps and at each epoch end, exact resume after a kill, per-epoch validation
with best-checkpoint selection.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from condsim.distributed import collective_device, rank_world
from condsim.errors import CondsimError, ConfigError
from condsim.io import atomic_directory, remove_stale_temps
from condsim.training.losses import contrastive_loss

logger = logging.getLogger(__name__)


class ContrastiveTask(Protocol):
    """Supplies the training examples and how the model embeds them."""

    def __len__(self) -> int: ...

    def embed(
        self, model: torch.nn.Module, indices: np.ndarray, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(queries, targets)`` embeddings ``(len(indices), D)`` for these examples."""
        ...


def require_int(label: str, value: Any, low: int) -> None:
    """:class:`ConfigError` ``"<label> must be an integer >= <low>, got <value>"`` unless
    ``value`` is an int (not a bool) of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{label} must be an integer >= {low}, got {value!r}")


#: learning-rate schedules and mixed-precision modes of :class:`TrainConfig`
SCHEDULES = ("constant", "cosine")
AMP_MODES = ("auto", "none", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Hyper-parameters (recorded in ``train_config.json`` and every checkpoint)."""

    out_dir: str
    epochs: int = 6
    batch_size: int = 256  # global batch (all ranks together)
    lr: float = 1e-6
    weight_decay: float = 0.01
    schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    logit_scale: float = 100.0
    grad_accum: int = 1
    seed: int = 0
    ckpt_every: int = 0  # steps; 0 = only at epoch ends
    amp: str = "auto"  # auto (bf16 on CUDA) | none | bf16 | fp16
    max_steps: int = 0  # stop after this many steps (0 = all epochs); for tests and smoke runs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Every value checked here, before data or models load (and before a job is
        submitted): :class:`~condsim.errors.ConfigError` naming the field and its flag."""
        def label(name: str) -> str:
            return f"{name} (--{name.replace('_', '-')})"

        def bad(name: str, rule: str) -> ConfigError:
            return ConfigError(f"{label(name)} must be {rule}, got {getattr(self, name)!r}")

        for name in ("epochs", "batch_size", "grad_accum"):
            require_int(label(name), getattr(self, name), 1)
        for name in ("warmup_steps", "ckpt_every", "max_steps", "seed"):
            require_int(label(name), getattr(self, name), 0)
        for name in ("lr", "logit_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise bad(name, "a finite number > 0")
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not math.isfinite(wd) \
                or wd < 0:
            raise bad("weight_decay", "a finite number >= 0")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", " or ".join(SCHEDULES))
        if self.amp not in AMP_MODES:
            raise bad("amp", "one of " + ", ".join(AMP_MODES))
        if self.batch_size % self.grad_accum:
            raise ConfigError(f"batch size {self.batch_size} must be divisible by the gradient "
                              f"accumulation steps {self.grad_accum}")


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0  # optimizer steps done in the current epoch
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    losses: list[float] = field(default_factory=list)
    val_scores: list[float] = field(default_factory=list)
    #: processes of the run that wrote this state (torchrun / submitit tasks)
    world_size: int = 1


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shared, seeded order of examples for ``epoch``."""
    return np.random.default_rng([seed, epoch, 0xC0FFEE]).permutation(n)


def _lr_factor(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "cosine":
        span = max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    return 1.0


def _atomic_dir_write(final: Path, write: Callable[[Path], None]) -> None:
    """Rotate checkpoint directory ``final``: build the new one under a temporary name,
    then swap it in and delete the previous one (:func:`condsim.io.atomic_directory`).
    Temporaries left by a save that was killed midway are removed first (only rank 0
    saves, so nobody else can be writing them)."""
    remove_stale_temps(final)
    with atomic_directory(final, replace=True) as tmp:
        write(tmp)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        task: ContrastiveTask,
        cfg: TrainConfig,
        *,
        validate: Callable[[torch.nn.Module], float] | None = None,
        device: str | torch.device | None = None,
        save_model: Callable[[torch.nn.Module, Path], None] | None = None,
    ) -> None:
        self.rank, self.world = rank_world()
        if cfg.batch_size % (self.world * cfg.grad_accum):
            raise CondsimError(
                f"global batch {cfg.batch_size} must be divisible by world size {self.world} x "
                f"grad accumulation {cfg.grad_accum}"
            )
        if len(task) < cfg.batch_size:
            raise CondsimError(f"{len(task)} training examples < one batch of {cfg.batch_size}")
        self.cfg = cfg
        self.task = task
        self.validate = validate
        self.save_model = save_model
        self.device = torch.device(device) if device else torch.device(
            "cuda" if torch.cuda.is_available() else "cpu")
        self.out = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)
        self.model = model.to(self.device)
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = len(task) // cfg.batch_size
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.state = TrainState()
        amp = cfg.amp
        if amp == "auto":
            amp = "bf16" if self.device.type == "cuda" else "none"
        self.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    # -- checkpoints ---------------------------------------------------------------------
    def _save(self, name: str) -> None:
        if self.rank != 0:
            return
        state = {
            "train_state": asdict(self.state),
            "optimizer": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": asdict(self.cfg),
        }

        def write(d: Path) -> None:
            model = _unwrap(self.model)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(d / "model.safetensors"))
            torch.save(state, d / "state.pt")
            # the same progress, readable: epoch, step, losses, validation scores, best epoch
            (d / "trainer_state.json").write_text(json.dumps(state["train_state"], indent=1))
            if self.save_model is not None:
                self.save_model(model, d)

        _atomic_dir_write(self.out / name, write)

    def resume(self) -> bool:
        """Load ``out_dir/last`` when present; returns whether training resumes."""
        ckpt = self.out / "last"
        if not (ckpt / "state.pt").is_file():
            return False
        weights = load_file(str(ckpt / "model.safetensors"), device=str(self.device))
        _unwrap(self.model).load_state_dict(weights)
        state = torch.load(ckpt / "state.pt", weights_only=False, map_location=self.device)
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.state = TrainState(**state["train_state"])
        logger.info("resumed at epoch %d step %d", self.state.epoch, self.state.step_in_epoch)
        return True

    # -- loop ----------------------------------------------------------------------------
    def _step(self, batch_idx: np.ndarray) -> float:
        cfg = self.cfg
        local = np.array_split(batch_idx, self.world)[self.rank]
        micro = np.array_split(local, cfg.grad_accum)
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for part in micro:
            with torch.autocast(self.device.type, dtype=self.amp_dtype,
                                enabled=self.amp_dtype is not None):
                q, t = self.task.embed(self.model, part, self.device)
                loss = contrastive_loss(q, t, cfg.logit_scale) / cfg.grad_accum
            if not torch.isfinite(loss):
                raise CondsimError(f"non-finite loss at step {self.state.global_step}")
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            total += float(loss.detach()) / self.world
        factor = _lr_factor(cfg, self.state.global_step, self.total_steps)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * factor
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        return total

    def _validated(self) -> float:
        """The validation score, computed on rank 0 only and shared with the other ranks
        (every rank needs it for best-epoch bookkeeping; computing it once saves N-1
        redundant evaluations)."""
        score = float("nan")
        if self.rank == 0:
            from condsim.distributed import single_process

            self.model.eval()
            # rank 0 alone: the benchmark must not shard over (and wait for) the other ranks
            with torch.no_grad(), single_process():
                score = float(self.validate(_unwrap(self.model)))  # type: ignore[misc]
        if self.world > 1:
            box = torch.tensor([score], dtype=torch.float64, device=collective_device())
            dist.broadcast(box, src=0)
            score = float(box.item())
        return score

    def fit(self, progress: Callable[[int], None] | None = None) -> TrainState:
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
        st = self.state
        st.world_size = self.world
        while st.epoch < cfg.epochs:
            order = epoch_permutation(cfg.seed, st.epoch, len(self.task))
            self.model.train()
            while st.step_in_epoch < self.steps_per_epoch:
                if cfg.max_steps and st.global_step >= cfg.max_steps:
                    self._save("last")
                    return st
                b = st.step_in_epoch * cfg.batch_size
                loss = self._step(order[b:b + cfg.batch_size])
                st.losses.append(loss)
                st.step_in_epoch += 1
                st.global_step += 1
                if progress is not None:
                    progress(1)
                if cfg.ckpt_every and st.global_step % cfg.ckpt_every == 0:
                    self._save("last")
            st.epoch += 1
            st.step_in_epoch = 0
            if self.validate is not None:
                score = self._validated()
                st.val_scores.append(score)
                logger.info("epoch %d: validation %.4f", st.epoch, score)
                if score > st.best_score:
                    st.best_score, st.best_epoch = score, st.epoch
                    self._save("best")
            self._save("last")
        return st
