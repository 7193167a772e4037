"""Models that behave like trained ones, for checks that compare two implementations or exports."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def randomize_like_trained(model: nn.Module, resolution: int, seed: int = 0) -> nn.Module:
    """Give a freshly initialised model non-trivial BN statistics, BN affines and layer scales.

    Default init leaves BN at mean 0 / var 1 and layer scale at 1e-5, so residual branches and
    attention barely touch the output and a wrong branch could still match. Here BN γ/β and
    layer-scale γ are drawn at random, running statistics are calibrated on a random batch and
    then perturbed, and the classifier is rescaled so logits have unit spread: every branch
    changes the logits, and a 1e-4 tolerance is meaningful.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: running stats = calibration batch stats
    for name, p in model.named_parameters():
        if name.endswith("layer_scale.gamma"):
            p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
    x = torch.randn(4, 3, resolution, resolution, generator=g)
    model.train()
    model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
            noise = torch.randn(m.running_mean.shape, generator=g)
            m.running_mean.add_(noise * 0.05 * m.running_var.sqrt())
            m.running_var.mul_(torch.rand(m.running_var.shape, generator=g) * 0.4 + 0.8)
    scale = model(x).std()
    model.classifier.weight.div_(scale)
    model.classifier.bias.div_(scale)
    return model
