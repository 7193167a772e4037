"""Distillation losses, computed in fp32 whatever the training precision.

Every loss takes the student's logits and the teacher's *probabilities* at the loss temperature
T (stored labels re-softened by ``soften``, or the online teacher's softmax(logits / T)), never
the teacher's logits: log p differs from the logits by a per-sample constant, so p already holds
everything a logit-based loss needs. Each is a mean over the batch.

``soft_ce``: cross-entropy between stored teacher probabilities and the student's softmax, the
paper's offline loss (arXiv 2404.10518 §8); it equals KL up to the teacher's (constant) entropy.
``kl``: T^2 * KL(softmax(teacher/T) || softmax(student/T)), Beyer et al.'s function matching;
the T^2 factor is always applied (torchdistill's ``KDLoss`` drops it when alpha = 0).
``dkd``: decoupled KD (Zhao et al., CVPR 2022), T^2 * (alpha * TCKD + beta * NCKD). TCKD is the
KL between the binary (target, rest) distributions, NCKD the KL between the distributions over
the non-target classes renormalised; classical KD is TCKD + (1 - p_target) * NCKD. The target is
the ground-truth class where the batch knows it and the teacher's argmax where it does not
(label -1: the unlabelled extra set, and any set stored without classes). mdistiller's warm-up
of the DKD weight is left out: its ImageNet configs set WARMUP 1 with epochs counted from 1, so
the weight is full from the first step there.
``dist``: DIST (Huang et al., NeurIPS 2022), tau^2 * (beta * inter + gamma * intra) with
inter = 1 - mean Pearson correlation per sample over the classes and intra = 1 - mean Pearson
correlation per class over the batch, both between softmax(student/tau) and the teacher's
probabilities at tau.
``standardize`` (Sun et al., CVPR 2024, for soft_ce, kl and dkd): the student's logits and the
teacher's log-probabilities are z-scored per sample ((x - mean) / std, unbiased std as in the
authors' code) before the softmax at T, which then acts as their base temperature. The z-score
of log p equals the z-score of the teacher's logits, whatever T the probabilities were made at.

Top-k stored labels: ``data.labels.decode_soft_label`` scatters the k stored probabilities into
zeros and renormalises them, so the mass outside the top-k is unknown. Without standardisation
every loss uses that distribution as it is (zero outside the top-k: 0 * log 0 = 0 in the KL and
CE terms, zeros in the Pearson correlations; ``soften`` keeps the zeros). Standardisation needs a
finite value for every class: ``teacher_log_probs`` puts each missing class one rank step below
the k-th stored log-probability, the step being the stored range over k - 1 (log p_1 - log p_k)
/ (k - 1), as if the log-probabilities kept falling at their mean rate; with one stored class, or
all tied, the step is 1 (then any step gives the same z-score). The fill is shift- and
scale-invariant in log p, so the standardised teacher is the same at every T.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # distill.config checks its loss section with kd_params
    from distill.config import LossConfig

KINDS = ("soft_ce", "kl", "dkd", "dist")
STANDARDIZABLE = ("soft_ce", "kl", "dkd")
# the loss-specific keys of LossConfig for each kind, as the loss functions name them
PARAMS = {
    "dkd": {"alpha": "dkd_alpha", "beta": "dkd_beta"},
    "dist": {"beta": "dist_beta", "gamma": "dist_gamma"},
}
EPS = 1e-7  # z-score denominator (Sun et al.'s code)
PEARSON_EPS = 1e-8  # Pearson denominator (Huang et al.'s code)


def soft_cross_entropy(student_logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_c p_teacher(c) log p_student(c)."""
    log_p = F.log_softmax(student_logits.float(), dim=-1)
    return -(teacher_probs.float() * log_p).sum(-1).mean()


