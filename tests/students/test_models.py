"""The contract every MNv4 student keeps: exact size, timm parity, shapes, gradients, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import students
from students.attention import MultiQueryAttention
from students.profiling import count_macs, count_params
from students.specs import SPECS

NAMES = students.list_models()
# The fast tier runs the heavy per-student checks on the smallest student; the slow tier runs them
# on every student (the hybrids' attention included).
FAST = ("mnv4_conv_s",)
TIERED = [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]

# Entries and layer-scale ``gamma`` vectors in the state_dicts of timm's ``mobilenetv4_*`` models
# (parameter and MAC counts are the spec's own ``expected_params`` / ``expected_gmacs``).
LAYOUT = {
    "mnv4_conv_s": (278, 0),
    "mnv4_conv_m": (464, 0),
    "mnv4_conv_l": (614, 0),
    "mnv4_hybrid_m": (632, 30),
    "mnv4_hybrid_l": (787, 35),
}


def test_list_models_names_the_five_students():
    assert NAMES == ["mnv4_conv_s", "mnv4_conv_m", "mnv4_conv_l", "mnv4_hybrid_m", "mnv4_hybrid_l"]


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_state_dict_layout_match_the_spec(name, default_models):
    entries, gammas = LAYOUT[name]
    model = default_models[name]
    assert count_params(model) == SPECS[name].expected_params
    state = model.state_dict()
    assert len(state) == entries
    assert sum(k.endswith("layer_scale.gamma") for k in state) == gammas


@pytest.mark.parametrize("name", TIERED)
def test_macs_match_the_counted_figures(name, default_models):
    model = default_models[name]  # count_macs restores the train/eval mode it found
    gmacs = count_macs(model, model.default_resolution) / 1e9
    assert gmacs == pytest.approx(SPECS[name].expected_gmacs, rel=0.02)


@pytest.mark.parametrize("name", NAMES)
def test_native_resolution(name, default_models):
    expected = {"mnv4_conv_s": 224, "mnv4_conv_l": 384, "mnv4_hybrid_l": 384}.get(name, 256)
    assert default_models[name].default_resolution == expected


@pytest.mark.parametrize(
    "channels_last",
    [True, pytest.param(False, marks=pytest.mark.slow)],  # the default layout in the fast tier
    ids=["channels_last", "nchw"],
)
@pytest.mark.parametrize("name", TIERED)
def test_logits_equal_timm_given_the_same_weights(name, channels_last, timm_models):
    """Ours (default channels_last, or NCHW) against timm's default NCHW model, fp32, eval."""
    reference = timm_models[name]
    model = students.create_model(name, channels_last=channels_last)
    model.load_state_dict(students.convert_timm_state_dict(reference.state_dict()))
    model.eval()
    res = model.default_resolution
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x)
        theirs = reference(x)
    assert theirs.std() > 0.5, "test weights must give logits with a real spread"
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


def test_classify_on_pre_logits_is_the_logits_path():
    model = students.create_model("mnv4_conv_s", num_classes=10, drop_rate=0.5).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.classify(pre), model(x))
    assert pre.shape == (2, 1280)


@pytest.mark.parametrize("name", TIERED)
def test_every_parameter_gets_a_gradient_in_one_training_step(name):
    torch.manual_seed(0)
    model = students.create_model(name, num_classes=10, drop_path_rate=0.1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    no_grad = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad
    optimizer.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged


def test_drop_path_is_active_only_in_training():
    torch.manual_seed(0)
    model = students.create_model("mnv4_conv_s", drop_rate=0.0, drop_path_rate=0.5)
    rates = [m.p for m in model.modules() if type(m).__name__ == "StochasticDepth"]
    assert rates and max(rates) < 0.5 and min(rates) > 0
    x = torch.randn(4, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()  # isolate drop path: BN in eval so only stochastic depth can differ
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))


