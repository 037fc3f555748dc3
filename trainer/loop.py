"""The training loop: build and shard the model, train with checkpoints, evaluate.

Every rank runs the same loop over its own share of the samples; collectives keep
them in step (the sharded embeddings' all-to-alls, DDP's all-reduce, and one small
all-reduce per step carrying the loss and a non-finite flag).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.keyed import CombinedOptimizer

from recplane.api.trainjob import TrainJobSpec

from .checkpoint import CheckpointInfo, Checkpoints
from .data import Batch, SampleData, prefetch
from .dist import DistContext
from .errors import NonFiniteLossError, TrainError
from .evaluate import BinaryMetrics
from .models import ModelInputs, TrainModule, build_model
from .optim import (
    SPARSE_FUSED,
    Schedule,
    attach_sparse_optimizer,
    build_optimizer,
    clip_dense_gradients,
    dense_parameters,
    lr_factor,
)
from .precision import bf16_is_fast, training_autocast
from .sharding import (
    Table,
    describe_plan,
    embedding_tables,
    format_plan,
    is_replicated,
    plan_sharding,
    shard_model,
)
from .telemetry import TrainTelemetry
from .weights import average_buffers, init_embeddings, load_unsharded


@dataclass
class TrainSummary:
    steps: int
    epochs_done: float
    samples: int
    seconds: float
    resumed_from: int | None
    final_loss: float | None
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """One TrainJob's model on this rank, from initialisation to validation metrics."""

    def __init__(
        self,
        ctx: DistContext,
        spec: TrainJobSpec,
        inputs: ModelInputs,
        data: SampleData,
        telemetry: TrainTelemetry,
        checkpoints: Checkpoints | None,
    ) -> None:
        self.ctx = ctx
        self.spec = spec
        self.inputs = inputs
        self.data = data
        self.telemetry = telemetry
        self.checkpoints = checkpoints
        opt = spec.optimization
        if opt.batch_size < ctx.world_size:
            raise TrainError(
                "spec.optimization.batchSize",
                f"the global batch of {opt.batch_size} rows cannot be split over {ctx.world_size} processes; "
                f"use at least {ctx.world_size}",
            )
        self.batch_size = opt.batch_size // ctx.world_size
        # Full batches only: a last, smaller batch would skew batch-norm statistics (or break them at 1 row).
        self.steps_per_epoch = data.rows_per_rank("train", ctx.world_size) // self.batch_size
        if self.steps_per_epoch == 0:
            rows = data.rows_per_rank("train", 1)
            raise TrainError(
                "spec.optimization.batchSize",
                f"SampleSet {data.samples.name} version {data.samples.version} has {rows} training rows, fewer than "
                f"one global batch of {opt.batch_size}; lower batchSize or use more data",
            )
        total = self.steps_per_epoch * opt.epochs
        self.total_steps = min(total, opt.max_steps) if opt.max_steps else total
        self.dmp: DistributedModelParallel
        self.optimizer: CombinedOptimizer
        self.schedule: Schedule
        self.tables: list[Table] = []
        self.plan: dict[str, Any] = {}

    # ---- model ------------------------------------------------------------------------
    def build(self, warm_start: dict[str, torch.Tensor] | None = None) -> None:
        """Build, shard and initialise the model and its optimisers (collective)."""
        spec = self.spec
        torch.manual_seed(spec.optimization.seed)
        model = build_model(spec.model, self.inputs, spec.optimization.embedding_precision, device=torch.device("meta"))
        module = TrainModule(model)
        if not is_replicated(spec.distributed.sharding):
            if spec.optimization.sparse_optimizer == "adam" and self.ctx.device.type != "cuda":
                raise TrainError(
                    "spec.optimization.sparseOptimizer",
                    "the fused adam embedding optimiser runs only on GPUs (FBGEMM's CPU kernels support row-wise "
                    "Adagrad and SGD); use rowwise_adagrad or sgd on CPU, or distributed.sharding data_parallel",
                )
            attach_sparse_optimizer(module, spec.optimization)
        self.tables = embedding_tables(module)
        plan = plan_sharding(module, spec.distributed.sharding, self.ctx, self.batch_size)
        self.plan = describe_plan(plan, self.tables, self.ctx.world_size)
        self.telemetry.log(
            f"sharding plan ({spec.distributed.sharding}, {self.ctx.world_size} processes):\n{format_plan(self.plan)}"
        )
        self.dmp = shard_model(module, plan, self.ctx)
        if warm_start is not None:
            load_unsharded(self.dmp, warm_start)
        else:
            init_embeddings(self.dmp, spec.optimization.seed)
        self.optimizer = build_optimizer(self.dmp, spec.optimization)
        self.schedule = Schedule(self.optimizer, lr_factor(spec.optimization, self.total_steps))
        self._dense = dense_parameters(self.dmp)

    def _state(self) -> dict[str, Any]:
        return {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}

    def _resume(self) -> CheckpointInfo | None:
        if self.checkpoints is None:
            return None
        info = self.checkpoints.latest()
        if info is None:
            dropped = self.checkpoints.discard_foreign()
            if dropped:
                self.telemetry.log(f"removed checkpoints of an earlier spec or input: {', '.join(dropped)}")
            return None
        # Optimiser state is created lazily; make it exist so DCP can load into it in place.
        for key, part in self.optimizer.optimizers:
            if key != SPARSE_FUSED:
                part.init_state()
        state = self._state()
        self.checkpoints.load(info, state)
        self.dmp.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        self.telemetry.log(f"resumed from checkpoint {info.name} (epoch {info.epoch}, batch {info.batch_in_epoch})")
        return info

    def _save(self, step: int, epoch: int, batch_in_epoch: int, samples: int, fingerprint: str) -> None:
        assert self.checkpoints is not None
        if batch_in_epoch >= self.steps_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
        average_buffers(self.dmp, self.ctx)
        info = CheckpointInfo(step, epoch, batch_in_epoch, samples, self.ctx.world_size, fingerprint)
        self.checkpoints.save(info, self._state())
        self.telemetry.log(f"checkpoint {info.name} stored")

    # ---- training ---------------------------------------------------------------------
    def _forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x = batch.inputs.to(self.ctx.device)
        if x.labels is None:
            raise TrainError("spec.featureSetRef", "the samples have no label column; training needs labels")
        dev = self.ctx.device
        return self.dmp(
            x.sparse,
            x.dense,
            x.labels,
            x.weights,
            None if batch.item_ids is None else batch.item_ids.to(dev),
            None if batch.log_q is None else batch.log_q.to(dev),
        )

    def train(self) -> TrainSummary:
        resumed = self._resume()
        fingerprint = self.checkpoints.fingerprint if self.checkpoints else ""
        step = resumed.step if resumed else 0
        epoch = resumed.epoch if resumed else 0
        skip = resumed.batch_in_epoch if resumed else 0
        samples = resumed.samples if resumed else 0
        every = self.spec.checkpoint.every_steps
        self.telemetry.total_steps = self.total_steps
        self.telemetry.log(
            f"training {self.spec.model.type}: {self.total_steps} steps of {self.batch_size} rows x "
            f"{self.ctx.world_size} processes ({self.steps_per_epoch} steps per epoch)"
        )
        precision = self.spec.optimization.dense_precision
        if precision == "bf16" and not bf16_is_fast(self.ctx.device):
            self.telemetry.log(
                f"note: densePrecision bf16 on a {self.ctx.device.type} without bf16 matrix units is emulated "
                "and slower than fp32"
            )
        self.dmp.train()
        started, checkpoint_seconds, new_samples, first_step = time.perf_counter(), 0.0, 0, step
        losses: list[tuple[int, float]] = []
        loss_value: float | None = None
        while step < self.total_steps and epoch < self.spec.optimization.epochs:
            batch_in_epoch = skip
            batches = self.data.batches("train", self.batch_size, self.ctx.rank, self.ctx.world_size, skip=skip)
            for batch, _ in prefetch(batches):
                if step >= self.total_steps or batch_in_epoch >= self.steps_per_epoch:
                    break
                self.schedule.apply(step)
                self.optimizer.zero_grad()
                with training_autocast(precision, self.ctx.device):
                    loss, _ = self._forward(batch)
                loss_value = self._check_finite(loss, step)
                loss.backward()
                clip_dense_gradients(self._dense, self.spec.optimization.gradient_clip_norm)
                self.optimizer.step()
                step += 1
                batch_in_epoch += 1
                rows = batch.rows * self.ctx.world_size
                samples += rows
                new_samples += rows
                losses.append((step, loss_value))
                elapsed = time.perf_counter() - started - checkpoint_seconds
                self.telemetry.progress(
                    step,
                    loss_value,
                    new_samples / max(elapsed, 1e-9),
                    elapsed,
                    done=step - first_step,
                    force=step == self.total_steps,
                )
                if self.checkpoints is not None and step % every == 0 and step < self.total_steps:
                    t0 = time.perf_counter()
                    self._save(step, epoch, batch_in_epoch, samples, fingerprint)
                    checkpoint_seconds += time.perf_counter() - t0
            epoch += 1
            skip = 0
        seconds = time.perf_counter() - started - checkpoint_seconds
        average_buffers(self.dmp, self.ctx)
        return TrainSummary(
            steps=step,
            epochs_done=step / self.steps_per_epoch,
            samples=new_samples,
            seconds=seconds,
            resumed_from=resumed.step if resumed else None,
            final_loss=loss_value,
            losses=losses,
        )

    def _check_finite(self, loss: torch.Tensor, step: int) -> float:
        """Mean loss over ranks; stops every rank together before a non-finite loss reaches the weights."""
        local = loss.detach().float()
        bad = ~torch.isfinite(local)
        stats = torch.stack([torch.where(bad, torch.zeros_like(local), local), bad.float()]).to(self.ctx.device)
        dist.all_reduce(stats)
        if stats[1].item() > 0:
            last = self.checkpoints.complete()[-1].name if self.checkpoints and self.checkpoints.complete() else None
            kept = f"the last good checkpoint ({last}) is kept" if last else "no checkpoint had been written yet"
            raise NonFiniteLossError(
                "spec.optimization",
                f"the loss became NaN or infinite at step {step + 1} (on {int(stats[1].item())} of "
                f"{self.ctx.world_size} processes); training stopped before the update and {kept}. "
                "Lower learningRate / sparseLearningRate, set gradientClipNorm, turn on batchNorm, "
                "or check the dense features for extreme values",
            )
        return float(stats[0].item()) / self.ctx.world_size

    # ---- evaluation -------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float | None]:
        """AUC and logloss on the validation split, every rank its share, gathered by torchmetrics."""
        if self.data.rows_per_rank("validation", self.ctx.world_size) == 0:
            self.telemetry.log("no validation rows: metrics are left empty")
            return {"auc": None, "logloss": None}
        metrics = BinaryMetrics(sync=True, device=self.ctx.device)
        self.dmp.eval()
        for batch, _ in prefetch(self.data.batches("validation", self.batch_size, self.ctx.rank, self.ctx.world_size)):
            _, logits = self._forward(batch)
            assert batch.inputs.labels is not None
            metrics.update(logits, batch.inputs.labels, batch.inputs.weights)
        self.dmp.train()
        result = metrics.compute()
        self.telemetry.evaluated(result["auc"])
        return result
