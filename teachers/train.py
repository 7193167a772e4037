"""Training a teacher where none exists: a supervised Lightning recipe that writes a checkpoint.

AdamW (no weight decay on norms and biases), linear warm-up then cosine by steps, label
smoothing, Inception crop + RandAugment per sample and MixUp/CutMix per batch (torchvision). The
checkpoint records the spec, classes, preprocessing and the validation accuracy
(teachers/checkpoint.py), so ``create_teacher(path)`` reloads it as a frozen teacher.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from functools import partial
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from timm.optim import param_groups_weight_decay
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassAccuracy
from torchvision.transforms import v2

from common.images import EVAL_CROP_PCT, center_view
from common.schedule import warmup_cosine
from teachers.checkpoint import save_teacher
from teachers.evaluate import evaluate
from teachers.preprocess import Preprocessing
from teachers.recipe import TeacherRecipe
from teachers.zoo import BuiltModel, build_model

# python -m teachers.train's defaults: fine-tuning on an image folder (the Hydra apps read their
# recipe from conf/teacher/*.yaml instead)
CLI_DEFAULTS = TeacherRecipe(
    image_size=224,
    epochs=30,
    batch_size=64,
    lr=2e-3,
    weight_decay=0.05,
    warmup_epochs=2.0,
    label_smoothing=0.1,
    crop_scale=(0.35, 1.0),
    randaugment_ops=2,
    randaugment_magnitude=9,
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
    mix_prob=0.5,
    hflip=True,
    crop_pct=EVAL_CROP_PCT,
    seed=0,
    num_workers=0,
    accelerator="auto",
    devices=1,
    precision="32-true",
)


class ImageDataset(Dataset):
    """(image, label) pairs from a uint8 tensor [N, 3, H, W] or any (PIL image, label) dataset."""

    def __init__(self, images, labels: torch.Tensor | None, transform: v2.Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.labels is None:  # a torchvision-style dataset yielding (image, label)
            image, label = self.images[i]
        else:
            image, label = self.images[i], int(self.labels[i])
        return self.transform(image), label


def train_transform(recipe: TeacherRecipe) -> v2.Transform:
    """Inception crop, optional flip, RandAugment; uint8 CHW out."""
    ops: list[v2.Transform] = [
        v2.ToImage(),
        v2.RandomResizedCrop(recipe.image_size, scale=recipe.crop_scale, antialias=True),
    ]
    if recipe.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if recipe.randaugment_ops > 0:
        ops.append(v2.RandAugment(recipe.randaugment_ops, recipe.randaugment_magnitude))
    ops.append(v2.ToDtype(torch.uint8, scale=True))
    return v2.Compose(ops)


def eval_transform(recipe: TeacherRecipe) -> v2.Transform:
    """Resize to size / crop_pct, then centre crop (``common.images.center_view``); uint8 out."""
    view = partial(center_view, size=recipe.image_size, crop_pct=recipe.crop_pct)
    return v2.Compose([v2.ToImage(), v2.Lambda(view), v2.ToDtype(torch.uint8, scale=True)])


class SupervisedModule(L.LightningModule):
    """Cross-entropy training of a classifier on [0, 1] images with its own preprocessing."""

    def __init__(
        self, model: nn.Module, prep: Preprocessing, num_classes: int, recipe: TeacherRecipe
    ) -> None:
        super().__init__()
        self.model, self.prep, self.recipe = model, prep, recipe
        self.num_classes = num_classes
        mixers = []
        if recipe.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=recipe.mixup_alpha, num_classes=num_classes))
        if recipe.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(mixers) if mixers else None
        self.val_top1 = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.prep(images))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        x = self.prep(images)
        targets = labels
        if self.mix is not None and torch.rand(()) < self.recipe.mix_prob:
            x, targets = self.mix(x, labels)
        loss = F.cross_entropy(self.model(x), targets, label_smoothing=self.recipe.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        self.val_top1.update(self(images), labels)
        self.log("val/top1", self.val_top1, prog_bar=True, on_epoch=True)

    def configure_optimizers(self):
        groups = param_groups_weight_decay(self.model, self.recipe.weight_decay)
        optimizer = torch.optim.AdamW(groups, lr=self.recipe.lr)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, total // max(1, self.recipe.epochs))
        warmup = int(self.recipe.warmup_epochs * steps_per_epoch)
        scheduler = warmup_cosine(optimizer, warmup, total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def train_teacher(
    spec: str,
    train_images,
    train_labels: torch.Tensor | None,
    val_images,
    val_labels: torch.Tensor | None,
    num_classes: int,
    out: str | Path,
    recipe: TeacherRecipe,
    *,
    classes: list[str] | None = None,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    mean: tuple[float, float, float] | None = None,
    std: tuple[float, float, float] | None = None,
    logger=False,
) -> dict:
    """Train (or fine-tune) the network of ``spec`` and write a teacher checkpoint to ``out``.

    Images are a uint8 tensor [N, 3, H, W] with labels, or a torchvision-style dataset of
    (PIL image, label) with ``*_labels=None``. ``pretrained``/``checkpoint`` start from published
    or local weights (fine-tuning); the default trains from scratch.

    Returns the validation metrics and the checkpoint path.
    """
    L.seed_everything(recipe.seed, workers=True, verbose=False)
    built = _build(spec, num_classes, recipe, classes, checkpoint, pretrained, mean, std)
    train_loader, val_loader = _loaders(recipe, train_images, train_labels, val_images, val_labels)
    module = SupervisedModule(built.model, built.preprocessing, num_classes, recipe)
    _fit(module, recipe, train_loader, val_loader, Path(out).parent, logger)
    built.model.eval()
    metrics = evaluate(module.cpu().eval(), val_loader, num_classes)
    metrics.update(epochs=recipe.epochs, spec=spec)
    path = save_teacher(built, spec, out, {**metrics, "recipe": asdict(recipe)})
    return {**metrics, "path": str(path)}


def _build(spec, num_classes, recipe, classes, checkpoint, pretrained, mean, std) -> BuiltModel:
    """The network of ``spec`` with a ``num_classes`` head and the recipe's preprocessing."""
    built = build_model(spec, num_classes, checkpoint=checkpoint, pretrained=pretrained)
    built.preprocessing = Preprocessing(
        input_size=recipe.image_size,
        mean=mean or built.preprocessing.mean,
        std=std or built.preprocessing.std,
        interpolation="bicubic",
        crop_pct=recipe.crop_pct,
    )
    built.num_classes = num_classes
    built.classes = classes
    return built


