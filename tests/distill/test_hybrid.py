"""mode=hybrid on real shards: stored labels for some sets, the live teacher for the others."""

from __future__ import annotations

import copy
import itertools
import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from data.config import TeacherConfig, typed
from data.datamodule import DistillDataModule
from data.live import live_per_batch
from data.recipes import Replayer, pixel_hash
from data.shards import read_manifest
from data.teacher_setup import teacher_from_config
from distill.cli_checks import UsageError
from distill.config import module_kwargs
from distill.module import DistillModule
from distill.training import live_teacher_record
from distill.value_checks import checked_config
from teachers.preprocess import to_model_input
from tests.helpers import read_samples, run_module, save_random_teacher

from .conftest import compose_train

HYBRID = ["mode=hybrid", "data.train_sets={randaug:1,mixup:1,extra:0}", "variants.mixup.replicas=1"]


@pytest.fixture(scope="module")
def cfg(tiny_cache, tmp_path_factory):
    """The tiny cache plus its mixup set (one stored replica per image), as a hybrid run sees
    it: randaug stored, mixup live."""
    from distill.run_sets import ensure_data

    out = tmp_path_factory.mktemp("hybrid_out")
    composed = compose_train(["+student=mnv4_conv_s", *tiny_cache, *HYBRID], out)
    ensure_data(OmegaConf.to_object(composed))
    return OmegaConf.to_container(composed, resolve=True)


def _dm(c, batch=16, steps=4, **kw):
    d = c["data"]
    return DistillDataModule(
        d["root"],
        {"randaug": 1, "mixup": 1},
        "val",
        batch_size=batch,
        num_workers=0,
        samples_per_epoch=batch * steps,
        mode="hybrid",
        labels_from={"randaug": "stored", "mixup": "live"},
        shuffle_buffer=2 * batch,
        **kw,
    )


def test_live_samples_per_batch_follow_the_weights_and_keep_both_kinds():
    assert live_per_batch(128, [1, 1, 2], [False, True, False]) == 32
    assert live_per_batch(16, [1, 1], [False, True]) == 8
    assert live_per_batch(16, [100, 1], [False, True]) == 1  # rounds to 0: one live sample
    assert live_per_batch(16, [1, 100], [False, True]) == 15  # rounds to 16: one stored sample
    assert live_per_batch(16, [1, 1], [True, True]) == 16


@pytest.mark.slow  # cfg builds the live mixup set
def test_hybrid_batches_put_a_fixed_count_of_fresh_unlabelled_live_views_first(cfg):
    dm = _dm(cfg, steps=6)
    dm.prepare()
    replay = Replayer(dm.manifests["mixup"].data["recipe"], 10)
    stored_digests = set()
    for url in dm.manifests["mixup"].urls():
        for s in read_samples(url).values():
            views = replay.records(s)
            for i, r in itertools.product(range(views.shape[0]), range(views.shape[1])):
                stored_digests.add(pixel_hash(replay.render(s, i, r, views)[0]))
    live_digests = []
    for batch in dm.train_dataloader():
        live = batch["live"]
        assert batch["image"].shape[0] == 16 and live.tolist() == [True] * 8 + [False] * 8
        assert batch["source"][:8].eq(1).all() and batch["source"][8:].eq(0).all()
        assert batch["soft"][:8].isnan().all()  # no stored label stands in for the teacher's
        assert torch.isfinite(batch["soft"][8:]).all()
        for img in batch["image"][:8].permute(0, 2, 3, 1).numpy():
            live_digests.append({pixel_hash(img), pixel_hash(img[:, ::-1])})
    # every stored replica is one view per image: the live views are new ones, all different
    assert all(not (d & stored_digests) for d in live_digests)
    assert len({min(d) for d in live_digests}) == len(live_digests) == 6 * 8


@pytest.mark.slow  # a real Lightning fit
def test_hybrid_fit_runs_the_teacher_on_the_live_views_only(cfg, tmp_path):
    teacher = teacher_from_config(typed(TeacherConfig, cfg["teacher"], "teacher"), num_classes=10)
    module = DistillModule(
        "mnv4_conv_s", 10, teacher, mode="hybrid", **module_kwargs(ema={"decay": 0.9})
    )
    seen, views = [], []
    teacher.members[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))

    class Views(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            views.append((batch["view"].clone(), batch["n_live"]))

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=1,
        val_check_interval=3,
        callbacks=[Views()],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=_dm(cfg))
    assert len(views) == 3 and len(seen) == 3  # validation used the stored labels: no forward
    for x, (view, n_live) in zip(seen, views, strict=True):
        assert n_live == 8 and x.shape[0] == 8
        expected = to_model_input(view[:n_live], teacher.preprocessing)
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    cost = module.teacher_cost()
    assert cost["teacher_forwards"] == 24 and cost["samples_trained"] == 48
    assert cost["teacher_forward_share"] == 0.5 and 0 < cost["teacher_time_share"] < 1
    assert {"val/top1", "val/ema_top1", "val/agree_top1"} <= set(trainer.callback_metrics)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.fixture(scope="module")
