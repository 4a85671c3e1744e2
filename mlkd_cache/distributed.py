"""torchrun / DDP helpers: one process per device, gloo on CPU, NCCL on CUDA.

Every stage calls :func:`init_distributed` once; under torchrun (``WORLD_SIZE`` > 1 in the
environment) it joins the process group, otherwise it is a no-op and ``world_size`` is 1.

When one rank fails, the whole run ends within seconds, whatever the backend:

* A rank that raises (a user error, any exception) prints its message and leaves through
  :func:`exit_process`: ``os._exit`` once a process group is up, so no interpreter teardown
  (process-group destructors, an NCCL communicator waiting on a dead peer, DataLoader workers)
  can keep it alive. A killed rank is gone at once.
* torchrun's agent sees a worker end within its monitor interval (0.1 s), sends SIGTERM to the
  other ranks (SIGKILL 30 s later) and exits non-zero. With gloo the others' pending collective
  also fails at once ("Connection closed by peer"); the CLI reports that as one line
  (:func:`lost_peer`) instead of a traceback. tests/engine/test_distributed_faults.py
  requires torchrun's exit within 30 s of a rank's error or SIGKILL (2 gloo ranks on CPU).
* Nothing waits for the process-group timeout (300 s): it only bounds legitimate waits (ranks
  hashing their share of a resumed cache's shards, rank 0 writing a checkpoint or the manifest
  while the others wait) and, with NCCL across several nodes, how long the ranks of a node that
  lost a peer on another node may hang.
* Every file is written atomically (``.tmp`` + rename) and ``manifest.json`` only after every
  rank's shards are complete, so a run that fails leaves no file that looks complete.

Across nodes, storage may be shared or node-local (docs/cluster.md). What a rank reads that
another wrote is either sent through the process group (a resumed checkpoint, class prototypes)
or proven the same on every rank before any work (:func:`check_shared_folder`,
:func:`same_on_every_rank`); a start-up check that fails on some ranks fails on all of them
through :func:`agree`, in one line naming the rank, node and host.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple, TypeVar

import torch
import torch.distributed as dist

from .device import pick_device
from .errors import ConfigError, MlkdError

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its device and backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = "none"
    node_rank: int = 0  # torchrun's GROUP_RANK: which node (agent) this process runs on
    local_world_size: int = 1  # ranks on this node
    host: str = field(default_factory=socket.gethostname)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def where(self) -> str:
        """This process as messages name it: ``rank 1 on node 1 (host gpu-07)``."""
        return f"rank {self.rank} on node {self.node_rank} (host {self.host})"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(timeout_s: float = 300.0) -> DistInfo:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if world_size <= 1:
        return DistInfo(device=device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    node_rank = int(os.environ.get("GROUP_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend, node_rank, local_world)


def process_group_active() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another rank is gone (killed or failed
    on its own): gloo's transport errors, or any :class:`torch.distributed.DistError`."""
    dist_error = getattr(dist, "DistError", None)  # absent from builds without torch.distributed
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    return isinstance(exc, RuntimeError) and "gloo/transport" in str(exc)


def exit_process(code: int) -> NoReturn:
    """End this process with exit ``code``: ``sys.exit`` without a process group, otherwise flush
    stdout/stderr and ``os._exit`` (see the module docstring: a failing rank must not linger)."""
    if not process_group_active():
        sys.exit(code)
    _flush_and_leave(code)


def _flush_and_leave(code: int) -> NoReturn:
    """Flush stdout and stderr, then ``os._exit(code)``: no interpreter teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def finish_process(code: int) -> NoReturn:
    """End a command that ran to its end with exit ``code``. Under torchrun (``WORLD_SIZE`` > 1)
    stdout and stderr are flushed and the process leaves with ``os._exit``: interpreter
    finalisation, where the destructors of gloo's threads now and then abort a rank whose work is
    done ("terminate called without an active exception", exit -6, with no Python frame on the
    stack: 3 of 15 two-rank dumps on a loaded machine), never runs. Nothing is lost by it: every
    file is written atomically and fsynced before, and DataLoader workers are stopped by then."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        sys.exit(code)
    _flush_and_leave(code)


def close_process_group() -> None:
    """Leave the process group, if any, at the end of a command that succeeded. A rank that exits
    with it still open leaves gloo's worker threads to interpreter finalisation, which now and
    then aborts the process ("terminate called without an active exception", exit -6) after
    all its work is done (seen under a loaded machine in the torchrun tests)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def bar_disabled(progress: bool, info: DistInfo):
    """tqdm's ``disable``: True off rank 0 or when not asked; else None, which tqdm reads as "off
    when stderr is not a terminal", so logs and CI output carry no bars."""
    return None if (progress and info.is_main) else True


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``tensor`` ([n_r, ...], sizes may differ per rank) from all ranks along dim 0,
    in rank order."""
    if not info.enabled:
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(info.world_size)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(info.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not info.enabled:
        return obj
    box: List[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running stats, ...) to every rank.

    DDP broadcasts buffers at the start of each forward, but each rank's last training forward
    then updates its own running statistics; without this, ranks would evaluate with different
    BatchNorm statistics than the ones rank 0 saves.
    """
    if not info.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=src)


