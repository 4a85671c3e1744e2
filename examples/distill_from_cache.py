"""Distil a student from a target cache with a plain PyTorch loop (AMP when CUDA is there).

    mlkd-cache teacher-train -c digits/resnet10t_to_test_resnet_l2d.py -o runs/teacher
    mlkd-cache dump-targets -c digits/resnet10t_to_test_resnet_l2d.py -t runs/teacher/teacher.pt -o runs/cache
    python examples/distill_from_cache.py -c digits/resnet10t_to_test_resnet_l2d.py --cache runs/cache

The config names the dataset, the student and the distiller (criterion_t2s_para); the teacher is
never loaded: the outputs its distiller reads come from the cache.
"""

import argparse

import torch
from torch.utils.data import DataLoader

import mlkd_cache as mc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", required=True, help="config file, or a shipped one")
    parser.add_argument("--cache", required=True, help="folder written by mlkd-cache dump-targets")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's max_epoch_s")
    args = parser.parse_args()
    cfg = mc.load_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"

    train_set = mc.dataset_from_config(cfg, "train")
    cache = mc.open_cache(args.cache, train_set, mc.TransformSpec.from_config(cfg))  # the checks of distill-student
    views = mc.CachedViews(train_set, cache)  # replayed views + the cached targets of exactly those views
    sampler = views.sampler(seed=cfg.seed)  # each pass is the next epoch; indices carry it to every worker
    loader = DataLoader(views, cfg.batch_size, sampler=sampler, drop_last=True, collate_fn=views.collate, pin_memory=cuda)

    classes = len(train_set.class_names)
    student = mc.build_model(cfg.model_s, classes, embed_dim=cfg.embed_dim, img_size=cfg.img_size).to(device)
    distiller = mc.Distiller.from_config(
        cfg.criterion_t2s_para, num_classes=classes, student_embed_dim=cfg.embed_dim, teacher_embed_dim=cache.spec.embed_dim
    ).to(device)
    if distiller.needs_prototypes:  # MPSCD: class prototypes from the cached embeddings
        distiller.set_prototypes(mc.load_or_compute_prototypes(cache).to(device))
    epochs = args.epochs or cfg.max_epoch_s
    optimizer = torch.optim.Adam([*student.parameters(), *distiller.extra_parameters()], lr=cfg.lr_s)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr_s, total_steps=epochs * len(loader), pct_start=0.2)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    bce = torch.nn.BCEWithLogitsLoss(reduction="sum")  # L2D's hard-label loss: summed over samples and classes

    for epoch in range(epochs):
        student.train()
        for batch in loader:
            image, labels = batch.image.to(device, non_blocking=cuda), batch.labels.to(device, non_blocking=cuda)
            with torch.autocast(device.type, enabled=cuda):
                out = student(image)
            kd = mc.KDBatch(
                y=labels,
                z_s=out.logits.float(),
                f_s=out.features.float(),
                e_s=out.label_emb.float(),
                **views.targets(batch, device),
            )
            terms = {"bce": bce(out.logits.float(), labels), **distiller(kd)}
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(sum(terms.values())).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
        print(f"epoch {epoch + 1}/{epochs}: " + "  ".join(f"{k} {v.item():.3f}" for k, v in terms.items()))

    test = mc.ViewDataset(mc.dataset_from_config(cfg, cfg.eval_split), views.transform, cfg.seed, train=False)
    student.eval()
    scores, labels = [], []
    with torch.no_grad():
        for batch in DataLoader(test, cfg.batch_size):
            scores.append(student(batch.image.to(device)).logits.float().cpu())
            labels.append(batch.labels)
    print(f"{cfg.eval_split} mAP {mc.mean_average_precision(torch.cat(scores).numpy(), torch.cat(labels).numpy()):.2f}")


if __name__ == "__main__":
    main()
