"""Quantization-aware distillation: a short fine-tune of the fake-quantized student on the
teacher's stored labels, so int8 recovers what post-training quantization loses.

PT2E QAT, as torchao documents it: ``torch.export`` (training graph, batch dynamic) ->
``prepare_qat_pt2e`` with ExecuTorch's ``XNNPACKQuantizer`` (symmetric int8, per-channel
weights, ``is_qat=True``: conv-BN pairs are simulated folded and every quantized tensor gets a
fake-quant) -> a few hundred steps of the project's KD loss against the run's own training
batches -> ``convert_pt2e``. The loss is ``kl`` at ``temperature`` (at T=1 it has the gradient
of the default ``soft_ce``: they differ by the teacher's entropy, a constant). BatchNorm statistics are frozen after ``freeze_bn`` of the steps
and the observers after ``freeze_observers`` (the late steps then fine-tune against fixed
scales and folded BN, the graph convert_pt2e will produce). The result is the converted module,
in eval mode, that ``students.runtimes.executorch.save_pte`` lowers like a PTQ one.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.norm import normalized_input
from distill.losses import kd_loss, soften

log = logging.getLogger(__name__)

EXPORT_BATCH = 2  # traced batch; batch is dynamic, but 1 would specialise it away
BN_OPS = {"aten.batch_norm.default", "aten._native_batch_norm_legit.default"}
BN_TRAINING_ARG = 5  # (input, weight, bias, running_mean, running_var, training, ...)


def qat_distill(
    model: nn.Module,
    batches: Iterable[dict],
    mean: Sequence[float],
    std: Sequence[float],
    steps: int,
    lr: float,
    resolution: int,
    temperature: float = 1.0,
    progress: bool = True,
    *,
    freeze_bn: float = 0.5,
    freeze_observers: float = 0.75,
) -> nn.Module:
    """The int8 ``convert_pt2e`` module of ``model`` after ``steps`` of QAT distillation.

    ``batches`` are the training loader's dicts: ``image`` uint8 [B, 3, H, W], ``soft`` the
    stored teacher probabilities (T=1), re-softened to ``temperature`` as training does; the
    iterable is restarted when it runs out. ``mean``/``std`` normalise [0, 1] pixels.
    ``model`` itself is left untouched.
    """
    from torchao.quantization.pt2e import disable_observer, move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
    from tqdm import tqdm

    if steps < 1:
        raise ValueError(f"QAT needs at least one step, got steps={steps}")
    prepared = prepare_qat(model, resolution)
    params = [p for p in prepared.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    bn_step, obs_step = int(steps * freeze_bn), int(steps * freeze_observers)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="QAT", unit="step", disable=not progress)
    for step, batch in zip(range(steps), _endless(batches), strict=False):
        if step == bn_step:
            freeze_bn_stats(prepared)
        if step == obs_step:
            prepared.apply(disable_observer)
        logits = prepared(normalized_input(_images(batch), mean, std).contiguous())
        loss = kd_loss("kl", logits, _teacher(batch, temperature), temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        bar.update()
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    bar.close()
    log.info(
        "QAT: %d steps in %.1f s, KD loss %.4f -> %.4f (mean of first/last 10%%)",
        len(losses),
        time.perf_counter() - start,
        *_ends(losses),
    )
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    converted.qat_losses = losses  # for callers that report the curve
    return converted


def prepare_qat(model: nn.Module, resolution: int) -> torch.fx.GraphModule:
    """A training-mode, fake-quantized PT2E graph of a copy of ``model`` (CPU, NCHW)."""
    from torchao.quantization.pt2e import move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    clone = copy.deepcopy(model).cpu().float().train()
    if hasattr(clone, "channels_last"):  # XNNPACK lowers plain NCHW graphs
        clone.channels_last = False
    clone = clone.to(memory_format=torch.contiguous_format)
    chans = getattr(clone, "in_chans", 3)
    example = torch.randn(EXPORT_BATCH, chans, resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    graph = torch.export.export(clone, (example,), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_qat_pt2e(graph, _qat_quantizer())
    move_exported_model_to_train(prepared)
    return prepared


def _qat_quantizer():
    """ExecuTorch's XNNPACK quantizer, symmetric int8 per channel, with QAT fake-quants."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    config = get_symmetric_quantization_config(is_per_channel=True, is_qat=True)
    return XNNPACKQuantizer().set_global(config)


