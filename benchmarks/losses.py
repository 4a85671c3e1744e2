"""Distillation-loss speed: vectorised LED and MPSCD against per-class / per-image loops.

Forward + backward at N=64, C=80, E=768 (float32, CPU) with COCO label statistics: each batch
takes 64 label rows sampled from the COCO val annotation file. Several batches, warm-up, the
median time per batch over repeats that run every variant in turn (a slow spell of the machine
falls on all of them); the speed-up goal is printed, not asserted. Also LED's peak memory for
one batch, forward + backward from its positive tokens ``[P, E]``: the most bytes the allocator
held at once (torch's profiler records every allocation and release), beside the ``[P, P, E]``
that computing every pairwise difference would take.

    python benchmarks/losses.py
    python benchmarks/losses.py --batches 3 --repeat 3 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loss_loops import loop_led, loop_mpscd  # noqa: E402
from _timing import format_table, measure_interleaved, stamp, stamp_line  # noqa: E402

from mlkd_cache.losses import KDBatch  # noqa: E402
from mlkd_cache.losses.led import class_distance, instance_distance  # noqa: E402
from mlkd_cache.losses.mpscd import MPSCD  # noqa: E402

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco2014_val_anno.json"
N, C, E = 64, 80, 768
GOAL_SPEEDUP = 10.0


def coco_batches(count: int, seed: int, path: Path = ANNOTATIONS) -> list:
    """``count`` label matrices ``[N, C]``, each of N rows sampled from the annotation file."""
    records = json.loads(Path(path).read_text())
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        y = torch.zeros(N, C)
        for row, i in enumerate(torch.randint(len(records), (N,), generator=g).tolist()):
            y[row, records[i]["labels"]] = 1
        out.append(y)
    return out


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side logs its start and stop (and a GPU query) to file descriptor 2."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_bytes(fn) -> int:
    """The most bytes allocated at once while ``fn()`` runs on the CPU, beyond what was allocated
    before, from the profiler's record of every allocation and release (its memory timeline)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action

    with (
        quiet_stderr(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof,
    ):
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def led_peak(y, e_s, e_t) -> int:
    """Peak bytes of LED (CD + ID) forward + backward for one batch, from leaf tokens ``[P, E]``."""
    s_tokens, t_tokens, sample, cls = KDBatch(y=y, z_s=y, z_t=y, f_s=y, f_t=y, e_s=e_s, e_t=e_t).positive_tokens()
    s_tokens = s_tokens.detach().requires_grad_(True)

    def step():
        tokens = (s_tokens, t_tokens, sample, cls)
        (100.0 * class_distance(*tokens) + 1000.0 * instance_distance(*tokens)).backward()

    step()  # warm-up: lazily built kernels and caches are not the loss's memory
    s_tokens.grad = None
    return peak_bytes(step)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4, help="label batches timed (default 4)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(args.seed)
    data = []
    for y in coco_batches(args.batches, args.seed):
        e_s = torch.randn(N, C, E, generator=g).requires_grad_(True)
        e_t = torch.randn(N, C, E, generator=g)
        data.append((y, e_s, e_t))

    def vectorised():
        for y, e_s, e_t in data:
            b = KDBatch(y=y, z_s=y, z_t=y, f_s=y, f_t=y, e_s=e_s, e_t=e_t)
            tokens = b.positive_tokens()
            (100.0 * class_distance(*tokens) + 1000.0 * instance_distance(*tokens)).backward()

    def loop():
        for y, e_s, e_t in data:
            cd, id_ = loop_led(e_s, e_t, y)
            (cd + id_).backward()

    torch.manual_seed(args.seed)
    prototypes = torch.nn.functional.normalize(torch.randn(C, E, generator=g), dim=1)
    mpscd_loss = MPSCD(E, E, C, prototypes=prototypes).eval()  # eval: no prototype update, same work

    def mpscd_vectorised():
        for y, e_s, e_t in data:
            terms = mpscd_loss(KDBatch(y=y, z_s=y, z_t=y, f_s=y, f_t=y, e_s=e_s, e_t=e_t))
            sum(terms.values()).backward()

    def mpscd_loop():
        for y, e_s, e_t in data:
            sample, cls = y.nonzero(as_tuple=True)
            u = torch.nn.functional.normalize(mpscd_loss.proj(e_s[sample, cls]), dim=1)
            v = torch.nn.functional.normalize(e_t[sample, cls], dim=1)
            pcrd, pcsd = loop_mpscd(u, v, cls, prototypes, mpscd_loss.tau, mpscd_loss.tau_s)
            (pcrd + pcsd).backward()

    # the loops must compute what the vectorised losses compute, or the timing means nothing
    y, e_s, e_t = data[0]
    b = KDBatch(y=y, z_s=y, z_t=y, f_s=y, f_t=y, e_s=e_s, e_t=e_t)
    cd, id_ = loop_led(e_s, e_t, y)
    torch.testing.assert_close(
        100.0 * class_distance(*b.positive_tokens()) + 1000.0 * instance_distance(*b.positive_tokens()),
        cd + id_,
        rtol=1e-4,
        atol=1e-3,
    )
    sample, cls = y.nonzero(as_tuple=True)
    with torch.no_grad():
        u = torch.nn.functional.normalize(mpscd_loss.proj(e_s[sample, cls]), dim=1)
        want = sum(
            loop_mpscd(
                u, torch.nn.functional.normalize(e_t[sample, cls], dim=1), cls, prototypes, mpscd_loss.tau, mpscd_loss.tau_s
            )
        )
        torch.testing.assert_close(sum(mpscd_loss(b).values()), want, rtol=1e-4, atol=1e-4)

    variants = (
        ("led_loop", loop),
        ("led_vectorised", vectorised),
        ("mpscd_loop", mpscd_loop),
        ("mpscd_vectorised", mpscd_vectorised),
    )
    timings = measure_interleaved(dict(variants), warmup=1, repeat=args.repeat)
    per_batch = {k: t.median / args.batches * 1e3 for k, t in timings.items()}
    speedup = per_batch["led_loop"] / per_batch["led_vectorised"]
    mpscd_speedup = per_batch["mpscd_loop"] / per_batch["mpscd_vectorised"]
    positives = sum(int(y.sum()) for y, _, _ in data) / args.batches
    peak = led_peak(*data[0])
    p0 = int(data[0][0].sum())
    result = {
        "shape": {"N": N, "C": C, "E": E, "mean_positives": positives},
        "ms_per_batch": per_batch,
        "led_peak_mib": peak / 2**20,
        "led_peak_positives": p0,
        "pairwise_differences_mib": p0 * p0 * E * 4 / 2**20,
        "speedup": speedup,
        "mpscd_speedup": mpscd_speedup,
        "goal_speedup": GOAL_SPEEDUP,
        "goal_met": speedup >= GOAL_SPEEDUP and mpscd_speedup >= GOAL_SPEEDUP,
        "torch_threads": torch.get_num_threads(),
        "stamp": stamp(),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    rows = [(k, f"{v:.2f}", f"{per_batch[k.split('_')[0] + '_loop'] / v:.1f}x") for k, v in per_batch.items()]
    print(f"LED and MPSCD forward+backward, N={N} C={C} E={E}, {positives:.1f} positives/batch (COCO val), float32 CPU")
    print(format_table(rows, ["variant", "ms", "speed-up"]))
    print(
        f"LED peak memory, forward + backward of one batch ({p0} positive tokens): {result['led_peak_mib']:.1f} MiB "
        f"(every pairwise difference [P, P, E] would take {result['pairwise_differences_mib']:.0f} MiB)"
    )
    for name, x in (("LED", speedup), ("MPSCD", mpscd_speedup)):
        print(
            f"goal: {name} vectorised >= {GOAL_SPEEDUP:.0f}x faster than its loop -> {'met' if x >= GOAL_SPEEDUP else 'NOT met'} ({x:.1f}x)"
        )
    print(stamp_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