def hybrid_values():
    return compose_train(["+student=mnv4_conv_s", "mode=hybrid"], Path("unused"))


def _set(c, key: str, value):
    """A copy of the composed config ``c`` with the dotted ``key`` set to ``value``."""
    c = copy.deepcopy(c)
    OmegaConf.update(c, key, value, merge=False)
    return c


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"data.labels_from": {}}, "data.labels_from"),
        ({"data.labels_from.mixup": "stored"}, "data.labels_from"),
        ({"data.train_sets.mixup": 0}, "data.labels_from"),
        ({"data.labels_from.mixup": "fresh"}, "data.labels_from"),
        ({"teacher.checkpoint": "/nowhere/t.safetensors"}, "teacher.checkpoint"),
        ({"teacher.checkpoint": None, "teacher.pretrained": False}, "teacher.checkpoint"),
    ],
)
def test_hybrid_without_a_live_set_or_a_runnable_teacher_is_one_line(hybrid_values, changes, named):
    c = hybrid_values
    for key, value in changes.items():
        c = _set(c, key, value)
    with pytest.raises(UsageError) as e:
        checked_config(c)
    message = str(e.value)
    assert named in message and "mode=hybrid" in message and "\n" not in message


def test_offline_ignores_labels_from(hybrid_values):
    checked_config(_set(_set(hybrid_values, "mode", "offline"), "data.labels_from", {}))


@pytest.mark.slow  # cfg builds the live mixup set
def test_live_teacher_other_than_the_stored_sets_is_warned_and_recorded(cfg, tmp_path, caplog):
    other = save_random_teacher(tmp_path / "other-teacher.safetensors", input_size=32)
    c = {**cfg, "teacher": {**cfg["teacher"], "checkpoint": str(other)}}
    dm = _dm(c)
    dm.prepare()
    teacher = teacher_from_config(typed(TeacherConfig, c["teacher"], "teacher"), num_classes=10)
    with caplog.at_level(logging.WARNING, logger="distill"):
        record = live_teacher_record(c["mode"], c["teacher"]["checkpoint"], dm, teacher)
    assert record["differs"] == ["randaug"] and record["checkpoint"] == str(other)
    labelled_by = record["stored_teachers"]["randaug"]["checkpoint"]
    assert labelled_by == cfg["teacher"]["checkpoint"]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(other) in warning and labelled_by in warning
    own = teacher_from_config(typed(TeacherConfig, cfg["teacher"], "teacher"), 10)
    assert live_teacher_record(cfg["mode"], cfg["teacher"]["checkpoint"], dm, own)["differs"] == []


@pytest.mark.slow  # two processes (DDP over gloo), started like a user does
def test_two_ddp_ranks_take_equal_hybrid_steps_with_equal_teacher_work(cfg, tiny_cache, tmp_path):
    args = [
        "student=mnv4_conv_s",
        "trainer=ddp_cpu",
        "trainer.max_steps=4",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "data.batch_size=8",
        "data.samples_per_epoch=64",
        "data.num_workers=0",
        "data.shuffle_buffer=16",
        "report.enabled=false",
        "export.enabled=false",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = run_module("distill", [*args, *tiny_cache, *HYBRID], {"WANDB_MODE": "disabled"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 4
    assert ranks[0]["teacher_cost"]["forwards"] == ranks[1]["teacher_cost"]["forwards"] == 16
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["teacher_cost"]["teacher_forward_share"] == 0.5
    assert result["teacher_cost"]["teacher_forwards"] == 32


@pytest.mark.slow  # cfg builds the live mixup set
def test_stored_sets_of_a_hybrid_run_must_carry_labels(cfg):
    dm = DistillDataModule(
        cfg["data"]["root"],
        {"raw": 1, "mixup": 1},
        "val",
        batch_size=8,
        num_workers=0,
        mode="hybrid",
        labels_from={"mixup": "live"},
    )
    with pytest.raises(Exception, match=r"\['raw'\] have none.*labels_from"):
        dm.prepare()
    assert read_manifest(Path(cfg["data"]["root"]) / "raw").data.get("labels") is None


@pytest.mark.slow  # a subprocess CLI
def test_hybrid_with_no_live_set_on_the_command_line_fails_before_any_work(tmp_path):
    cache = tmp_path / "cache"
    proc = run_module(
        "distill",
        [
            "student=mnv4_conv_s",
            "mode=hybrid",
            "data.labels_from={randaug: stored}",  # the whole mapping: mixup is stored too
            f"paths.cache={cache}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        {"WANDB_MODE": "disabled"},
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert "mode=hybrid needs at least one training set marked live" in lines[0]
    assert "data.labels_from" in lines[0] and len(lines) == 1
    assert not cache.exists()