def test_drop_path_follows_timms_linear_schedule():
    model = students.create_model("mnv4_hybrid_m", drop_path_rate=0.1)
    # timm's _efficientnet_builder.py: block j of N = 32 gets 0.1 * j / 32; blocks.2.1 has j = 4.
    assert model.blocks[2][1].drop_path.p == pytest.approx(0.1 * 4 / 32)
    assert model.blocks[3][15].drop_path.p == pytest.approx(0.1 * 30 / 32)


@pytest.mark.parametrize("name", TIERED)
def test_features_head_and_intermediates(name, default_models):
    model = default_models[name].eval()
    assert (model.num_features, model.head_hidden_size) == (960, 1280)
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 960, 4, 3)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 1280)
        assert model.forward_head(feats).shape == (1, 1000)
        maps = model.forward_intermediates(x)
    assert [m.shape[-1] for m in maps] == [48, 24, 12, 6, 3]
    assert [m.shape[1] for m in maps] == [i["channels"] for i in model.feature_info]
    assert [i["stride"] for i in model.feature_info] == [2, 4, 8, 16, 32]
    assert maps[-1].shape[1] == 960
    torch.testing.assert_close(maps[-1], feats)


@pytest.fixture(scope="module")
def hybrid_m_7() -> nn.Module:
    return students.create_model("mnv4_hybrid_m", num_classes=7).eval()


@pytest.mark.parametrize(
    "resolution", [32, 64, *(pytest.param(r, marks=pytest.mark.slow) for r in (160, 224, 288))]
)
def test_any_resolution_divisible_by_32_runs(resolution, hybrid_m_7):
    model = hybrid_m_7
    with torch.no_grad():
        assert model(torch.randn(1, 3, resolution, resolution)).shape == (1, 7)


def test_channels_last_and_contiguous_inputs_agree(default_models):
    model = default_models["mnv4_hybrid_m"].eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a = model(x)
        b = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(a, b)
    assert all(
        p.is_contiguous(memory_format=torch.channels_last)
        for p in model.parameters()
        if p.ndim == 4
    )


def test_batch_size_one_in_eval_mode(default_models):
    model = default_models["mnv4_conv_s"].eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_mqa_has_one_shared_key_and_value_head(default_models):
    block = default_models["mnv4_hybrid_l"].blocks[2][7]
    attn = block.attn
    assert isinstance(attn, MultiQueryAttention)
    assert attn.query.proj.weight.shape == (8 * 48, 192, 1, 1)
    assert attn.key.proj.weight.shape == (48, 192, 1, 1)
    assert attn.value.proj.weight.shape == (48, 192, 1, 1)
    assert attn.key.down_conv.stride == (2, 2)
    assert block.layer_scale.gamma.flatten().tolist() == pytest.approx([1e-5] * 192)


@pytest.mark.slow  # three hybrid networks
def test_mhsa_and_no_attention_variants_for_the_ablation():
    mqa = students.create_model("mnv4_hybrid_m")
    mhsa = students.create_model("mnv4_hybrid_m", attention="mhsa")
    none = students.create_model("mnv4_hybrid_m", attention="none")
    assert count_params(none) < count_params(mqa) < count_params(mhsa)
    assert len(none.blocks[2]) == len(mqa.blocks[2]) - 4
    with torch.no_grad():
        assert mhsa.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_unknown_name_lists_the_available_students():
    with pytest.raises(ValueError, match="mnv4_conv_s, mnv4_conv_m, .*mnv4_hybrid_l"):
        students.create_model("mnv4_conv_xl")


def test_unknown_keyword_is_an_error_not_ignored():
    with pytest.raises(TypeError):
        students.create_model("mnv4_conv_s", drop_pth_rate=0.1)


@pytest.mark.parametrize(
    "shape, fragment",
    [((3, 224, 224), r"\[B, 3, H, W\].*\(3, 224, 224\)"), ((1, 1, 64, 64), r"\(1, 1, 64, 64\)")],
)
def test_malformed_input_names_the_expected_shape(shape, fragment, default_models):
    model = default_models["mnv4_conv_s"].eval()
    with pytest.raises(ValueError, match=fragment):
        model(torch.randn(*shape))
