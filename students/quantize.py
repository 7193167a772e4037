"""Post-training static quantization with PT2E: the int8 path ExecuTorch's XNNPACK delegate runs.

``torch.export`` captures the model, ``prepare_pt2e`` inserts observers chosen by the
XNNPACK quantizer (symmetric int8, weights per channel), a few hundred of the run's own views
calibrate them, and ``convert_pt2e`` folds the result into quantize/dequantize pairs that the
XNNPACK partitioner fuses into int8 kernels. QAT (``prepare_qat_pt2e``) is left to its caller.
"""

from __future__ import annotations

import torch
from torch import nn

CALIBRATION_BATCH = 32


def xnnpack_quantizer(per_channel: bool = True):
    """ExecuTorch's XNNPACK quantizer with the symmetric int8 config (per-channel weights)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    return XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel)
    )


@torch.no_grad()
def quantize_ptq(model: nn.Module, example: torch.Tensor, calibration: torch.Tensor) -> nn.Module:
    """An int8 PT2E copy of ``model`` (eval, CPU) calibrated on ``calibration`` [N, C, H, W].

    The views run in batches of ``CALIBRATION_BATCH`` through an exported graph traced at
    batch ``example.shape[0]``; batch is marked dynamic so the last, smaller batch runs too.
    """
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1, max=max(CALIBRATION_BATCH, 2))
    example = example.expand(2, *example.shape[1:]).contiguous()
    graph = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    prepared = prepare_pt2e(graph, xnnpack_quantizer())
    for chunk in calibration.split(CALIBRATION_BATCH):
        prepared(chunk)
    return convert_pt2e(prepared)
