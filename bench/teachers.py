"""Teacher inference speed and the storage cost of its soft labels.

1. Images/s of a large timm teacher and ``mnv4:mnv4_hybrid_l`` at their native resolutions:
   fp32 NCHW (baseline) vs channels_last, plus bf16 autocast when a GPU is present.
2. Bytes per sample of stored soft labels at 1000 classes: full fp16 vs top-k (k = 5, 10, 20), as
   the ``.npy`` payload and as a tar member (512-byte header, 512-byte blocks) in a shard.
"""

from __future__ import annotations

import torch

from bench.common import interleaved_medians, quick, table, write_result
from data.labels import encode_soft_label
from teachers import create_teacher

LARGE_TIMM = "timm:convnext_large.fb_in22k_ft_in1k"


def _tar_bytes(payload: int) -> int:
    return 512 + -(-payload // 512) * 512


def inference(repeats: int) -> list[dict]:
    rows = []
    for spec, batch in ((LARGE_TIMM, 4), ("mnv4:mnv4_hybrid_l", 8)):
        torch.manual_seed(0)
        variants = {
            "fp32 NCHW": create_teacher(spec, pretrained=False),
            "fp32 channels_last": create_teacher(spec, pretrained=False, channels_last=True),
        }
        if torch.cuda.is_available():
            for t in variants.values():
                t.cuda()
            variants["bf16 channels_last"] = create_teacher(
                spec, pretrained=False, channels_last=True, autocast_dtype=torch.bfloat16
            ).cuda()
        res = variants["fp32 NCHW"].preprocessing.input_size
        x = torch.rand(batch, 3, res, res)

        def run(teacher, x=x):
            teacher(x)
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        fns = {k: (lambda t=t: run(t)) for k, t in variants.items()}
        t = interleaved_medians(fns, repeats)
        ips = {k: round(batch / v, 2) for k, v in t.items()}
        base = ips["fp32 NCHW"]
        rows.append(
            {
                "teacher": spec,
                "resolution": res,
                "batch": batch,
                "images_per_s": ips,
                "speedup": {k: round(v / base, 3) for k, v in ips.items()},
            }
        )
        print(f"{spec} @{res}: {ips}", flush=True)
    return rows


def label_bytes() -> list[dict]:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1000, generator=g) * 3, 0)
    rows = []
    for k in (None, 5, 10, 20):
        if k is None:
            payload = encode_soft_label(probs.half().numpy())
        else:
            p, i = probs.topk(k)
            payload = encode_soft_label(p.half().numpy(), i.numpy())
        npy = len(payload)
        rows.append(
            {
                "labels": "full fp16" if k is None else f"top-{k}",
                "npy_bytes": npy,
                "tar_bytes": _tar_bytes(npy),
            }
        )
    return rows


def main() -> None:
    repeats = 2 if quick() else 4
    inf, sizes = inference(repeats), label_bytes()
    md = "### Teacher inference (images/s, medians of interleaved repeats)\n\n"
    md += table(
        ["teacher", "res", "batch", *inf[0]["images_per_s"].keys(), "channels_last speed-up"],
        [
            [
                r["teacher"],
                r["resolution"],
                r["batch"],
                *r["images_per_s"].values(),
                f"x{r['speedup']['fp32 channels_last']}",
            ]
            for r in inf
        ],
    )
    md += "\n### Soft-label storage per sample (1000 classes)\n\n"
    md += table(
        ["labels", ".npy bytes", "bytes in a tar shard"],
        [[r["labels"], r["npy_bytes"], r["tar_bytes"]] for r in sizes],
    )
    write_result("teachers", {"repeats": repeats, "inference": inf, "label_bytes": sizes}, md)


if __name__ == "__main__":
    main()