def freeze_bn_stats(prepared: torch.fx.GraphModule) -> None:
    """Stop updating BatchNorm running statistics (torchao's QAT recipe): every batch-norm
    node's ``training`` flag is set to False, so BN normalises with the stored statistics."""
    changed = False
    for node in prepared.graph.nodes:
        if node.op == "call_function" and str(node.target) in BN_OPS:
            args = list(node.args)
            args[BN_TRAINING_ARG] = False
            node.args = tuple(args)
            changed = True
    if changed:
        prepared.recompile()


def _images(batch: dict) -> torch.Tensor:
    """The batch's uint8 images, decoding them first when the loader passed JPEG bytes."""
    if "image" not in batch:
        from data.batch_decode import decode_batch

        batch = decode_batch(batch, torch.device("cpu"))
    return batch["image"]


def _teacher(batch: dict, temperature: float) -> torch.Tensor:
    if "soft" not in batch:
        raise ValueError(
            "QAT distillation needs stored teacher labels (batch['soft']): use the run's "
            "offline training sets"
        )
    return soften(batch["soft"], temperature)


def _endless(batches: Iterable[dict]) -> Iterator[dict]:
    """``batches`` again and again (a finite loader restarts); an empty one is an error."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("QAT got no training batch")


def _ends(losses: list[float]) -> tuple[float, float]:
    k = max(1, len(losses) // 10)
    return sum(losses[:k]) / k, sum(losses[-k:]) / k


def qat_rows(
    source,
    data,
    out_dir: Path,
    val: tuple[torch.Tensor, np.ndarray],
    steps: int,
    lr: float,
    threads: Sequence[int],
    runs: int,
    batch_size: int = 128,
) -> list[dict]:
    """``python -m distill.export --qat-steps N``: QAT-distil ``source`` (a
    ``distill.runtime_inputs.Source``) on the run's training sets (``data``, equal weights),
    lower it to ExecuTorch as ``<student>_int8_qat.pte`` in ``out_dir`` and measure it like
    every other row (``precision: int8-qat``)."""
    from data.datamodule import DistillDataModule
    from distill.runtime_table import measure, pytorch_logits
    from students.runtimes.executorch import ExecuTorch, save_pte

    meta, res = source.meta, source.meta.resolution
    dm = DistillDataModule(
        data.root,
        dict.fromkeys(data.train_sets, 1.0),
        data.val_set,
        batch_size=batch_size,
        num_workers=2,
        seed=1,
        shuffle_buffer=4 * batch_size,
    )
    converted = qat_distill(
        source.model, dm.train_dataloader(), meta.mean, meta.std, steps, lr, res
    )
    name = f"{meta.student}_int8_qat.pte"
    strings = {**meta.to_strings(), "precision": "int8-qat"}
    file = save_pte(converted, torch.zeros(1, 3, res, res), Path(out_dir) / name, strings)
    runtime = ExecuTorch()
    predicts = {t: runtime.load(file, t) for t in threads}
    x, labels = val
    start, end = _ends(converted.qat_losses)
    return [
        {
            "runtime": "executorch",
            "precision": "int8-qat",
            "file": name,
            "bytes": file.stat().st_size,
            "resolution": res,
            "qat_steps": steps,
            "qat_lr": lr,
            "qat_loss_start_end": [round(start, 4), round(end, 4)],
            **row,
        }
        for row in measure(predicts, x, labels, pytorch_logits(source.model, x), runs)
    ]
