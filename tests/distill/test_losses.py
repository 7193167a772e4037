"""The distillation losses against their papers' definitions on small hand-checkable tensors,
and one short real-trainer run of each new loss (offline and online)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from distill.config import module_sections
from distill.losses import (
    dist_loss,
    dkd_loss,
    dkd_target,
    dkd_terms,
    inter_class_relation,
    intra_class_relation,
    kd_loss,
    kd_params,
    kl_divergence,
    soft_cross_entropy,
    soften,
    teacher_log_probs,
    zscore,
)

from .conftest import compose_train


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_soft_cross_entropy_is_kl_plus_the_teacher_entropy():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(8, 10, generator=g), torch.randn(8, 10, generator=g).softmax(1)
    entropy = -(teacher * teacher.log()).sum(1).mean()
    torch.testing.assert_close(
        soft_cross_entropy(student, teacher), kl_divergence(student, teacher) + entropy
    )


def test_kl_scales_by_t_squared_and_is_zero_at_the_teacher():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, generator=g)
    t = 3.0
    teacher = F.softmax(logits / t, 1)
    assert kl_divergence(logits, teacher, t).abs() < 1e-6
    other = torch.randn(4, 5, generator=g)
    manual = F.kl_div(F.log_softmax(other / t, 1), teacher, reduction="batchmean") * t * t
    torch.testing.assert_close(kd_loss("kl", other, teacher, t), manual)


def test_bad_kind_and_softened_soft_ce_are_errors():
    x, p = torch.randn(2, 3), torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match="unknown distillation loss"):
        kd_loss("mse", x, p)
    with pytest.raises(ValueError, match="use kind=kl"):
        kd_loss("soft_ce", x, p, temperature=2.0)
    with pytest.raises(ValueError, match="standardize is defined"):
        kd_loss("dist", x, p, standardize=True, beta=1.0, gamma=1.0)


def test_losses_are_computed_in_fp32_under_bf16():
    x = torch.randn(2, 3).bfloat16()
    assert soft_cross_entropy(x, torch.full((2, 3), 1 / 3)).dtype == torch.float32
    p = torch.full((2, 3), 1 / 3).bfloat16()
    for kind, params in [("dkd", {"alpha": 1.0, "beta": 1.0}), ("dist", {"beta": 1, "gamma": 1})]:
        assert kd_loss(kind, x, p, **params).dtype == torch.float32


# -- DKD -----------------------------------------------------------------------------------------
def test_dkd_by_hand_on_three_classes():
    # student uniform, teacher (0.5, 0.25, 0.25), target 0: TCKD = KL((.5,.5)||(1/3,2/3)),
    # NCKD = KL((.5,.5)||(.5,.5)) = 0
    s = torch.zeros(1, 3)
    p = torch.tensor([[0.5, 0.25, 0.25]])
    tckd, nckd = dkd_terms(s, p, torch.tensor([0]))
    expected = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    assert tckd.item() == pytest.approx(expected, abs=1e-6)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)
    # a different target: the target column is 0.25, the rest (0.5, 0.25) -> (2/3, 1/3)
    tckd, nckd = dkd_terms(s, p, torch.tensor([2]))
    nckd_hand = (2 / 3) * math.log((2 / 3) / 0.5) + (1 / 3) * math.log((1 / 3) / 0.5)
    assert nckd.item() == pytest.approx(nckd_hand, abs=1e-6)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_dkd_recovers_classical_kd(t):
    """KL(p_T || q_T) = TCKD + (1 - p_T[target]) * NCKD per sample (Zhao et al., eq. 7)."""
    s, z = _randn(6, 7, seed=2), _randn(6, 7, seed=3) * 3
    p = F.softmax(z / t, 1)
    target = torch.tensor([0, 1, 2, 3, 4, 6])
    tckd, nckd = dkd_terms(s, p, target, t)
    kl = F.kl_div(F.log_softmax(s / t, 1), p, reduction="none").sum(1)
    p_t = p.gather(1, target.view(-1, 1)).squeeze(1)
    torch.testing.assert_close(tckd + (1 - p_t) * nckd, kl)
    # one sample: alpha = 1, beta = 1 - p_t is KD with its T^2
    one = dkd_loss(s[:1], p[:1], target[:1], 1.0, float(1 - p_t[0]), t)
    torch.testing.assert_close(one, kl_divergence(s[:1], p[:1], t))


def test_dkd_is_zero_at_the_teacher_and_targets_the_teacher_where_unlabelled():
    z = _randn(4, 5, seed=4)
    p = F.softmax(z / 2, 1)
    labels = torch.tensor([1, -1, 3, -1])
    assert dkd_target(labels, p).tolist() == [1, int(p[1].argmax()), 3, int(p[3].argmax())]
    loss = kd_loss("dkd", z, p, 2.0, labels=labels, alpha=1.0, beta=2.0)
    assert loss.abs() < 1e-6


def test_dkd_with_a_one_hot_teacher_has_no_nckd_and_finite_gradients():
    s = _randn(2, 4, seed=5).requires_grad_()
    p = F.one_hot(torch.tensor([2, 0]), 4).float()
    tckd, nckd = dkd_terms(s, p, torch.tensor([2, 0]))
    assert torch.equal(nckd, torch.zeros(2))
    (tckd.sum() + nckd.sum()).backward()
    assert torch.isfinite(s.grad).all()


# -- DIST ----------------------------------------------------------------------------------------
def test_dist_is_zero_for_identical_predictions_and_scales_by_tau_squared():
    z = _randn(8, 6, seed=6)
    for tau in (1.0, 4.0):
        loss = dist_loss(z, F.softmax(z / tau, 1), beta=2.0, gamma=2.0, temperature=tau)
        assert loss.abs() < 1e-4  # the correlations' eps on near-uniform softmaxes at tau = 4
    other = _randn(8, 6, seed=7)
    p4 = F.softmax(z / 4, 1)
    y4 = F.softmax(other / 4, 1)
    manual = 16 * (inter_class_relation(y4, p4) + 3 * intra_class_relation(y4, p4))
    torch.testing.assert_close(dist_loss(other, p4, 1.0, 3.0, 4.0), manual)


def test_dist_relations_by_hand_and_their_invariance():
    u, v = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[3.0, 2.0, 1.0]])
    assert inter_class_relation(u, u).item() == pytest.approx(0.0, abs=1e-6)
    assert inter_class_relation(u, v).item() == pytest.approx(2.0, abs=1e-6)  # r = -1
    # Pearson distance ignores a positive scale and a shift of either side (Huang et al. §3.2)
    a, b = _randn(5, 7, seed=8), _randn(5, 7, seed=9)
    torch.testing.assert_close(inter_class_relation(3 * a + 1, b), inter_class_relation(a, b))
    torch.testing.assert_close(intra_class_relation(a, 0.5 * b - 2), intra_class_relation(a, b))
    # intra is inter on the transposed [classes, batch] matrix, by hand for two classes
    y_s = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    y_t = torch.tensor([[0.7, 0.3], [0.1, 0.9], [0.4, 0.6]])
    r = torch.corrcoef(torch.stack([y_s[:, 0], y_t[:, 0]]))[0, 1]  # both columns agree
    assert intra_class_relation(y_s, y_t).item() == pytest.approx(1 - r.item(), abs=1e-5)


# -- logit standardisation -----------------------------------------------------------------------
def test_zscore_has_zero_mean_and_unit_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 6.0]])
    z = zscore(x)
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert z.std().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(zscore(5 * x - 7), z)


@pytest.mark.parametrize(
    "kind,t,params",
    [("kl", 2.0, {}), ("soft_ce", 1.0, {}), ("dkd", 2.0, {"alpha": 1.0, "beta": 8.0})],
)
def test_standardised_losses_ignore_the_logits_scale_and_shift(kind, t, params):
    s, z = _randn(4, 6, seed=10), _randn(4, 6, seed=11) * 2
    labels = torch.tensor([0, -1, 5, 2])

    def loss(student, teacher_logits):
        p = F.softmax(teacher_logits / t, 1)
        return kd_loss(kind, student, p, t, labels=labels, standardize=True, **params)

    base = loss(s, z)
    shift = _randn(4, 1, seed=12)
    torch.testing.assert_close(loss(3 * s + shift, z), base)  # student scaled and shifted
    torch.testing.assert_close(loss(s, 0.25 * z - shift), base)  # teacher at another T
    assert loss(z, z).abs() < 1e-5 if kind != "soft_ce" else True  # same standardised logits
    plain = kd_loss(kind, s, F.softmax(z / t, 1), t, labels=labels, **params)
    assert not torch.allclose(plain, base)


def test_standardised_kl_is_kl_on_zscored_logits():
    s, z = _randn(3, 5, seed=13), _randn(3, 5, seed=14)
    t = 2.0
    expected = kl_divergence(zscore(s), F.softmax(zscore(z) / t, 1), t)
    torch.testing.assert_close(kd_loss("kl", s, F.softmax(z, 1), t, standardize=True), expected)


# -- top-k stored labels -------------------------------------------------------------------------
def test_top_k_missing_classes_sit_one_rank_step_below_the_kth():
    # top-3 of 6 classes, renormalised as data.labels.decode_soft_label does
    p = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]])
    log_p = teacher_log_probs(p)
    step = (math.log(0.5) - math.log(0.2)) / 2
    assert log_p[0, [1, 3, 4]].tolist() == pytest.approx([math.log(x) for x in (0.5, 0.3, 0.2)])
    assert log_p[0, [0, 2, 5]].tolist() == pytest.approx([math.log(0.2) - step] * 3)
    # one stored class (or all tied): any gap gives the same z-score, the fill uses 1
    one = teacher_log_probs(torch.tensor([[0.0, 1.0, 0.0]]))
    assert one[0].tolist() == pytest.approx([-1.0, 0.0, -1.0])
    full = F.softmax(_randn(2, 5, seed=15), 1)
    torch.testing.assert_close(teacher_log_probs(full), full.log())


def test_soften_keeps_top_k_zeros_and_matches_the_teacher_at_t():
    z = _randn(3, 6, seed=16)
    torch.testing.assert_close(soften(F.softmax(z, 1), 3.0), F.softmax(z / 3, 1))
    p = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2, 0.0]])
    soft = soften(p, 2.0)
    assert torch.equal(soft == 0, p == 0)
    hand = torch.tensor([0.5, 0.3, 0.2]).sqrt()
    torch.testing.assert_close(soft[0, [1, 3, 4]], hand / hand.sum())


@pytest.mark.parametrize(
    "kind,params",
    [
        ("soft_ce", {}),
        ("kl", {}),
        ("dkd", {"alpha": 1.0, "beta": 2.0}),
        ("dist", {"beta": 2.0, "gamma": 2.0}),
    ],
)
@pytest.mark.parametrize("standardize", [False, True])
def test_top_k_labels_give_finite_losses_and_gradients(kind, params, standardize):
    if kind == "dist" and standardize:
        pytest.skip("standardisation is not defined for DIST")
    full = F.softmax(_randn(4, 8, seed=17) * 3, 1)
    top = full.topk(2, dim=1)
    p = torch.zeros_like(full).scatter_(1, top.indices, top.values)
    p = p / p.sum(1, keepdim=True)
    t = 1.0 if kind == "soft_ce" else 2.0
    s = _randn(4, 8, seed=18).requires_grad_()
    labels = torch.tensor([-1, 3, -1, 0])  # 3 and 0 may lie outside the top-2
    loss = kd_loss(kind, s, soften(p, t), t, labels=labels, standardize=standardize, **params)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    if standardize:  # the fill is scale-invariant: the same loss whatever T made the labels
        again = kd_loss(kind, s, p, t, labels=labels, standardize=True, **params)
        torch.testing.assert_close(again, loss)


# -- configuration -------------------------------------------------------------------------------
def test_loss_files_carry_the_papers_weights_and_check_them():
    from distill.config import train_defaults

    dkd = train_defaults(["loss=dkd"]).loss
    assert (dkd.kind, dkd.dkd_alpha, dkd.dkd_beta, dkd.temperature) == (
        "dkd",
        1.0,
        2.0,
        1.0,
    )
    assert kd_params(dkd) == {"alpha": 1.0, "beta": 2.0}
    dist = train_defaults(["loss=dist"]).loss
    assert kd_params(dist) == {"beta": 2.0, "gamma": 2.0} and not dist.standardize
    default = train_defaults().loss  # kl_std: the loss table's best on digits
    assert (default.kind, default.temperature, default.standardize) == ("kl", 2.0, True)
    assert kd_params(default) == {}
    paper = train_defaults(["+experiment=paper_distill_imagenet"]).loss
    assert (paper.kind, paper.standardize) == ("soft_ce", False)
    with pytest.raises(ValueError, match="needs loss.dkd_alpha"):
        kd_params(SimpleNamespace(**{**vars(default), "kind": "dkd"}))
    with pytest.raises(ValueError, match="standardize is defined"):
        kd_params(SimpleNamespace(**{**vars(dist), "standardize": True}))
    with pytest.raises(ConfigCompositionException, match="standardise"):
        train_defaults(["loss=dkd", "loss.standardise=true"])  # typed schema: misspelt key


# -- end to end ----------------------------------------------------------------------------------
E2E = [
    ("offline", ["loss=dkd"]),
    ("online", ["loss=dkd", "loss.standardize=true"]),
    ("offline", ["loss=dist"]),
    ("online", ["loss=dist"]),
    ("offline", ["loss=kl", "loss.standardize=true", "loss.temperature=2.0"]),
    ("offline", ["loss=soft_ce", "loss.standardize=true"]),
]


@pytest.mark.slow  # a real Lightning fit per loss
@pytest.mark.parametrize("mode,overrides", E2E, ids=[" ".join(o) + f" {m}" for m, o in E2E])
def test_each_loss_trains_a_few_steps_with_a_real_trainer(mode, overrides, tiny_cache, tmp_path):
    from data.datamodule import DistillDataModule
    from data.teacher_setup import teacher_from_config
    from distill.module import DistillModule

    cfg = compose_train(["+student=mnv4_conv_s", *tiny_cache, *overrides], tmp_path)
    c = OmegaConf.to_object(cfg)
    teacher = teacher_from_config(c.teacher, num_classes=10) if mode == "online" else None
    module = DistillModule("mnv4_conv_s", 10, teacher, mode=mode, **module_sections(c))
    dm = DistillDataModule(
        c.data.root,
        c.data.train_sets,
        "val",
        batch_size=8,
        num_workers=0,
        samples_per_epoch=16,
        mode=mode,
        online=c.data.online,
        shuffle_buffer=8,
    )
    before = module.student.classifier.weight.detach().clone()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 2
    assert torch.isfinite(trainer.callback_metrics["train/loss_kd"])
    assert not torch.equal(module.student.classifier.weight, before)
