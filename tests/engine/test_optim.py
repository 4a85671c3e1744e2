"""Optimiser: the fused Adam the trainers use computes the update of torch's for-loop Adam (within float32 rounding)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mlkd_cache.models import build_model
from mlkd_cache.runtime.optim import IMPLEMENTATIONS, build_one_cycle, build_optimizer

pytestmark = pytest.mark.numeric  # `make test-numeric` reruns it on the generic and AVX2 kernels


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_every_implementation_gives_the_for_loop_update(name):
    """Fused, foreach and for-loop Adam(W) make the same 3 updates from the same gradients (those
    of the for-loop run, handed to every implementation: each update is then a function of
    identical inputs, compared without recomputed gradients feeding back ulp differences)."""
    steps, lr, eps = 3, 1e-3, torch.finfo(torch.float32).eps
    torch.manual_seed(0)
    base = build_model("test_resnet", 5, pretrained=None, embed_dim=16, img_size=32)
    x, y = torch.rand(4, 3, 32, 32), (torch.rand(4, 5) < 0.4).float()
    reference = copy.deepcopy(base)
    opt = build_optimizer(reference, name, lr, 1e-2, implementation="for-loop")
    grads = []
    torch.manual_seed(1)
    for _ in range(steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(reference(x).logits, y, reduction="sum")
        opt.zero_grad()
        loss.backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in reference.parameters()])
        opt.step()
    params = {}
    for impl in IMPLEMENTATIONS:
        model = copy.deepcopy(base)
        opt = build_optimizer(model, name, lr, 1e-2, implementation=impl)
        assert (opt.param_groups[0]["fused"], opt.param_groups[0]["foreach"]) == {
            "fused": (True, None),
            "foreach": (None, True),
            "for-loop": (None, False),
        }[impl]
        for step_grads in grads:
            for p, g in zip(model.parameters(), step_grads):
                p.grad = None if g is None else g.clone()
            opt.step()
        params[impl] = torch.cat([p.detach().flatten() for p in model.parameters()])
    start = torch.cat([p.detach().flatten() for p in base.parameters()])
    moved = (params["for-loop"] - start).abs()
    assert float(moved.max()) > lr  # Adam moves an entry by about lr per step
    for impl in IMPLEMENTATIONS:
        # each step rounds the weight (eps/2 of it) and computes an update of size <= ~lr with a
        # few roundings of its own, in another order per implementation
        torch.testing.assert_close(params[impl], params["for-loop"], rtol=steps * eps, atol=steps * 8 * eps * lr, msg=impl)


def test_trainers_use_fused_adam(tmp_path):
    from mlkd_cache.config import load_config
    from mlkd_cache.runtime.train import Trainer

    from ..conftest import tiny_config

    trainer = Trainer(load_config(tiny_config(tmp_path)), "s", tmp_path / "out", progress=False)
    assert all(group["fused"] for group in trainer.optimizer.param_groups)


def test_a_for_loop_checkpoint_resumes_fused():
    """Checkpoints of earlier versions hold for-loop Adam's flags; a resume runs fused all the same."""
    from mlkd_cache.runtime.optim import keep_implementation

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
