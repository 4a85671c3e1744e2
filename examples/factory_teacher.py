"""Distil from a teacher of your own: a plain timm classifier (logits only) named by a factory.

    python examples/factory_teacher.py -c digits/resnet10t_to_test_resnet_l2d.py --out runs/factory

1. Your model: a timm classifier trained with BCE (a short run here stands in for yours).
2. The factory `bce_classifier()` rebuilds it from its saved weights: (model, class_names).
3. `mlkd-cache dump-targets --teacher factory_teacher:bce_classifier` caches what it gives:
   logits alone (no features, no label-wise embeddings; recorded as absent in the cache).
4. `mlkd-cache distill-student` with MLD, a loss of logits (L2D's LED would be refused in one line).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import timm
import torch
from torch.utils.data import DataLoader

import mlkd_cache as mc

WEIGHTS = "BCE_TEACHER_WEIGHTS"  # the environment variable naming the factory's weights file
MLD = "criterion_t2s_para=dict(name='MLD', para=dict(lambda_logits=10.0, logits_dis=dict(name='MLD', para=dict())))"


def bce_classifier():
    """The factory: no arguments, returns (model, class names in the order of its logits)."""
    saved = torch.load(os.environ[WEIGHTS], weights_only=True)
    model = timm.create_model(saved["arch"], num_classes=len(saved["classes"]))
    model.load_state_dict(saved["state_dict"])
    return model, saved["classes"]


def train_classifier(cfg, epochs: int, path: Path) -> None:
    """Stands in for your own training: the config's model_t (a timm name), timm's own head, BCE."""
    train_set = mc.dataset_from_config(cfg, "train", "t")
    views = mc.ViewDataset(train_set, mc.TransformSpec.from_config(cfg), cfg.seed, train=True)
    torch.manual_seed(cfg.seed)
    model = timm.create_model(cfg.model_t, num_classes=len(train_set.class_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr_t)
    bce = torch.nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        model.train()
        views.set_epoch(epoch)  # a fresh augmentation every epoch
        for batch in DataLoader(views, cfg.batch_size, shuffle=True, drop_last=True):
            loss = bce(model(batch.image), batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}/{epochs}: teacher bce {loss.item():.3f}")
    state = {"arch": cfg.model_t, "classes": list(train_set.class_names), "state_dict": model.state_dict()}
    torch.save(state, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="config file, or a shipped one")
    parser.add_argument("--out", type=Path, default=Path("runs/factory"), help="folder for weights, cache, student")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's max_epoch_t and max_epoch_s")
    args = parser.parse_args()
    cfg = mc.load_config(args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "bce_classifier.pt"
    train_classifier(cfg, args.epochs or cfg.max_epoch_t, weights)
    here = str(Path(__file__).resolve().parent)  # the factory's module, put on the CLI's path
    env = {**os.environ, WEIGHTS: str(weights), "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}
    cache, epochs = str(args.out / "cache"), ["--epochs", str(args.epochs)] if args.epochs else []
    for command in (
        ["dump-targets", "-c", args.config, "--teacher", "factory_teacher:bce_classifier", "-o", cache],
        ["distill-student", "-c", args.config, "--cache", cache, "-o", str(args.out / "student"), "--set", MLD, *epochs],
    ):
        code = subprocess.run([sys.executable, "-m", "mlkd_cache", *command], env=env).returncode
        if code:  # the command printed its one-line error
            sys.exit(code)


if __name__ == "__main__":
    main()
