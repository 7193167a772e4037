"""The SuperNet: every point of a search space in one set of shared weights, TuNAS-style.

Weight sharing as TuNAS does it (Bender et al., CVPR 2020, §3; ``tunas/rematlib/``):
- a width or expansion choice is the first k channels of one max-width conv (TuNAS's channel
  masks). Here the weights are sliced instead of multiplying the output by a 0/1 mask: the
  same function and the same gradients, without computing the masked channels;
- the 1x1 expansion and projection convs are shared by every kernel choice; each DW kernel
  size has its own weights and BN (a 5x5 does not contain the 3x3: that nesting is
  Once-for-All's, not TuNAS's);
- BatchNorm normalises with the batch's statistics while searching (``train()`` mode: the
  running statistics of a shared BN mean nothing for any single sub-network);
- only the sampled branch runs (``NetPath``, nas/paths.py), or the average of all of them in
  the warm-up.

Module and block layout follow the students (students/mnv4.py), so ``subnet_state_dict`` cuts
a point out as the state_dict of the standalone ``MobileNetV4`` built from its spec.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas.paths import BlockPath, NetPath
from nas.space import SearchSpace
from students.blocks import make_divisible
from students.layers import init_weights_goog, make_act


class SlimConv(nn.Conv2d):
    """A bias-free max-width conv; a call uses its first ``out`` x ``in`` channels (depthwise:
    its first ``in`` channels). Symmetric ``k // 2`` padding, as the students'."""

    def __init__(self, in_max: int, out_max: int, kernel: int, stride: int = 1, dw: bool = False):
        groups = in_max if dw else 1
        super().__init__(in_max, out_max, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.dw = dw

    def forward(self, x: torch.Tensor, out: int | None = None, stride: int | None = None):
        c = x.shape[1]
        w = self.weight[:c] if self.dw else self.weight[:out, :c]
        s = self.stride if stride is None else stride
        return F.conv2d(x, w, None, s, self.padding, 1, c if self.dw else 1)


class SlimBN(nn.BatchNorm2d):
    """A BatchNorm whose first C channels normalise a C-channel input (momentum 0.1, eps 1e-5,
    as the students')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x,
            self.running_mean[:c],
            self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            self.training,
            self.momentum,
            self.eps,
        )


class ConvBN(nn.Module):
    """SlimConv + SlimBN + optional activation."""

    def __init__(self, in_max, out_max, kernel, stride=1, dw=False, act: str | None = None):
        super().__init__()
        self.conv = SlimConv(in_max, out_max, kernel, stride, dw)
        self.bn = SlimBN(out_max)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor, out: int | None = None, stride: int | None = None):
        return self.act(self.bn(self.conv(x, out, stride)))


def _mean(xs: list[torch.Tensor]) -> torch.Tensor:
    return xs[0] if len(xs) == 1 else torch.stack(xs).mean(0)


class SuperUIB(nn.Module):
    """A UIB position: a DW branch per start/middle kernel, shared 1x1 convs (students/blocks.py
    op order: start DW + BN, expansion + BN + act, middle DW + BN + act, projection + BN)."""

    def __init__(self, in_max, out_max, mid_max, stride, start_k, mid_k, act):
        super().__init__()
        if stride == 2 and 0 in mid_k:
            raise ValueError("a stride-2 UIB keeps its middle DW (nas/space.py)")
        self.stride = stride
        self.dw_start = nn.ModuleDict(
            {str(k): ConvBN(in_max, in_max, k, 1, dw=True) for k in start_k if k}
        )
        self.pw_exp = ConvBN(in_max, mid_max, 1, act=act)
        self.dw_mid = nn.ModuleDict(
            {str(k): ConvBN(mid_max, mid_max, k, stride, dw=True, act=act) for k in mid_k if k}
        )
        self.pw_proj = ConvBN(mid_max, out_max, 1)

    def forward(self, x: torch.Tensor, out: int, path: BlockPath) -> torch.Tensor:
        shortcut, c = x, x.shape[1]
        x = _mean([x if k == 0 else self.dw_start[str(k)](x) for k in path.k_start])
        x = self.pw_exp(x, make_divisible(c * path.expand))
        x = _mean([x if k == 0 else self.dw_mid[str(k)](x) for k in path.k_mid])
        x = self.pw_proj(x, out)
        if self.stride == 1 and c == out:
            x = shortcut + x * path.weight if path.weight != 1.0 else shortcut + x
        return x


class SuperPrefix(nn.Module):
    """A prefix stage: Conv-S's ConvBnAct pair (act after both) or a FusedIB (linear 1x1)."""

    def __init__(self, kind: str, in_max: int, out_max: int, mid_max: int, stride: int, act):
        super().__init__()
        self.kind = kind
        self.conv1 = ConvBN(in_max, mid_max, 3, stride, act=act)
        self.conv2 = ConvBN(mid_max, out_max, 1, act=act if kind == "conv_pair" else None)

    def forward(self, x: torch.Tensor, out: int, path: BlockPath) -> torch.Tensor:
        return self.conv2(self.conv1(x, make_divisible(x.shape[1] * path.expand)), out)


class SuperNet(nn.Module):
    """Every point of ``space`` whose UIB blocks use ``start_kernels``/``mid_kernels`` and
    ``expansions``, at max width and depth; ``forward(x, path)`` runs one path.

    Args:
        space: the search space (nas/space.py).
        num_classes: classifier outputs.
        start_kernels, mid_kernels: the DW kernels this search stage chooses from (0: absent).
        expansions: the UIB expansions it chooses from (sizes the shared 1x1 convs).
    """

    def __init__(
        self,
        space: SearchSpace,
        num_classes: int,
        start_kernels: tuple[int, ...],
        mid_kernels: tuple[int, ...],
        expansions: tuple[float, ...],
    ) -> None:
        super().__init__()
        self.space, self.num_classes = space, num_classes
        act = space.act
        stem = max(space.stem_widths)
        self.stem = ConvBN(3, stem, 3, 2, act=act)
        stages, in_max = [], stem
        for s in space.stages:
            out_max = max(s.widths)
            if s.kind == "uib":
                blocks = []
                for j in range(s.depth[1]):
                    stride = s.stride if j == 0 else 1
                    mid_k = tuple(k for k in mid_kernels if k in space.mid_kernels(stride))
                    cin = in_max if j == 0 else out_max
                    mid = make_divisible(cin * max(expansions))
                    blocks.append(SuperUIB(cin, out_max, mid, stride, start_kernels, mid_k, act))
                stages.append(nn.ModuleList(blocks))
            else:
                mid = make_divisible(in_max * max(s.expansions))
                stages.append(
                    nn.ModuleList([SuperPrefix(s.kind, in_max, out_max, mid, s.stride, act)])
                )
            in_max = out_max
        self.stages = nn.ModuleList(stages)
        self.head = ConvBN(in_max, space.num_features, 1, act=act)
        self.conv_head = nn.Conv2d(space.num_features, space.head_hidden_size, 1, bias=False)
        self.norm_head = nn.BatchNorm2d(space.head_hidden_size)
        self.act2 = make_act(act)
        self.classifier = nn.Linear(space.head_hidden_size, num_classes)
        init_weights_goog(self)

    def forward_features(self, x: torch.Tensor, path: NetPath) -> torch.Tensor:
        x = self.stem(x, path.stem)
        for stage, sp in zip(self.stages, path.stages, strict=True):
            for block, bp in zip(stage, sp.blocks, strict=False):
                x = block(x, sp.width, bp)
        return self.head(x, self.space.num_features)

    def forward(self, x: torch.Tensor, path: NetPath) -> torch.Tensor:
        x = self.forward_features(x, path).mean((2, 3), keepdim=True)
        x = self.act2(self.norm_head(self.conv_head(x))).flatten(1)
        return self.classifier(x)

    # -- cutting a point out ---------------------------------------------------------------
    def subnet_state_dict(self, path: NetPath) -> dict[str, torch.Tensor]:
        """The weights of one point (single-kernel ``path``) under the standalone student's
        names (``MobileNetV4(arch_to_spec(...))``): each conv and BN sliced to its widths."""
        out: dict[str, torch.Tensor] = {}
        _put(out, "conv_stem", "bn1", self.stem, path.stem, 3)
        chans = path.stem
        for i, (stage, sp, s) in enumerate(
            zip(self.stages, path.stages, self.space.stages, strict=True)
        ):
            for j, (block, bp) in enumerate(zip(stage, sp.blocks, strict=False)):
                if len(bp.k_start) != 1 or len(bp.k_mid) != 1:
                    raise ValueError("subnet_state_dict needs one kernel per DW (a sampled path)")
                mid = make_divisible(chans * bp.expand)
                if s.kind == "uib":
                    p = f"blocks.{i}.{j}"
                    if bp.k_start[0]:
                        dw = block.dw_start[str(bp.k_start[0])]
                        _put(out, f"{p}.dw_start.conv", f"{p}.dw_start.bn", dw, chans, 1)
                    _put(out, f"{p}.pw_exp.conv", f"{p}.pw_exp.bn", block.pw_exp, mid, chans)
                    if bp.k_mid[0]:
                        dw = block.dw_mid[str(bp.k_mid[0])]
                        _put(out, f"{p}.dw_mid.conv", f"{p}.dw_mid.bn", dw, mid, 1)
                    _put(out, f"{p}.pw_proj.conv", f"{p}.pw_proj.bn", block.pw_proj, sp.width, mid)
                elif s.kind == "conv_pair":
                    _put(out, f"blocks.{i}.0.conv", f"blocks.{i}.0.bn1", block.conv1, mid, chans)
                    _put(out, f"blocks.{i}.1.conv", f"blocks.{i}.1.bn1", block.conv2, sp.width, mid)
                else:
                    p = f"blocks.{i}.0"
                    _put(out, f"{p}.conv_exp", f"{p}.bn1", block.conv1, mid, chans)
                    _put(out, f"{p}.conv_pwl", f"{p}.bn2", block.conv2, sp.width, mid)
                chans = sp.width
        last = f"blocks.{len(self.stages)}.0"
        _put(out, f"{last}.conv", f"{last}.bn1", self.head, self.space.num_features, chans)
        for name, t in self.state_dict().items():
            if name.split(".")[0] in ("conv_head", "norm_head", "classifier"):
                out[name] = t.clone()
        return out


def _put(out: dict, conv_name: str, bn_name: str, unit: ConvBN, chans: int, in_chs: int) -> None:
    """``unit``'s conv weight cut to [chans, in_chs] (depthwise: [chans, 1]) and its BN to chans."""
    w = unit.conv.weight
    out[f"{conv_name}.weight"] = (w[:chans] if unit.conv.dw else w[:chans, :in_chs]).clone()
    bn = unit.bn
    for key in ("weight", "bias", "running_mean", "running_var"):
        out[f"{bn_name}.{key}"] = getattr(bn, key)[:chans].detach().clone()
    out[f"{bn_name}.num_batches_tracked"] = bn.num_batches_tracked.clone()