def kl_divergence(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """T^2 * KL(teacher || student) with the student softened by T; ``teacher_probs`` at T."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return F.kl_div(log_p, teacher_probs.float(), reduction="batchmean") * temperature**2


# -- teacher probabilities as logits -------------------------------------------------------------
def soften(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T) renormalised, i.e. softmax(log p / T): the teacher at temperature T from its
    probabilities at 1. Zeros (classes outside stored top-k labels) stay zero."""
    p = probs.float()
    if temperature == 1.0:
        return p
    log_p = torch.where(p > 0, p.clamp_min(torch.finfo(torch.float32).tiny).log(), -torch.inf)
    return F.softmax(log_p / temperature, dim=-1)


def teacher_log_probs(probs: torch.Tensor) -> torch.Tensor:
    """Finite log-probabilities [B, C] (logits up to a per-sample constant) from probabilities
    that may be zero outside a stored top-k: each zero goes one rank step below the smallest
    stored log-probability (module docstring)."""
    p = probs.float()
    stored = p > 0
    log_p = p.clamp_min(torch.finfo(torch.float32).tiny).log()
    if bool(stored.all()):
        return log_p
    hi = log_p.masked_fill(~stored, -torch.inf).amax(-1, keepdim=True)
    lo = log_p.masked_fill(~stored, torch.inf).amin(-1, keepdim=True)
    k = stored.sum(-1, keepdim=True)
    step = (hi - lo) / (k - 1).clamp_min(1)
    step = torch.where(step > 0, step, torch.ones_like(step))
    return torch.where(stored, log_p, lo - step)


def zscore(x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / (std + eps) per sample over the classes (unbiased std, Sun et al.)."""
    x = x.float()
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + EPS)


def standardized(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit standardisation: the z-scored student logits and softmax(z-scored teacher / T)."""
    teacher = F.softmax(zscore(teacher_log_probs(teacher_probs)) / temperature, dim=-1)
    return zscore(student_logits), teacher


# -- DKD -----------------------------------------------------------------------------------------
def dkd_target(labels: torch.Tensor | None, teacher_probs: torch.Tensor) -> torch.Tensor:
    """The ground-truth class where known (>= 0), else the teacher's argmax."""
    argmax = teacher_probs.argmax(-1)
    if labels is None:
        return argmax
    return torch.where(labels >= 0, labels.to(argmax.device), argmax)


def dkd_terms(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    target: torch.Tensor,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample TCKD and NCKD [B] (without T^2). A teacher row with no non-target mass (a
    one-hot label) has no non-target distribution: its NCKD is 0."""
    s = student_logits.float() / temperature
    p = teacher_probs.float()
    onehot = F.one_hot(target.long(), s.shape[-1]).bool()
    lse = torch.logsumexp(s, -1)
    lse_rest = torch.logsumexp(s.masked_fill(onehot, -torch.inf), -1)
    s_target = s.gather(-1, target.long().view(-1, 1)).squeeze(-1)
    log_b_student = torch.stack([s_target - lse, lse_rest - lse], -1)  # log (p_t, 1 - p_t)
    rest = p.masked_fill(onehot, 0.0)
    mass_rest = rest.sum(-1)
    b_teacher = torch.stack([p.gather(-1, target.long().view(-1, 1)).squeeze(-1), mass_rest], -1)
    tckd = (torch.xlogy(b_teacher, b_teacher) - b_teacher * log_b_student).sum(-1)
    q_teacher = rest / mass_rest.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(-1)
    log_q_student = s - lse_rest.unsqueeze(-1)  # finite; its target entry meets q_teacher = 0
    nckd = (torch.xlogy(q_teacher, q_teacher) - q_teacher * log_q_student).sum(-1)
    return tckd, nckd


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """T^2 * mean(alpha * TCKD + beta * NCKD); ``teacher_probs`` at T."""
    tckd, nckd = dkd_terms(student_logits, teacher_probs, target, temperature)
    return (alpha * tckd + beta * nckd).mean() * temperature**2


# -- DIST ----------------------------------------------------------------------------------------
def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of the rows of ``a`` and ``b`` [N, D] -> [N]."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + PEARSON_EPS)


def inter_class_relation(y_student: torch.Tensor, y_teacher: torch.Tensor) -> torch.Tensor:
    """1 - mean over samples of the Pearson correlation over the classes."""
    return 1.0 - pearson(y_student, y_teacher).mean()


def intra_class_relation(y_student: torch.Tensor, y_teacher: torch.Tensor) -> torch.Tensor:
    """1 - mean over classes of the Pearson correlation over the batch."""
    return inter_class_relation(y_student.transpose(0, 1), y_teacher.transpose(0, 1))


def dist_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    beta: float,
    gamma: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """tau^2 * (beta * inter + gamma * intra); ``teacher_probs`` at tau."""
    y_s = F.softmax(student_logits.float() / temperature, dim=-1)
    y_t = teacher_probs.float()
    inter = inter_class_relation(y_s, y_t)
    intra = intra_class_relation(y_s, y_t)
    return (beta * inter + gamma * intra) * temperature**2


# -- dispatch ------------------------------------------------------------------------------------
def kd_params(cfg: LossConfig) -> dict[str, float]:
    """The loss-specific weights of ``cfg.kind``, checked: kind known, every weight set,
    standardisation only where it is defined."""
    kind = cfg.kind
    if kind not in KINDS:
        raise ValueError(f"unknown distillation loss {kind!r}; expected one of {KINDS}")
    if cfg.standardize and kind not in STANDARDIZABLE:
        raise ValueError(f"loss.standardize is defined for {STANDARDIZABLE}, not {kind!r}")
    params = {name: getattr(cfg, key) for name, key in PARAMS.get(kind, {}).items()}
    unset = [PARAMS[kind][name] for name, v in params.items() if v is None]
    if unset:
        raise ValueError(
            f"loss.kind={kind} needs loss.{', loss.'.join(unset)} (conf/loss/{kind}.yaml)"
        )
    return {k: float(v) for k, v in params.items()}


def kd_loss(
    kind: str,
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float = 1.0,
    *,
    labels: torch.Tensor | None = None,
    standardize: bool = False,
    **params: float,
) -> torch.Tensor:
    """The named distillation loss; ``teacher_probs`` at ``temperature``; ``labels`` (-1 where
    unknown) give DKD its target; ``params`` are the kind's weights (``kd_params``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown distillation loss {kind!r}; expected one of {KINDS}")
    if kind == "soft_ce" and temperature != 1.0:
        raise ValueError("soft_ce uses the stored T=1 labels; use kind=kl for a temperature")
    # DKD's target comes from the teacher before standardisation (its argmax is unchanged)
    target = dkd_target(labels, teacher_probs) if kind == "dkd" else None
    if standardize:
        if kind not in STANDARDIZABLE:
            raise ValueError(f"standardize is defined for {STANDARDIZABLE}, not {kind!r}")
        student_logits, teacher_probs = standardized(student_logits, teacher_probs, temperature)
    if kind == "soft_ce":
        return soft_cross_entropy(student_logits, teacher_probs)
    if kind == "kl":
        return kl_divergence(student_logits, teacher_probs, temperature)
    if kind == "dkd":
        return dkd_loss(student_logits, teacher_probs, target, temperature=temperature, **params)
    return dist_loss(student_logits, teacher_probs, temperature=temperature, **params)
