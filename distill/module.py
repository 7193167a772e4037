"""``DistillModule``: an MNv4 student learning from a frozen teacher (or from labels).

One ``_step`` serves training and validation. Offline mode reads the teacher's stored soft labels
from the batch (the paper's recipe); online mode mixes the batch (extreme mixup) and asks the
teacher for labels on exactly the tensor the student sees (function matching); hybrid mode asks
the teacher for the batch's first ``n_live`` samples only and reads the others' stored labels.
Optional terms: ground-truth cross-entropy and feature distillation on the 1280-d pre-logits
(timm's ``forward_head(pre_logits=True)``, not the 960-d ``num_features``) through a learned
projection. Batches arrive as uint8 images; normalisation, channels_last and mixing happen on the
device in ``on_after_batch_transfer``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

import students
from common.norm import IMAGENET_MEAN, IMAGENET_STD, normalize, to_unit
from common.schedule import warmup_cosine
from data.augment import extreme_mixup
from data.batch_decode import decode_batch
from distill.compiling import compile_models, compiled_graphs
from distill.config import (
    LIVE_TEACHER_MODES,
    MODES,
    EmaConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    as_dict,
    section,
)
from distill.holder import TeacherHolder
from distill.losses import kd_loss, kd_params, soften
from distill.skips import TrainingSkips
from distill.teacher_cost import TeacherCost, cost_summary
from teachers import FrozenTeacher

log = logging.getLogger(__name__)


def ema_update(decay: float, warmup: bool = True):
    """``multi_avg_fn`` for ``AveragedModel``: EMA whose decay ramps up as (1 + n) / (10 + n).

    Without the ramp a short run's EMA is mostly its random initialisation (0.999^300 = 0.74);
    with it the average starts close to the weights and lengthens its horizon as training runs
    (timm's ModelEmaV3 warm-up). Integer buffers (BN counters) are copied.
    """

    def update(ema: list[torch.Tensor], current: list[torch.Tensor], n_averaged) -> None:
        n = int(n_averaged)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        if ema[0].is_floating_point():
            torch._foreach_lerp_(ema, current, 1.0 - d)
        else:
            torch._foreach_copy_(ema, current)

    return update


def _accuracy(num_classes: int, k: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=num_classes, top_k=min(k, num_classes), average="micro")


class DistillModule(L.LightningModule):
    """Student + (unregistered) frozen teacher.

    Args:
        student: MNv4 name (``students.list_models()``).
        num_classes: classes of the dataset (and the teacher).
        teacher: a ``FrozenTeacher``; required for online mode and feature distillation.
        mode: ``"offline"`` (stored labels), ``"online"`` (teacher in the loop), ``"hybrid"``
            (the teacher labels the batch's live samples, stored labels the rest) or
            ``"labels"`` (ground truth only: the from-labels baseline).
        loss, optimizer, schedule, model, ema: the config sections of the same names
            (``distill.config``: ``LossConfig``... or mappings with exactly their keys); every
            value comes from conf/ (``distill.config.module_sections``), none is defaulted here.
        mean, std: the student's input normalisation.
    """

    def __init__(
        self,
        student: str,
        num_classes: int,
        teacher: FrozenTeacher | None = None,
        *,
        mode: str,
        loss: LossConfig | Mapping,
        optimizer: OptimizerConfig | Mapping,
        schedule: ScheduleConfig | Mapping,
        model: ModelConfig | Mapping,
        ema: EmaConfig | Mapping,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.loss_cfg = section(LossConfig, loss)
        self.kd_params = kd_params(self.loss_cfg)  # a bad kind or an unset weight fails here
        self.optim_cfg = section(OptimizerConfig, optimizer)
        self.sched_cfg = section(ScheduleConfig, schedule)
        model_cfg, ema_cfg = section(ModelConfig, model), section(EmaConfig, ema)
        # plain containers only: resume loads checkpoints with weights_only=True
        self.save_hyperparameters(
            {
                "student": student,
                "num_classes": num_classes,
                "mode": mode,
                **{k: as_dict(v) for k, v in self._sections(model_cfg, ema_cfg).items()},
                "mean": tuple(mean),
                "std": tuple(std),
            }
        )
        self.compile_student, self.compile_mode = model_cfg.compile, model_cfg.compile_mode
        self.student = students.create_model(
            student,
            num_classes=num_classes,
            drop_rate=model_cfg.drop_rate,
            drop_path_rate=model_cfg.drop_path_rate,
            channels_last=model_cfg.channels_last,
        )
        self.holder = TeacherHolder(teacher)
        self._check_teacher(teacher, num_classes)
        self.projection = self._make_projection(teacher)
        self.ema = self._make_ema(ema_cfg)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._make_metrics(num_classes)
        self.skips = TrainingSkips()
        self._tick: float | None = None
        self._first_step: float | None = None
        self.compile_seconds: float | None = None  # the first step's time, when compiling
        self.cost = TeacherCost()
        self._cost_all_ranks: dict | None = None

    def _sections(self, model: ModelConfig, ema: EmaConfig) -> dict:
        return {
            "loss": self.loss_cfg,
            "optimizer": self.optim_cfg,
            "schedule": self.sched_cfg,
            "model": model,
            "ema": ema,
        }

    def _check_teacher(self, teacher: FrozenTeacher | None, num_classes: int) -> None:
        if self.mode in LIVE_TEACHER_MODES and not teacher:
            raise ValueError(f"{self.mode} distillation needs a teacher")
        if teacher is not None and teacher.num_classes != num_classes:
            raise ValueError(
                f"teacher {teacher.info.spec} has {teacher.num_classes} classes but the student "
                f"and data have {num_classes}"
            )

    def _make_projection(self, teacher: FrozenTeacher | None) -> nn.Linear | None:
        """Feature distillation: the student's 1280-d pre-logits -> the teacher's width."""
        if self.loss_cfg.feature_weight <= 0:
            return None
        if teacher is None or self.mode != "online":
            raise ValueError("feature distillation needs the online teacher (mode=online)")
        return nn.Linear(self.student.head_hidden_size, teacher.pre_logits_dim())

    def _make_ema(self, ema: EmaConfig) -> AveragedModel | None:
        """The student-only EMA (``decay`` 0: none)."""
        if ema.decay <= 0:
            return None
        averaged = AveragedModel(
            self.student,
            multi_avg_fn=ema_update(float(ema.decay), bool(ema.warmup)),
            use_buffers=True,
        )
        averaged.requires_grad_(False)
        return averaged

    def _make_metrics(self, num_classes: int) -> None:
        metrics = {"top1": _accuracy(num_classes, 1), "top5": _accuracy(num_classes, 5)}
        self.val_metrics = MetricCollection(metrics, prefix="val/")
        self.val_ema = self.val_metrics.clone(prefix="val/ema_") if self.ema is not None else None
        self.val_agree = MeanMetric()
        self.val_kl = MeanMetric()

    # -- teacher placement -----------------------------------------------------------------
    @property
    def teacher(self) -> FrozenTeacher | None:
        return self.holder.to(self.device)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.compiles():
            compile_models(self._compiled_models(), self.compile_mode)

    def compiles(self) -> bool:
        """``model.compile``, where null means: on when training on CUDA."""
        if self.compile_student is not None:
            return bool(self.compile_student)
        return self.trainer.strategy.root_device.type == "cuda"

    def _compiled_models(self) -> list[nn.Module]:
        models = [self.student]
        if self.mode in LIVE_TEACHER_MODES and self.holder:
            models += list(self.holder.teacher.members)
        return models

    # -- batches -------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """``data.decode=gpu``: decode the batch's JPEG bytes on this device (nvJPEG on CUDA).
        Hybrid batches: the count of live samples (the first ones), read while on the CPU."""
        if "live" in batch:
            batch["n_live"] = int(batch.pop("live").sum())
        return decode_batch(batch, self.device)

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """uint8 images -> [0, 1] floats (``view``) -> normalised student input (``image``)."""
        view = to_unit(batch["image"])
        if self.training and self.mode == "online":
            view, batch["mix_weight"] = extreme_mixup(view, self.loss_cfg.mixup_alpha)
        batch["view"] = view
        x = normalize(view, self.mean, self.std)
        if self.student.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        batch["image"] = x
        return batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)

    def _targets(self, batch: dict) -> torch.Tensor | None:
        """Teacher probabilities for this batch: stored (offline), computed now (online) or both
        (hybrid: the teacher sees the first ``n_live`` views only)."""
        t = self.loss_cfg.temperature

        def live(views: torch.Tensor) -> torch.Tensor:
            return self.cost.teacher(lambda x: self.teacher.probs(x, t), views)

        if self.mode == "online" or ("soft" not in batch and self.teacher is not None):
            return live(batch["view"])
        soft = batch.get("soft")
        if soft is None:
            return None
        if self.mode == "hybrid":
            n = batch["n_live"]
            # stored T=1 probabilities re-softened: p^(1/T), top-k zeros kept
            return torch.cat([live(batch["view"][:n]), soften(soft[n:], t)])
        return soften(soft, t)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        cfg = self.loss_cfg
        probs = target_features = None
        if self.projection is not None:  # one student and one teacher forward give both terms
            pre = self.student.forward_head(
                self.student.forward_features(batch["image"]), pre_logits=True
            )
            logits = self.student.classify(pre)
            probs, target_features = self.cost.teacher(
                lambda x: self.teacher.probs_and_pre_logits(x, cfg.temperature), batch["view"]
            )
        else:
            logits = self.student(batch["image"])
        loss = torch.zeros((), device=self.device)
        if self.mode != "labels" and cfg.kd_weight > 0:
            if probs is None:
                probs = self._targets(batch)
            loss_kd = kd_loss(
                cfg.kind,
                logits,
                probs,
                cfg.temperature,
                labels=batch["label"],
                standardize=cfg.standardize,
                **self.kd_params,
            )
            loss = loss + cfg.kd_weight * loss_kd
            self.log("train/loss_kd", loss_kd)
        gt_weight = 1.0 if self.mode == "labels" else cfg.gt_weight
        if gt_weight > 0:
            known = batch["label"] >= 0
            if known.any():
                loss_gt = F.cross_entropy(
                    logits[known].float(),
                    batch["label"][known],
                    label_smoothing=cfg.label_smoothing,
                )
                loss = loss + gt_weight * loss_gt
                self.log("train/loss_gt", loss_gt)
        if target_features is not None:
            loss_feat = F.mse_loss(self.projection(pre.float()), target_features)
            loss = loss + cfg.feature_weight * loss_feat
            self.log("train/loss_feature", loss_feat)
        self.skips.update(batch.get("skipped", []))
        self.log("train/loss", loss, prog_bar=True)
        self.log("data/skipped_total", float(self.skips.count), on_step=True, on_epoch=False)
        return loss

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        if self._first_step is None and self.compiles():
            self._first_step = time.perf_counter()
        self.cost.step_started(self.device)

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        self.cost.step_ended(batch["image"].shape[0])
        now = time.perf_counter()
        if self._first_step is not None and self.compile_seconds is None:
            self.compile_seconds = now - self._first_step
            log.info(
                "first training step %.1f s, compiling included (%d graphs so far)",
                self.compile_seconds,
                compiled_graphs(),
            )
        if self._tick is not None:
            images = batch["image"].shape[0] * self.trainer.world_size
            self.log("train/images_per_s", images / (now - self._tick), prog_bar=True)
        self._tick = now
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.student)  # once per real optimizer step

    def skipped_summary(self) -> dict:
        """Distinct training samples and shards skipped (every rank's, once fit ended): count and
        the first reasons (``distill.skips``)."""
        return self.skips.summary()

    def teacher_cost(self) -> dict:
        """The live teacher's share of samples and step time (``distill.teacher_cost``): all
        ranks once fit ended, this rank before."""
        return cost_summary(self._cost_all_ranks or self.cost.state())

    def on_fit_end(self) -> None:
        self.skips.merge_ranks()
        reduce = self.trainer.strategy.reduce
        state = self.cost.state()
        mine = torch.tensor(list(state.values()), dtype=torch.float64, device=self.device)
        totals = reduce(mine, reduce_op="sum")
        self._cost_all_ranks = dict(zip(state, totals.tolist(), strict=True))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["skipped"] = self.skips.state()  # a resumed run keeps counting
        checkpoint["teacher_cost"] = self.cost.state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.skips.load(checkpoint.get("skipped") or {})
        if "teacher_cost" in checkpoint:
            self.cost.load(checkpoint["teacher_cost"])

    def on_train_epoch_start(self) -> None:
        self._tick = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.student(batch["image"])
        labels = batch["label"]
        known = labels >= 0
        if known.any():
            self.val_metrics.update(logits[known], labels[known])
            if self.val_ema is not None:
                self.val_ema.update(self.ema(batch["image"])[known], labels[known])
        teacher_probs = batch.get("soft")
        if teacher_probs is None and self.teacher is not None:
            teacher_probs = self.teacher.probs(batch["view"])
        if teacher_probs is not None:
            self.val_agree.update((logits.argmax(1) == teacher_probs.argmax(1)).float())
            log_p = F.log_softmax(logits.float(), dim=-1)
            kl = F.kl_div(log_p, teacher_probs.float(), reduction="none").sum(-1)
            self.val_kl.update(kl)

    def on_validation_epoch_end(self) -> None:
        # computed metrics are already synchronised across ranks; sync_dist=True says so to
        # Lightning (its warning otherwise) and averages identical values
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()
        if self.val_ema is not None:
            self.log_dict(self.val_ema.compute(), sync_dist=True)
            self.val_ema.reset()
        if self.val_agree.update_count:
            self.log("val/agree_top1", self.val_agree.compute(), sync_dist=True)
            self.log("val/kl", self.val_kl.compute(), sync_dist=True)
        self.val_agree.reset()
        self.val_kl.reset()

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.optim_cfg
        modules = nn.ModuleList([self.student] + ([self.projection] if self.projection else []))
        groups = param_groups_weight_decay(modules, cfg.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.sched_cfg.warmup_steps
        if warmup is None:
            warmup = int(self.sched_cfg.warmup_fraction * total)
        scheduler = warmup_cosine(optimizer, int(warmup), total, self.sched_cfg.min_lr_ratio)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
