"""Add cached-teacher distillation to a training loop you do not own.

Many trainers take a model, a data loader, an optimiser and a function that returns the loss of
one batch. ``their_train`` below stands in for such a trainer (timm's, Lightning's, your paper's);
nothing in it knows about distillation, nor about epochs. Plugging in the cache takes two things:
the :class:`mlkd_cache.CachedViews` dataset with its sampler (each pass over the loader is the
next epoch, so every sample replays the next of its cached views) and collate function, and a
loss function that adds the distiller's terms.

    python examples/plug_into_your_loop.py -c digits/resnet10t_to_test_resnet_l2d.py --cache runs/cache --epochs 2
"""

import argparse
from typing import Callable

import torch
from torch.utils.data import DataLoader

import mlkd_cache as mc


def their_train(model, loader, loss_fn: Callable, optimizer, epochs: int) -> None:
    """A trainer you do not own: it only calls ``loss_fn(model, batch)``."""
    for epoch in range(epochs):
        model.train()
        for batch in loader:
            loss = loss_fn(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")


def distillation_loss(views: mc.CachedViews, distiller: mc.Distiller, device: torch.device) -> Callable:
    """``loss_fn(model, batch)``: the hard-label loss plus every term of ``distiller``."""
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")

    def loss_fn(model, batch: mc.CachedBatch) -> torch.Tensor:
        labels = batch.labels.to(device)
        out = model(batch.image.to(device))
        kd = mc.KDBatch(y=labels, z_s=out.logits, f_s=out.features, e_s=out.label_emb, **views.targets(batch, device))
        return bce(out.logits, labels) + sum(distiller(kd).values())

    return loss_fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    cfg = mc.load_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train_set = mc.dataset_from_config(cfg, "train")
    cache = mc.open_cache(args.cache, train_set, mc.TransformSpec.from_config(cfg))
    views = mc.CachedViews(train_set, cache)
    loader = DataLoader(views, cfg.batch_size, sampler=views.sampler(), drop_last=True, collate_fn=views.collate)

    classes = len(train_set.class_names)
    model = mc.build_model(cfg.model_s, classes, embed_dim=cfg.embed_dim, img_size=cfg.img_size).to(device)
    distiller = mc.Distiller.from_config(
        cfg.criterion_t2s_para, num_classes=classes, student_embed_dim=cfg.embed_dim, teacher_embed_dim=cache.spec.embed_dim
    ).to(device)
    if distiller.needs_prototypes:
        distiller.set_prototypes(mc.load_or_compute_prototypes(cache).to(device))
    optimizer = torch.optim.Adam([*model.parameters(), *distiller.extra_parameters()], lr=cfg.lr_s)
    their_train(model, loader, distillation_loss(views, distiller, device), optimizer, args.epochs)


if __name__ == "__main__":
    main()