def _loaders(recipe: TeacherRecipe, train_images, train_labels, val_images, val_labels):
    """Shuffled training batches (augmented) and validation batches (eval crop)."""
    train_set = ImageDataset(train_images, train_labels, train_transform(recipe))
    val_set = ImageDataset(val_images, val_labels, eval_transform(recipe))
    loader_kw = dict(batch_size=recipe.batch_size, num_workers=recipe.num_workers)
    train_loader = DataLoader(
        train_set, shuffle=True, drop_last=len(train_set) > recipe.batch_size, **loader_kw
    )
    return train_loader, DataLoader(val_set, **loader_kw)


def _fit(module, recipe: TeacherRecipe, train_loader, val_loader, root: Path, logger) -> None:
    """Run the Lightning fit of ``recipe.epochs`` epochs (no Lightning checkpoints)."""
    trainer = L.Trainer(
        max_epochs=recipe.epochs,
        accelerator=recipe.accelerator,
        devices=recipe.devices,
        precision=recipe.precision,
        logger=logger,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=str(root),
    )
    trainer.fit(module, train_loader, val_loader)


def _load_data(data: str, image_size: int, seed: int):
    """``digits`` (embedded) or an image folder root with ``train/`` and ``val/`` sub-folders.

    Digits are split as the dataset splits them (``common.digits.digits_split``): the teacher
    trains on the labelled split, as the app's own teacher does, and is validated on the val
    split distillation reports on, which it has never seen.

    Returns train images, labels, val images, labels, class names and the sources whose skipped
    inputs to report (none for digits).
    """
    if data == "digits":
        from common.digits import DIGIT_CLASSES, digits_split, load_digits_images

        images, labels = load_digits_images(image_size)
        split = digits_split(labels, seed=seed)
        tr, va = split["labelled"], split["val"]
        return images[tr], labels[tr], images[va], labels[va], DIGIT_CLASSES, []
    return _load_folder(Path(data))


def _load_folder(root: Path):
    """Read ``root/train`` and ``root/val`` with the reader ``python -m data.build`` uses.

    One reader means one rule set: bad files are skipped and listed, and an empty class folder
    keeps its class with 0 images (a warning), exactly as when building shards: both read
    folders with the primitives of common/folders.py.
    """
    from common.folders import ImageFolderSource, SourceError, SourceImages

    for part in ("train", "val"):
        if not (root / part).is_dir():
            raise SystemExit(f"--data {root}: expected an image folder with {part}/ inside")
    try:
        train, val = ImageFolderSource(root / "train"), ImageFolderSource(root / "val")
        if train.classes != val.classes:
            raise SystemExit(
                f"--data {root}: train/ and val/ have different class folders "
                f"({sorted(set(train.classes) ^ set(val.classes))} in only one of them)"
            )
        train_set, val_set = SourceImages(train).usable(), SourceImages(val).usable()
    except SourceError as e:
        raise SystemExit(f"--data {root}: {e}") from e
    return train_set, None, val_set, None, list(train.classes), [train, val]


def _skipped_report(sources: list) -> str:
    """Every input left out, by file and reason (the same listing ``data.build`` prints)."""
    parts = [s.skipped.report(s.describe()) for s in sources]
    return "\n".join(p for p in parts if p)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m teachers.train", description=__doc__)
    p.add_argument("--spec", required=True, help="timm:<name>, torchvision:<name> or mnv4:<name>")
    p.add_argument("--data", default="digits", help="'digits' or an ImageFolder root")
    p.add_argument("--out", type=Path, required=True, help="checkpoint path (.safetensors)")
    p.add_argument("--pretrained", action="store_true", help="fine-tune from published weights")
    p.add_argument("--checkpoint", type=Path, help="fine-tune from local weights")
    for field, value in asdict(CLI_DEFAULTS).items():
        if isinstance(value, tuple):
            continue
        kind = type(value) if not isinstance(value, bool) else (lambda s: s.lower() == "true")
        p.add_argument(f"--{field.replace('_', '-')}", type=kind, default=value)
    args = p.parse_args(argv)
    recipe = replace(
        CLI_DEFAULTS, **{k: getattr(args, k) for k in asdict(CLI_DEFAULTS) if hasattr(args, k)}
    )
    tr_x, tr_y, va_x, va_y, classes, sources = _load_data(args.data, recipe.image_size, recipe.seed)
    result = train_teacher(
        args.spec,
        tr_x,
        tr_y,
        va_x,
        va_y,
        len(classes),
        args.out,
        recipe,
        classes=classes,
        checkpoint=args.checkpoint,
        pretrained=args.pretrained,
    )
    print(
        f"teacher {args.spec}: val top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} "
        f"on {result['samples']} images -> {result['path']}"
    )
    report = _skipped_report(sources)
    if report:
        print(report)


if __name__ == "__main__":
    main()
