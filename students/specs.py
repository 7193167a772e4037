"""The five MobileNetV4 models as data: one typed row per block, one table per model.

Tables are the code specs (TF Model Garden ``backbones/mobilenet.py`` = timm ``mobilenetv3.py``,
the layout the released weights were trained on), not the paper's Tabs. 11-15 where they differ
(Hybrid-M, Tab. 13). Stage ``i`` is timm's ``blocks.i``; the last stage is the 1x1 conv to 960.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConvBnActRow:
    """Conv + BN + act, no residual (Conv-S stages 0-1, the final 1x1 -> 960)."""

    out: int
    kernel: int
    stride: int = 1


@dataclass(frozen=True)
class FusedIBRow:
    """Full kxk expansion conv + linear 1x1 projection (timm ``EdgeResidual``)."""

    out: int
    expand: float
    stride: int = 2
    kernel: int = 3


@dataclass(frozen=True)
class UIBRow:
    """Universal Inverted Bottleneck; ``k_start``/``k_mid`` of 0 mean that DW conv is absent."""

    k_start: int
    k_mid: int
    expand: float
    out: int
    stride: int = 1

    @property
    def kind(self) -> str:
        kinds = {(False, True): "IB", (True, False): "ConvNext", (True, True): "ExtraDW"}
        return kinds.get((bool(self.k_start), bool(self.k_mid)), "FFN")


@dataclass(frozen=True)
class MQARow:
    """Mobile MQA block: ``heads`` query heads, one shared K/V head of ``dim``, K/V stride."""

    heads: int
    dim: int
    kv_stride: int
    kernel: int = 3


Row = ConvBnActRow | FusedIBRow | UIBRow | MQARow


def ExtraDW(k1: int, k2: int, e: float, out: int, s: int = 1) -> UIBRow:  # noqa: N802
    """Start DW k1 and middle DW k2 (the UIB instance new in MobileNetV4)."""
    return UIBRow(k1, k2, e, out, s)


def IB(k: int, e: float, out: int, s: int = 1) -> UIBRow:  # noqa: N802
    """MobileNetV2 inverted bottleneck: middle DW only."""
    return UIBRow(0, k, e, out, s)


def ConvNext(k: int, e: float, out: int, s: int = 1) -> UIBRow:  # noqa: N802
    """ConvNext-like: start DW only."""
    return UIBRow(k, 0, e, out, s)


def FFN(e: float, out: int) -> UIBRow:  # noqa: N802
    """Two 1x1 convs."""
    return UIBRow(0, 0, e, out, 1)


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines one MNv4 variant; ``expected_params`` is timm's count (1000 classes).

    A spec read from a spec file (``students.spec_file``) has no published counts: ``None``.
    """

    name: str
    source: str
    resolution: int
    stem: int
    act: str
    stages: tuple[tuple[Row, ...], ...]
    layer_scale: float | None
    drop_rate: float
    expected_params: int | None = None
    expected_gmacs: float | None = None
    num_features: int = 960
    head_hidden_size: int = 1280


# Conv-S [paper Tab. 11; TF MNV4ConvSmall_BLOCK_SPECS]. 224 px, ReLU.
MNV4_CONV_S = ModelSpec(
    name="mnv4_conv_s",
    source="arXiv 2404.10518 Tab. 11, code spec",
    resolution=224,
    stem=32,
    act="relu",
    stages=(
        (ConvBnActRow(32, 3, 2), ConvBnActRow(32, 1)),  # 112 px in
        (ConvBnActRow(96, 3, 2), ConvBnActRow(64, 1)),  # 56 px in
        (  # 28 px in
            ExtraDW(5, 5, 3, 96, s=2),
            *[IB(3, 2, 96)] * 4,
            ConvNext(3, 4, 96),
        ),
        (  # 14 px in
            ExtraDW(3, 3, 6, 128, s=2),
            ExtraDW(5, 5, 4, 128),
            IB(5, 4, 128),
            IB(5, 3, 128),
            *[IB(3, 4, 128)] * 2,
        ),
        (ConvBnActRow(960, 1),),  # 7 px
    ),
    layer_scale=None,
    drop_rate=0.3,
    expected_params=3_774_024,
    expected_gmacs=0.186,
)

# Conv-M [paper Tab. 12; TF _mnv4_conv_medium_block_specs]. 256 px, ReLU.
MNV4_CONV_M = ModelSpec(
    name="mnv4_conv_m",
    source="arXiv 2404.10518 Tab. 12, code spec",
    resolution=256,
    stem=32,
    act="relu",
    stages=(
        (FusedIBRow(48, 4),),  # 128 px in
        (ExtraDW(3, 5, 4, 80, s=2), ExtraDW(3, 3, 2, 80)),  # 64 px in
        (  # 32 px in
            ExtraDW(3, 5, 6, 160, s=2),
            *[ExtraDW(3, 3, 4, 160)] * 2,
            ExtraDW(3, 5, 4, 160),
            ExtraDW(3, 3, 4, 160),
            ConvNext(3, 4, 160),
            FFN(2, 160),
            ConvNext(3, 4, 160),
        ),
        (  # 16 px in
            ExtraDW(5, 5, 6, 256, s=2),
            ExtraDW(5, 5, 4, 256),
            *[ExtraDW(3, 5, 4, 256)] * 2,
            FFN(4, 256),
            ConvNext(3, 4, 256),
            ExtraDW(3, 5, 2, 256),
            ExtraDW(5, 5, 4, 256),
            *[FFN(4, 256)] * 2,
            ConvNext(5, 2, 256),
        ),
        (ConvBnActRow(960, 1),),  # 8 px
    ),
    layer_scale=None,
    drop_rate=0.2,
    expected_params=9_715_512,
    expected_gmacs=1.080,
)

