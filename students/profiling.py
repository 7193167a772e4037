"""Counting a student's parameters and multiply-accumulates (MACs).

MACs cover every conv, the classifier and the two attention matmuls, not BN, activations,
pooling or softmax (the convention of the code-spec counts in students/specs.py).
``torch.utils.flop_counter`` counts convs and the classifier but does not see the CPU flash
attention kernel, so the two attention matmuls (QK^T and AV) are added through a custom flop
formula for that op.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

_CPU_FLASH = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu


def _cpu_flash_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters (BN γ/β and layer-scale γ included, running stats not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, resolution: int, batch: int = 1) -> int:
    """Multiply-accumulates of one eval forward at ``resolution`` (per batch of ``batch``)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(batch, getattr(model, "in_chans", 3), resolution, resolution)
    try:
        with FlopCounterMode(display=False, custom_mapping={_CPU_FLASH: _cpu_flash_flops}) as fc:
            model(x)
    finally:
        model.train(was_training)
    return fc.get_total_flops() // 2
