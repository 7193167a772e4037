"""Students vs timm on a CUDA GPU: logit parity, eval and training images/s under bf16 autocast.

The GPU counterpart of ``bench/students.py``. For each MNv4 model: timm's weights are loaded into
ours (BN statistics and layer scales randomised as in the parity tests) and the fp32
logits compared (TF32 off), then ours (channels_last, fused MQA kernel) is timed
against timm's NCHW default and timm in channels_last, alternated in one process, at the batch
sizes a GPU user trains with. On a machine without CUDA it says so and leaves earlier results be.
"""

from __future__ import annotations

import timm
import torch

import students
from bench.common import interleaved_medians, quick, table, write_result
from bench.students import candidate_input
from testkit.models import randomize_like_trained

EVAL_BATCH = 256
TRAIN_BATCH = 128
LARGE = {"mnv4_conv_l", "mnv4_hybrid_l"}


def _synced(fn, iters: int):
    def run() -> None:
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()

    return run


def _models(name: str, train: bool) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    theirs = timm.create_model(students.TIMM_NAMES[name])
    randomize_like_trained(theirs, students.SPECS[name].resolution)  # every branch matters
    ours = students.create_model(name)
    ours.load_state_dict(students.convert_timm_state_dict(theirs.state_dict()))
    theirs_cl = timm.create_model(students.TIMM_NAMES[name])
    theirs_cl.load_state_dict(theirs.state_dict())
    theirs_cl = theirs_cl.to(memory_format=torch.channels_last)
    models = {"ours": ours, "timm": theirs, "timm_cl": theirs_cl}
    return {k: m.cuda().train(train) for k, m in models.items()}


def parity(name: str) -> tuple[float, float]:
    """Max |ours - timm| over fp32 logits of a 4-image batch (same weights, TF32 off), and
    the spread (std) of timm's logits, so the difference can be read against their scale."""
    models = _models(name, train=False)
    res = students.SPECS[name].resolution
    x = torch.randn(4, 3, res, res, device="cuda")
    with torch.no_grad():
        ours, theirs = models["ours"](x), models["timm"](x)
    return (ours - theirs).abs().max().item(), theirs.std().item()


def speed(name: str, repeats: int) -> dict:
    res = students.SPECS[name].resolution
    eval_batch = EVAL_BATCH // 2 if name in LARGE else EVAL_BATCH
    train_batch = TRAIN_BATCH // 2 if name in LARGE else TRAIN_BATCH
    out: dict = {"model": name, "resolution": res}
    out["eval_batch"], out["train_batch"] = eval_batch, train_batch

    models = _models(name, train=False)
    x = torch.randn(eval_batch, 3, res, res, device="cuda")

    def eval_fn(model, inp):
        def step() -> None:
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                model(inp)

        return step

    fns = {k: _synced(eval_fn(m, candidate_input(k, x)), 5) for k, m in models.items()}
    t = interleaved_medians(fns, repeats, warmup=2)
    out["eval_img_s"] = {k: round(5 * eval_batch / v, 1) for k, v in t.items()}

    models = _models(name, train=True)
    x = torch.randn(train_batch, 3, res, res, device="cuda")
    y = torch.randint(0, 1000, (train_batch,), device="cuda")

    def train_fn(model, inp):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(inp), y)
            loss.backward()
            optimizer.step()

        return step

    fns = {k: _synced(train_fn(m, candidate_input(k, x)), 3) for k, m in models.items()}
    t = interleaved_medians(fns, repeats, warmup=2)
    out["train_img_s"] = {k: round(3 * train_batch / v, 1) for k, v in t.items()}
    for kind in ("eval", "train"):
        img_s = out[f"{kind}_img_s"]
        out[f"ratio_{kind}"] = round(img_s["ours"] / img_s["timm"], 3)
        out[f"ratio_{kind}_vs_timm_cl"] = round(img_s["ours"] / img_s["timm_cl"], 3)
    return out


def main() -> None:
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; keeping the results of the last GPU run")
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    diffs = {name: parity(name) for name in students.list_models()}
    for name, (d, spread) in diffs.items():
        print(f"{name}: max |ours - timm| fp32 logits = {d:.2e} (logit std {spread:.2f})")

    torch.backends.cudnn.benchmark = True
    repeats = 3 if quick() else 7
    rows = []
    for name in students.list_models():
        r = speed(name, repeats)
        r["parity_max_abs"], r["timm_logit_std"] = diffs[name]
        rows.append(r)
        print(
            f"{name}: eval x{r['ratio_eval']} train x{r['ratio_train']} "
            f"(vs timm channels_last: eval x{r['ratio_eval_vs_timm_cl']}, "
            f"train x{r['ratio_train_vs_timm_cl']})",
            flush=True,
        )
    gpu = torch.cuda.get_device_name()
    md = f"### Students vs timm on a GPU ({gpu}, bf16 autocast; ratio = ours / timm)\n\n"
    md += table(
        [
            "model @ res",
            "max abs logit diff vs timm, fp32 (timm logit std)",
            "eval img/s ours / timm (ratio)",
            "train img/s ours / timm (ratio)",
            "ratio vs timm channels_last (eval / train)",
        ],
        [
            [
                f"{r['model']} @{r['resolution']}",
                f"{r['parity_max_abs']:.1e} ({r['timm_logit_std']:.2f})",
                f"{r['eval_img_s']['ours']} / {r['eval_img_s']['timm']} (x{r['ratio_eval']})",
                f"{r['train_img_s']['ours']} / {r['train_img_s']['timm']} (x{r['ratio_train']})",
                f"x{r['ratio_eval_vs_timm_cl']} / x{r['ratio_train_vs_timm_cl']}",
            ]
            for r in rows
        ],
    )
    md += (
        f"\nEval batch {EVAL_BATCH} ({EVAL_BATCH // 2} for the L models), training step "
        f"(forward, backward, fused AdamW) batch {TRAIN_BATCH} ({TRAIN_BATCH // 2} for L); "
        f"{repeats} interleaved repeats of 5 (eval) or 3 (train) steps, cudnn.benchmark on.\n"
    )
    write_result("gpu", {"repeats": repeats, "models": rows}, md)


if __name__ == "__main__":
    main()
