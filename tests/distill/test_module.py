"""DistillModule on real shards with a real trainer: offline, online, teacher isolation, resume."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from data.datamodule import DistillDataModule
from data.teacher_setup import teacher_from_config
from distill.config import module_kwargs
from distill.module import DistillModule
from teachers.preprocess import to_model_input

from .conftest import compose_train

pytestmark = pytest.mark.slow  # every test here is a real Lightning fit


@pytest.fixture(scope="module")
def cfg(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("module_out")
    return OmegaConf.to_object(compose_train(["+student=mnv4_conv_s", *tiny_cache], out))


def _dm(cfg, mode="offline", batch=16):
    d = cfg.data
    return DistillDataModule(
        d.root,
        d.train_sets,
        "val",
        batch_size=batch,
        num_workers=0,
        samples_per_epoch=batch * 6,
        mode=mode,
        online=d.online,
        shuffle_buffer=2 * batch,  # the default 1000 decodes the tiny sets many times over first
    )


def _trainer(tmp_path, steps, **kw):
    kw = {"limit_val_batches": 2, **kw}
    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kw,
    )


def test_offline_training_moves_the_student_and_logs_distillation_metrics(cfg, tmp_path):
    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs(ema={"decay": 0.9}))
    before = {k: v.clone() for k, v in module.student.state_dict().items()}
    trainer = _trainer(tmp_path, 6, enable_checkpointing=False)
    trainer.fit(module, datamodule=_dm(cfg))
    m = trainer.callback_metrics
    assert {"train/loss_kd", "val/top1", "val/ema_top1", "val/agree_top1", "val/kl"} <= set(m)
    assert torch.isfinite(m["train/loss"])
    changed = [k for k, v in module.student.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    ema_w = module.ema.module.conv_stem.weight
    assert not torch.equal(ema_w, module.student.conv_stem.weight)  # an average, not a copy


def test_online_teacher_and_student_receive_the_same_mixed_tensor(cfg, tmp_path):
    teacher = teacher_from_config(cfg.teacher, num_classes=10)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = DistillModule(
        "mnv4_conv_s",
        10,
        teacher,
        mode="online",
        **module_kwargs(loss={"kind": "kl", "temperature": 2.0}),
    )
    seen = {}
    module.student.register_forward_pre_hook(lambda m, a: seen.setdefault("student", a[0].clone()))
    teacher.members[0].register_forward_pre_hook(
        lambda m, a: seen.setdefault("teacher", a[0].clone())
    )
    trainer = _trainer(tmp_path, 3, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=_dm(cfg, "online"))
    view = (
        seen["student"] * module.std.cpu() + module.mean.cpu()
    )  # undo the student's normalisation
    torch.testing.assert_close(
        seen["teacher"], to_model_input(view, teacher.preprocessing), atol=1e-5, rtol=1e-5
    )
    assert not teacher.training
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())


def test_teacher_is_neither_registered_nor_checkpointed(cfg, tmp_path):
    teacher = teacher_from_config(cfg.teacher, num_classes=10)
    module = DistillModule("mnv4_conv_s", 10, teacher, mode="online", **module_kwargs())
    assert not any(p is q for p in module.parameters() for q in teacher.parameters())
    trainer = _trainer(tmp_path, 2, limit_val_batches=0)
    trainer.fit(module, datamodule=_dm(cfg, "online"))
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    keys = torch.load(path, map_location="cpu", weights_only=True)["state_dict"].keys()
    assert keys and all(k.startswith(("student.", "ema.")) for k in keys)


def test_feature_distillation_projects_1280_to_the_teachers_width(cfg, tmp_path):
    teacher = teacher_from_config(cfg.teacher, num_classes=10)
    module = DistillModule(
        "mnv4_conv_s",
        10,
        teacher,
        mode="online",
        **module_kwargs(loss={"kind": "kl", "feature_weight": 0.5}),
    )
    assert module.projection.in_features == 1280
    assert module.projection.out_features == teacher.pre_logits_dim() == 512
    trainer = _trainer(tmp_path, 2, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(module, datamodule=_dm(cfg, "online"))
    assert torch.isfinite(trainer.callback_metrics["train/loss_feature"])
    # one student forward per step: the head's BatchNorm saw each batch exactly once
    assert int(module.student.norm_head.num_batches_tracked) == trainer.global_step == 2


def test_resume_continues_at_the_same_step_with_the_same_optimizer_state(cfg, tmp_path):
    first = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs(ema={"decay": 0.9}))
    trainer = _trainer(tmp_path, 4, limit_val_batches=0)
    trainer.fit(first, datamodule=_dm(cfg))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, map_location="cpu", weights_only=True)

    class Capture(L.Callback):
        def on_train_start(self, trainer, module):
            self.step = trainer.global_step
            self.state = copy.deepcopy(trainer.optimizers[0].state_dict()["state"])
            self.ema = module.ema.module.conv_stem.weight.detach().clone()

    capture = Capture()
    second = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs(ema={"decay": 0.9}))
    _trainer(tmp_path, 6, limit_val_batches=0, callbacks=[capture]).fit(
        second, datamodule=_dm(cfg), ckpt_path=str(path)
    )
    assert capture.step == 4
    for k, v in saved["optimizer_states"][0]["state"].items():
        for name, t in v.items():
            torch.testing.assert_close(capture.state[k][name], t)
    torch.testing.assert_close(capture.ema, saved["state_dict"]["ema.module.conv_stem.weight"])