# Conv-L [paper Tab. 14; TF MNV4ConvLarge_BLOCK_SPECS]. 384 px, ReLU, every e = 4.
_CONV_L_STAGE3_HEAD = (  # blocks 3.0-3.9, shared with Hybrid-L
    ExtraDW(5, 5, 4, 512, s=2),
    *[ExtraDW(5, 5, 4, 512)] * 3,
    ConvNext(5, 4, 512),
    ExtraDW(5, 3, 4, 512),
    *[ConvNext(5, 4, 512)] * 2,
    ExtraDW(5, 3, 4, 512),
    ExtraDW(5, 5, 4, 512),
)
MNV4_CONV_L = ModelSpec(
    name="mnv4_conv_l",
    source="arXiv 2404.10518 Tab. 14, code spec",
    resolution=384,
    stem=24,
    act="relu",
    stages=(
        (FusedIBRow(48, 4),),  # 192 px in
        (ExtraDW(3, 5, 4, 96, s=2), ExtraDW(3, 3, 4, 96)),  # 96 px in
        (  # 48 px in
            ExtraDW(3, 5, 4, 192, s=2),
            *[ExtraDW(3, 3, 4, 192)] * 3,
            ExtraDW(3, 5, 4, 192),
            *[ExtraDW(5, 3, 4, 192)] * 5,
            ConvNext(3, 4, 192),
        ),
        (*_CONV_L_STAGE3_HEAD, *[ConvNext(5, 4, 512)] * 3),  # 24 px in
        (ConvBnActRow(960, 1),),  # 12 px
    ),
    layer_scale=None,
    drop_rate=0.2,
    expected_params=32_590_864,
    expected_gmacs=6.376,
)

# Hybrid-M, code version [TF _mnv4_hybrid_medium_block_specs = timm], not paper Tab. 13.
_MQA_A = MQARow(heads=4, dim=64, kv_stride=2)  # C = 160, stride 16
_MQA_B = MQARow(heads=4, dim=64, kv_stride=1)  # C = 256, stride 32
MNV4_HYBRID_M = ModelSpec(
    name="mnv4_hybrid_m",
    source="TF/timm code spec (arXiv 2404.10518 Tab. 13 differs)",
    resolution=256,
    stem=32,
    act="relu",
    stages=(
        MNV4_CONV_M.stages[0],
        MNV4_CONV_M.stages[1],
        (  # 32 px in
            ExtraDW(3, 5, 6, 160, s=2),
            FFN(2, 160),
            ExtraDW(3, 3, 4, 160),
            ExtraDW(3, 5, 4, 160),
            _MQA_A,
            ExtraDW(3, 3, 4, 160),
            _MQA_A,
            ConvNext(3, 4, 160),
            _MQA_A,
            ExtraDW(3, 3, 4, 160),
            _MQA_A,
            ConvNext(3, 4, 160),
        ),
        (  # 16 px in
            ExtraDW(5, 5, 6, 256, s=2),
            ExtraDW(5, 5, 4, 256),
            *[ExtraDW(3, 5, 4, 256)] * 2,
            FFN(2, 256),
            ExtraDW(3, 5, 2, 256),
            FFN(2, 256),
            FFN(4, 256),
            _MQA_B,
            ConvNext(3, 4, 256),
            _MQA_B,
            ExtraDW(5, 5, 4, 256),
            _MQA_B,
            ConvNext(5, 4, 256),
            _MQA_B,
            ConvNext(5, 4, 256),
        ),
        (ConvBnActRow(960, 1),),
    ),
    layer_scale=1e-5,
    drop_rate=0.2,
    expected_params=11_074_648,
    expected_gmacs=1.271,
)

# Hybrid-L [paper Tab. 15 = TF _mnv4_hybrid_large_block_specs = timm]. GELU.
_MQA_C = MQARow(heads=8, dim=48, kv_stride=2)  # C = 192, stride 16
_MQA_D = MQARow(heads=8, dim=64, kv_stride=1)  # C = 512, stride 32
MNV4_HYBRID_L = ModelSpec(
    name="mnv4_hybrid_l",
    source="arXiv 2404.10518 Tab. 15, code spec",
    resolution=384,
    stem=24,
    act="gelu",
    stages=(
        MNV4_CONV_L.stages[0],
        MNV4_CONV_L.stages[1],
        (  # 48 px in
            *MNV4_CONV_L.stages[2][:5],
            *[ExtraDW(5, 3, 4, 192)] * 2,
            *[_MQA_C, ExtraDW(5, 3, 4, 192)] * 3,
            _MQA_C,
            ConvNext(3, 4, 192),
        ),
        (*_CONV_L_STAGE3_HEAD, *[_MQA_D, ConvNext(5, 4, 512)] * 4),  # 24 px in
        (ConvBnActRow(960, 1),),
    ),
    layer_scale=1e-5,
    drop_rate=0.2,
    expected_params=37_764_624,
    expected_gmacs=7.712,
)

SPECS: dict[str, ModelSpec] = {
    s.name: s for s in (MNV4_CONV_S, MNV4_CONV_M, MNV4_CONV_L, MNV4_HYBRID_M, MNV4_HYBRID_L)
}

# timm's registry names for the same architectures.
TIMM_NAMES: dict[str, str] = {
    "mnv4_conv_s": "mobilenetv4_conv_small",
    "mnv4_conv_m": "mobilenetv4_conv_medium",
    "mnv4_conv_l": "mobilenetv4_conv_large",
    "mnv4_hybrid_m": "mobilenetv4_hybrid_medium",
    "mnv4_hybrid_l": "mobilenetv4_hybrid_large",
}
