"""Optimiser: the fused Adam the trainers use computes the update of torch's for-loop Adam (within float32 rounding)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mlkd_cache.engine.optim import IMPLEMENTATIONS, build_one_cycle, build_optimizer
from mlkd_cache.models import build_model


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_every_implementation_gives_the_for_loop_update(name):
    torch.manual_seed(0)
    base = build_model("test_resnet", 5, pretrained=None, embed_dim=16, img_size=32)
    x, y = torch.rand(4, 3, 32, 32), (torch.rand(4, 5) < 0.4).float()
    params = {}
    for impl in IMPLEMENTATIONS:
        model = copy.deepcopy(base)
        opt = build_optimizer(model, name, 1e-3, 1e-2, implementation=impl)
        assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == {
            "fused": (True, None),
            "foreach": (None, True),
            "for-loop": (None, False),
        }[impl]
        torch.manual_seed(1)  # the same dropout masks in every run
        for _ in range(3):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).logits, y, reduction="sum")
            opt.zero_grad()
            loss.backward()
            opt.step()
        params[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    assert not torch.equal(params["for-loop"], start)  # the steps moved the weights
    moved = (params["for-loop"] - start).abs()
    for impl in IMPLEMENTATIONS:
        # float32 rounding (fused orders its ops differently) moves a handful of entries whose
        # gradients are ~0, where Adam's m / sqrt(v) is ill-conditioned; a wrong update would
        # move most of them by up to lr per step
        diff = (params[impl] - params["for-loop"]).abs()
        assert float(diff.max()) < 0.05 * float(moved.max()), impl
        assert float((diff > 1e-6).float().mean()) < 1e-3, impl


def test_trainers_use_fused_adam(tmp_path):
    from mlkd_cache.config import load_config
    from mlkd_cache.engine.train import Trainer

    from ..conftest import tiny_config

    trainer = Trainer(load_config(tiny_config(tmp_path)), "s", tmp_path / "out", progress=False)
    assert all(group["fused"] for group in trainer.optimizer.param_groups)


def test_a_for_loop_checkpoint_resumes_fused():
    """Checkpoints of earlier versions hold for-loop Adam's flags; a resume runs fused all the same."""
    from mlkd_cache.engine.optim import keep_implementation

    torch.manual_seed(0)
    model = build_model("test_resnet", 5, pretrained=None, embed_dim=16, img_size=32)
    x, y = torch.rand(4, 3, 32, 32), (torch.rand(4, 5) < 0.4).float()

    def step(opt):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).logits, y, reduction="sum")
        opt.zero_grad()
        loss.backward()
        opt.step()

    old = build_optimizer(model, "adam", 1e-3, 1e-2, implementation="for-loop")
    step(old)
    new = build_optimizer(model, "adam", 1e-3, 1e-2)
    new.load_state_dict(old.state_dict())
    assert new.param_groups[0]["fused"] is None  # load_state_dict brought the old flags back
    keep_implementation(new)
    assert all(g["fused"] for g in new.param_groups)
    step(new)
    assert int(new.state[next(model.parameters())]["step"]) == 2


@pytest.mark.parametrize("pct_start", [0.01, 0.05, 0.1, 0.2, 0.25, 0.5, 0.99])
def test_one_cycle_runs_every_length_from_one_step(pct_start):
    """torch's OneCycle divides by zero whenever pct_start x steps is exactly 1 (5 steps at the default
    0.2); every length from 1 to 50 steps must run, peak at lr, and keep torch's values elsewhere."""
    lr = 1e-3
    for total in range(1, 51):
        steps_per_epoch, epochs = (total, 1) if total % 2 else (total // 2, 2)
        param = torch.zeros(1, requires_grad=True)
        opt = torch.optim.SGD([param], lr=lr)
        sched = build_one_cycle(opt, lr, steps_per_epoch, epochs, pct_start)
        rates = []
        for _ in range(total):
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert len(rates) == total and all(math.isfinite(r) and 0 < r <= lr * (1 + 1e-9) for r in rates), (total, rates)
        if total >= 10:
            assert max(rates) > 0.5 * lr, (total, rates)  # the warm-up reaches the peak
        if pct_start * total != 1.0:  # the unchanged lengths: torch's own schedule
            ref_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
            ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=lr, total_steps=total, pct_start=pct_start)
            expected = []
            for _ in range(total):
                expected.append(ref_opt.param_groups[0]["lr"])
                ref_opt.step()
                ref.step()
            assert rates == expected, total
        else:
            assert rates[0] == pytest.approx(lr)  # the one-step warm-up: the first step at the peak