def mean_over_ranks(values: Dict[str, float], info: DistInfo) -> Dict[str, float]:
    """The mean over ranks of each entry of ``values`` (same keys on every rank), in one
    all-reduce; ``values`` itself without torchrun."""
    if not info.enabled or not values:
        return dict(values)
    names = sorted(values)
    total = torch.tensor([values[k] for k in names], dtype=torch.float64, device=info.device)
    dist.all_reduce(total)
    return dict(zip(names, (total / info.world_size).tolist()))


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` without torchrun)."""
    if not info.enabled:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(params: List[torch.nn.Parameter], info: DistInfo) -> None:
    """Average the gradients of ``params`` over ranks, in one flat all-reduce.

    For trainable modules outside the DDP-wrapped model (a distillation loss's projection head):
    DDP averages only the gradients of the module it wraps. Parameters without a gradient on
    this rank contribute zeros, so every rank takes part in the same collective.
    """
    if not info.enabled or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def agree(info: DistInfo, step: Callable[[], T]) -> T:
    """Run ``step`` on every rank; if it raised a :class:`~mlkd_cache.errors.MlkdError` on any
    rank, every rank raises one: that error as is when every rank raised the same message, else
    the first failing rank's, prefixed with where it ran. So a start-up check that fails on one
    node (a file it lacks) stops every node with the same one line, instead of the others
    waiting in their next collective. ``step`` must run no collective (ranks that raise skip it)."""
    try:
        value, failure = step(), None
    except MlkdError as exc:
        value, failure = None, exc
    if not info.enabled:
        if failure is not None:
            raise failure
        return value  # type: ignore[return-value]
    reports: List[Optional[Tuple[type, str, str]]] = all_gather_objects(
        None if failure is None else (type(failure), str(failure), info.where), info
    )
    failed = [r for r in reports if r is not None]
    if not failed:
        return value  # type: ignore[return-value]
    kind, message, where = failed[0]
    if len(failed) < len(reports) or len({m for _, m, _ in failed}) > 1:
        message = f"{where}: {message}"
    raise kind(message)


def same_on_every_rank(value_of: Callable[[], Any], info: DistInfo, what: str, fix: str) -> None:
    """Refuse, on every rank, a run whose ranks hold different values of ``value_of()`` (the
    sha256 of a file each rank reads from its own storage; computed only under torchrun):
    :class:`ConfigError` naming the first rank whose ``what`` ("teacher t.pt (sha256)")
    differs from rank 0's, and ``fix``."""
    if not info.enabled:
        return
    seen = all_gather_objects((value_of(), info.where), info)
    for other, where in seen[1:]:
        if other != seen[0][0]:
            raise ConfigError(f"{where}: its {what} differs from rank 0's; {fix}")


CLUSTER_DOC = "docs/cluster.md"  # where refusals of a storage layout send the user


def check_shared_folder(folder: Path, info: DistInfo, option: str) -> None:
    """Prove that every rank sees and may write the folder rank 0 writes: rank 0 creates
    ``folder`` (if need be) and a file with a random token in it; every rank must read that
    token back and write a file of its own there. A rank that cannot raises, on every rank, one
    :class:`ConfigError` naming it (``option``: how the CLI calls the folder). Nothing is left
    behind: the probe files go, and so does the folder when this call created it and failed.
    One process: rank 0's part alone, no file written."""
    folder = Path(folder)
    created = False
    token = broadcast_object(secrets.token_hex(16) if info.is_main else None, info)
    probe = folder / f".mlkd-visible-{token}"
    mine = folder / f".mlkd-visible-{token}-{info.rank}"

    def create() -> None:
        nonlocal created
        if not info.is_main:
            return
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{option} {folder} exists and is not a folder")
        try:
            created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            if info.enabled:
                probe.write_text(token, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{option} {folder} is not writable ({exc.strerror}); choose another folder") from None

    def see_and_write() -> None:
        try:
            seen = probe.read_text(encoding="utf-8")
        except OSError:
            seen = None
        if seen != token:
            raise ConfigError(
                f"{option} {folder} is not the folder rank 0 writes (a file rank 0 wrote there is not visible here): "
                f"put {option} on storage every node shares ({CLUSTER_DOC})"
            )
        try:
            mine.write_bytes(b"")
        except OSError as exc:
            raise ConfigError(
                f"{option} {folder} is not writable here ({exc.strerror}); make it writable on every node"
            ) from None

    try:
        agree(info, create)
        if info.enabled:
            agree(info, see_and_write)
            barrier(info)  # every rank has read the token before it goes
    except ConfigError:
        _remove(mine, probe if info.is_main else None, folder if created else None)
        raise
    _remove(mine, probe if info.is_main else None, None)


def _remove(*paths: Optional[Path]) -> None:
    """Remove the probe files (and last an empty folder) named, those that exist."""
    *files, folder = paths
    for path in [*(f for f in files if f is not None), folder]:
        try:
            if path is folder and path is not None:
                path.rmdir()
            elif path is not None:
                path.unlink(missing_ok=True)
        except OSError:  # not there, or its folder is not one: nothing to remove
            pass
