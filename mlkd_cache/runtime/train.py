"""The supervised training loop shared by every stage that trains a model.

:class:`Trainer` owns the data, model, optimiser, schedule, AMP, DDP, evaluation, metrics log
and atomic checkpoints; a stage supplies the loss terms through :meth:`Trainer.loss_terms`
(a dict of named scalars; the loop sums and logs them and never branches on their names).
``teacher-train`` uses it as is (hard-label loss only); the same loop trained on ``model_s``
is the no-KD student baseline (``distill-student --no-kd``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, cast

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .._version import __version__
from ..config import Config
from ..data import check_eval_split, dataset_from_config
from ..data.sampler import EpochSampler
from ..data.transforms import TransformSpec, model_input
from ..data.views import ViewDataset, eval_inputs
from ..device import amp_enabled, autocast_for, place_model
from ..distributed import (
    DistInfo,
    agree,
    average_gradients,
    bar_disabled,
    barrier,
    init_distributed,
    mean_over_ranks,
    sync_buffers,
)
from ..errors import ConfigError, MlkdError, TrainingDiverged
from ..losses.hard import build_hard_loss
from ..metrics import format_metrics
from ..models import build_model, resolve_model_name
from ..models.card import ROLES as CARD_ROLES
from ..models.card import ModelCard
from .checkpoint import read_card, save_model
from .optim import build_one_cycle, build_optimizer, keep_implementation
from .ranks import check_same_config, check_same_split
from .resume import RESUME_KEYS, check_config_kept, check_global_batch, check_out_dir, prepare_out_dir, read_resume_checkpoint
from .runlog import RunFiles, RunLogs, require_tensorboard
from .scoring import Scored, evaluate_model

log = logging.getLogger("mlkd_cache")

ROLES = dict(zip(("t", "s"), CARD_ROLES))  # a config's role letter (model_t, lr_s, ...) -> the card's role


class Trainer:
    """Trains ``model_<role>`` of ``cfg`` on the train split and scores it on the split
    ``cfg.eval_split`` (test by default; val to choose epochs and hyper-parameters).

    Args:
        cfg: validated config.
        role: ``"t"`` (teacher keys ``model_t, lr_t, max_epoch_t, ...``) or ``"s"``.
        out: output folder (:class:`~mlkd_cache.runtime.runlog.RunFiles`): ``checkpoint.pt``
            (every epoch), ``teacher.pt`` or ``student.pt`` (at the end), ``metrics.jsonl``.
        resume: continue from ``out/checkpoint.pt``.

    Under torchrun every rank trains on its share of each global batch (``batch_size`` x
    processes); rank 0 alone writes files; an epoch's loss terms are averaged over ranks (each at
    ``batch_size`` per process); ``--resume`` may change the number of processes when the global
    batch stays. A rank that fails ends the run (see :mod:`mlkd_cache.distributed`).
    """

    def __init__(self, cfg: Config, role: str, out: Path, resume: bool = False, progress: bool = True) -> None:
        if role not in ROLES:
            raise ValueError(role)
        self.cfg, self.role, self.resume, self.progress = cfg, role, resume, progress
        # called on rank 0 after each scoring with (epochs done, metrics of eval_split); what it
        # raises stops the run after that epoch's checkpoint (a sweep's pruner). It only reads.
        self.on_scored: Optional[Callable[[int, Dict[str, Any]], None]] = None
        self.files = RunFiles(Path(out), ROLES[role])
        self.arch = getattr(cfg, f"model_{role}")
        self.lr = getattr(cfg, f"lr_{role}")
        self.planned_epochs, self.stop_epoch = cfg.epochs(role)
        self.timm_name = resolve_model_name(self.arch)  # unknown model: fail before any work
        self.hard_loss = build_hard_loss(getattr(cfg, f"loss_{role}"), cfg.asl_para)
        if cfg.tensorboard:  # tensorboard: without the package, one line before any work
            require_tensorboard()
        self.info: DistInfo = init_distributed()
        check_same_config(cfg, self.info)
        check_out_dir(self.files, resume, self.info)

        agree(self.info, self._build_data)  # a node that cannot read its data stops every node alike
        check_same_split(self.train_data, f"{cfg.dataset} train split", self.info)
        check_same_split(self.test_data, f"{cfg.dataset} {cfg.eval_split} split", self.info)
        self._build_loader()
        agree(self.info, self._build_model)  # a node without the --pretrained file stops every node
        self._build_optimisation()
        prepare_out_dir(self.files, self.info)
        self._open_logs()

    # ---------------------------------------------------------------- construction, in order
    def _build_data(self) -> None:
        """The transform spec, the train split as this stage's views and the scored split."""
        cfg = self.cfg
        self.spec = TransformSpec.from_config(cfg)
        train_set, test_set = self.load_splits()
        if list(train_set.class_names) != list(test_set.class_names):
            raise MlkdError(f"train and {cfg.eval_split} splits disagree on the class list; check the dataset files")
        self.class_names = list(train_set.class_names)
        self.train_data = self.make_train_data(train_set)
        self.test_data = eval_inputs(test_set, self.spec)

    def _build_loader(self) -> None:
        """Every rank's share of each global batch; incomplete last batches are dropped. Indices
        carry their epoch (:class:`EpochSampler`), so worker processes persist across epochs and
        still build each epoch's views. The workers' seed then comes from a generator of the
        loader's own: workers made once (a run) or again (a --resume) leave the global RNG, which
        draws dropout masks, in the same state (views never use the workers' seed)."""
        cfg = self.cfg
        global_batch = cfg.batch_size * self.info.world_size
        if global_batch > len(self.train_data):
            raise ConfigError(
                f"batch_size {cfg.batch_size} x {self.info.world_size} process(es) is larger than the "
                f"train split ({len(self.train_data)} samples); lower batch_size"
            )
        self.sampler = EpochSampler(
            self.train_data,
            num_replicas=self.info.world_size,
            rank=self.info.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        workers = cfg.workers > 0
        self.loader = DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            sampler=self.sampler,
            num_workers=cfg.workers,
            drop_last=True,
            pin_memory=self.info.device.type == "cuda",
            persistent_workers=workers,
            generator=torch.Generator().manual_seed(cfg.seed) if workers else None,
            collate_fn=self.make_collate(),
        )

    def _build_model(self) -> None:
        """The model, initialised from ``cfg.seed`` (channels-last on CUDA), and the stage's extra modules."""
        cfg, role = self.cfg, self.role
        torch.manual_seed(cfg.seed)
        pretrained = getattr(cfg, f"pretrained_{role}")
        self.model = place_model(
            build_model(self.arch, len(self.class_names), pretrained=pretrained, embed_dim=cfg.embed_dim, img_size=cfg.img_size),
            self.info.device,
        )
        self.extra_modules = self.build_extra_modules()
        for module in self.extra_modules:
            module.to(self.info.device)
        self.extra_params = [p for m in self.extra_modules for p in m.parameters() if p.requires_grad]

    def _build_optimisation(self) -> None:
        """Optimiser over model and extra modules, OneCycle schedule, AMP scaler, DDP wrapper."""
        cfg = self.cfg
        cuda = self.info.device.type == "cuda"
        params = nn.ModuleList([self.model, *self.extra_modules])
        self.optimizer = build_optimizer(params, cfg.optimizer, self.lr, cfg.weight_decay)
        self.scheduler = build_one_cycle(self.optimizer, self.lr, len(self.loader), self.planned_epochs, cfg.pct_start)
        self.amp = amp_enabled(cfg.amp, self.info.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[self.info.device.index] if cuda else None)
            if self.info.enabled
            else self.model
        )

    def _open_logs(self) -> None:
        """A resume loads its state; then the run's logs (:class:`RunLogs`) start where it stands."""
        self.start_epoch = 0
        self.position = "before training"  # "epoch E step S" of the batch in hand
        self.last_metrics: Dict[str, Any] = {}
        self.last_scored: Optional[Scored] = None  # eval_split scored after the latest epoch of this process
        if self.resume:
            self._load_resume_state()
        cfg = self.cfg
        self.logs = RunLogs(self.files, self.info.is_main, cfg.log_every, cfg.tensorboard, len(self.loader))
        self.logs.start(self.start_epoch, self.resume)

    # ---------------------------------------------------------------- hooks for stages
    def load_splits(self) -> Tuple[Any, Any]:
        """The train split and the scored split (``eval_split``) of the config's dataset."""
        cfg = self.cfg
        check_eval_split(cfg)
        # dataset_para_t changes the teacher's train split only: every model is scored on the same split
        return dataset_from_config(cfg, "train", self.role), dataset_from_config(cfg, cfg.eval_split)

    def make_train_data(self, train_set) -> ViewDataset:
        """Train items: a fresh replayable view per epoch (view index = epoch), as uint8 pixels
        (converted on the device, :func:`~mlkd_cache.data.transforms.model_input`)."""
        return ViewDataset(train_set, self.spec, self.cfg.seed, train=True, image_dtype="uint8")

    def make_collate(self):
        """The DataLoader ``collate_fn`` (None: torch's default). It runs in the worker processes."""
        return None

    def build_extra_modules(self) -> list:
        """Modules besides the model that belong to the run: moved to the device, their trainable
        parameters join the optimiser (gradients averaged over ranks), their state is checkpointed."""
        return []

    def loss_terms(self, batch: Any, outputs: Any) -> Dict[str, Tensor]:
        """Named loss terms of one batch (a :class:`~mlkd_cache.data.views.ViewItem` of batched
        tensors, or what :meth:`make_collate` builds, with ``image`` already on the device);
        their sum is minimised."""
        return self.hard_loss(outputs.logits, batch.labels.to(self.info.device, non_blocking=True))

    def resume_keys(self) -> list:
        """Config keys that must not change across ``--resume``."""
        own = ("model", "lr", "max_epoch", "loss", "dataset_para") if self.role == "t" else ("model", "lr", "max_epoch", "loss")
        return [*RESUME_KEYS, *(f"{k}_{self.role}" for k in own)]

    def check_resume(self, card: ModelCard) -> None:
        """Refuse to resume the checkpoint of ``card`` when it belongs to another run (beyond the config keys)."""

    def provenance(self) -> Dict[str, Any]:
        """What the model card records of where this model came from besides its config
        (a student: the cache or teacher it was distilled from)."""
        return {}

    # ---------------------------------------------------------------- checkpoints
    def card(self) -> ModelCard:
        """Everything a later stage needs to rebuild this model and its inputs."""
        return ModelCard.of(self.model, ROLES[self.role], self.class_names, self.spec, self.cfg.to_dict(), self.provenance())

    def final_card(self) -> ModelCard:
        """The card of the final checkpoint, after the last step; every rank calls it (a stage's
        may run collectives) and it must leave the model and the global RNG as they were."""
        return self.card()

    def save(self, path: Path, epochs_done: int, with_state: bool, card: Optional[ModelCard] = None) -> None:
        """Write the model card (``card``, else :meth:`card`) and weights to ``path`` atomically
        (``with_state``: plus optimiser, schedule, scaler, extra modules and RNG state, for ``--resume``)."""
        state: Dict[str, Any] = {}
        if with_state:
            state = dict(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                scaler=self.scaler.state_dict(),
                extra_modules=[m.state_dict() for m in self.extra_modules],
                torch_rng=torch.get_rng_state(),
                world_size=self.info.world_size,
            )
        save_model(path, card or self.card(), self.model.state_dict(), epoch=epochs_done, metrics=self.last_metrics, **state)

    def _load_resume_state(self) -> None:
        """The training state of the run's checkpoint, after the checks that it belongs to this run
        (:mod:`~mlkd_cache.runtime.resume`: config keys, global batch, planned steps; then the
        stage's own :meth:`check_resume`)."""
        ckpt = read_resume_checkpoint(self.files, self.info)
        card = read_card(ckpt, self.files.checkpoint)
        old = card.config
        check_config_kept(self.files, old, self.cfg.to_dict(), self.resume_keys())
        check_global_batch(self.files, ckpt, old, self.cfg.batch_size, self.info.world_size, self.scheduler.total_steps)
        self.check_resume(card)
        self.model.load_state_dict(ckpt["model"])
        for module, state in zip(self.extra_modules, ckpt.get("extra_modules", [])):
            module.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        keep_implementation(self.optimizer)  # a checkpoint of an older version saved for-loop Adam's flags
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        self.start_epoch = int(ckpt["epoch"])
        self.last_metrics = dict(ckpt.get("metrics") or {})
        log.info("resumed %s after epoch %d", self.files.checkpoint, self.start_epoch)

    # ---------------------------------------------------------------- loop
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        self.ddp.train()
        self.sampler.set_epoch(epoch)  # the indices carry it to the views, in any worker
        sums: Dict[str, float] = {}
        steps, samples = 0, 0
        started = time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"{ROLES[self.role]} epoch {epoch + 1}/{self.stop_epoch}",
            leave=False,
            disable=bar_disabled(self.progress, self.info),
            dynamic_ncols=True,
        )
        for step, batch in enumerate(bar):
            image = model_input(batch.image, self.spec, self.info.device)  # uint8 pixels -> float input, on the device
            batch = batch._replace(image=image)
            self.position = f"epoch {epoch + 1} step {step + 1}"  # named by errors raised in loss_terms
            with autocast_for(self.info.device, self.amp):
                outputs = self.ddp(image)
            terms = self.loss_terms(batch, outputs)
            loss = cast(Tensor, sum(terms.values()))
            if not torch.isfinite(loss):
                bad = [k for k, v in terms.items() if not torch.isfinite(v)]
                samples_of = ", ".join(str(int(i)) for i in batch.sample[:8])
                raise TrainingDiverged(
                    f"loss became non-finite at {self.position} (term {', '.join(bad)}; "
                    f"batch samples {samples_of}{', ...' if len(batch.sample) > 8 else ''}); "
                    f"lower the learning rate or check the data"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            average_gradients(self.extra_params, self.info)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            steps += 1
            samples += image.shape[0]
            values = {k: float(v.detach()) for k, v in terms.items()}  # one host sync per term
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            lr = self.scheduler.get_last_lr()[0]
            if self.logs.wants_step(step):
                self.logs.step({"epoch": epoch + 1, "step": step + 1, "loss": sum(values.values()), **values, "lr": lr})
            bar.set_postfix(loss=f"{sum(values.values()):.3f}", lr=f"{lr:.2e}")
        elapsed = time.perf_counter() - started
        # every rank's batches, not rank 0's alone (each rank ran the same number of steps)
        row: Dict[str, float] = {f"loss/{k}": v / max(steps, 1) for k, v in mean_over_ranks(sums, self.info).items()}
        row["loss"] = sum(row.values())
        row["lr"] = float(self.scheduler.get_last_lr()[0])
        row["train_time_s"] = elapsed
        row["train_samples_per_s"] = samples * self.info.world_size / max(elapsed, 1e-9)
        return row

    def _stop_workers(self) -> None:
        """End the loader's persistent worker processes with the training, not whenever the
        loader is collected (torch has no public call for it: its iterator's own shutdown)."""
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None:
            shutdown = getattr(iterator, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            self.loader._iterator = None

    def fit(self) -> Dict[str, Any]:
        """Train from ``start_epoch`` to ``stop_epoch``; returns the last epoch's row."""
        started = time.perf_counter()
        try:
            self._train_epochs()
        except BaseException:  # the loader's workers and the logs end with the run, however it ends
            self._stop_workers()
            self.logs.close()
            raise
        final_card = self.final_card()  # on every rank
        if self.info.is_main:
            self.save(self.files.final, self.stop_epoch, with_state=False, card=final_card)
            self.logs.close()
        barrier(self.info)
        return {
            "epochs": self.stop_epoch,
            "metrics": self.last_metrics,
            "final": str(self.files.final),
            "metrics_log": str(self.files.metrics),
            "wall_time_s": time.perf_counter() - started,
            "is_main": self.info.is_main,
            "tool_version": __version__,
        }

    def _train_epochs(self) -> None:
        """The epochs from ``start_epoch`` to ``stop_epoch``: train, score every ``eval_every``
        and after the last, log, checkpoint, and tell :attr:`on_scored`."""
        cfg = self.cfg
        for epoch in range(self.start_epoch, self.stop_epoch):
            row = {"epoch": epoch + 1, **self.train_one_epoch(epoch)}
            sync_buffers(self.model, self.info)  # evaluate and save rank 0's BatchNorm statistics
            last = epoch + 1 == self.stop_epoch
            if last or (epoch + 1) % cfg.eval_every == 0:
                eval_started = time.perf_counter()
                self.last_scored = evaluate_model(self.model, self.test_data, cfg.batch_size, cfg.workers, self.info, self.amp)
                self.last_metrics = self.last_scored.metrics
                row.update(self.last_metrics)
                row["eval_time_s"] = time.perf_counter() - eval_started
            self.logs.epoch(row)
            if self.info.is_main:
                self.save(self.files.checkpoint, epoch + 1, with_state=True)
                scores = format_metrics(self.last_metrics) if "mAP" in row else "(not evaluated)"
                log.info(
                    "%s epoch %d/%d  loss %.4f  %s  %.1fs",
                    ROLES[self.role],
                    epoch + 1,
                    self.stop_epoch,
                    row["loss"],
                    scores,
                    row["train_time_s"],
                )
            barrier(self.info)
            if self.on_scored is not None and self.info.is_main and "mAP" in row:
                self.on_scored(epoch + 1, dict(self.last_metrics))
        self._stop_workers()
