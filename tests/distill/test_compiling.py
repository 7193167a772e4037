"""Compiling by default on GPU: static shapes, so no recompiles once training is under way.

TorchDynamo's guards and graph breaks are the same whatever backend turns graphs into code, so
the trainer test compiles with the ``eager`` backend (Inductor takes minutes per graph on two
CPU cores); the graph count is TorchDynamo's own.
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

import distill.module
from data.datamodule import DistillDataModule
from distill.compiling import compile_models, compiled_graphs
from distill.config import module_kwargs
from distill.module import DistillModule

from .conftest import compose_train


@pytest.fixture(scope="module")
def cfg(tiny_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("compile_out")
    return OmegaConf.to_container(
        compose_train(["+student=mnv4_conv_s", *tiny_cache], out), resolve=True
    )


def test_compile_defaults_to_on_for_cuda_only(cfg):
    assert cfg["model"]["compile"] is None  # the shipped default: decided by the device
    module = DistillModule("mnv4_conv_s", 10, mode="offline", **module_kwargs())
    module.trainer = L.Trainer(accelerator="cpu", logger=False)
    assert not module.compiles()
    forced = DistillModule(
        "mnv4_conv_s", 10, mode="offline", **module_kwargs(model={"compile": True})
    )
    forced.trainer = module.trainer
    assert forced.compiles()


def test_a_bad_compile_mode_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.compile_mode"):
        compile_models([torch.nn.Linear(2, 2)], mode="fastest")


@pytest.mark.slow
def test_no_recompiles_after_the_first_training_and_validation_steps(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(
        distill.module, "compile_models", functools.partial(compile_models, backend="eager")
    )
    torch._dynamo.reset()
    d = cfg["data"]
    dm = DistillDataModule(
        d["root"],
        d["train_sets"],
        "val",
        batch_size=16,
        num_workers=0,
        samples_per_epoch=16 * 4,
        shuffle_buffer=32,
        val_batch_size=10,  # a partial last batch: one more static shape, compiled once
    )
    module = DistillModule(
        "mnv4_conv_s", 10, mode="offline", **module_kwargs(model={"compile": True})
    )
    counts: list[int] = []

    class Count(L.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            counts.append(compiled_graphs())

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=12,  # three epochs of four steps, a validation after each
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        callbacks=[Count()],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=dm)
    assert len(counts) == 3 and counts[0] >= 2  # training and evaluation graphs
    assert counts[-1] == counts[0], f"recompiled after the first epoch: {counts}"
    assert module.compile_seconds is not None and module.compile_seconds > 0
