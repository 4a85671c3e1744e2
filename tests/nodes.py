"""Simulated nodes on one machine, for the multi-node tests.

Each node is one ``torchrun --nnodes=N --nproc-per-node=1`` agent joining a c10d rendezvous on
127.0.0.1 at a free port, as agents on real machines join their head node's. Node ``i`` gives
``--local-addr 127.0.0.{i+1}``: c10d orders nodes by that address, so node 0 holds rank 0; and
node 0's agent alone hosts the rendezvous store (``is_host``), as the head node's does.

A node may have storage of its own: its agent runs in a private mount namespace (``unshare -m``)
with an empty tmpfs over each of its ``private`` folders, which the other nodes (and this test
process) never see, as a node-local NVMe disk is; ``setup`` (shell) then runs inside that
namespace before torchrun, to copy a cache in, say. Mounting needs root: tests that use private
storage are skipped elsewhere (:data:`needs_private_mounts`).

:func:`kill_node` takes down a whole node (agent and workers) at once, as a machine that fails.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import pytest

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")
# torchrun warns on stderr (its agent's log lines); the lines that are ours start with this
ERROR_PREFIX = "error: "


def private_mounts_work() -> bool:
    """Whether this process may make a private mount namespace and mount in it (root)."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = ["unshare", "-m", "--propagation", "private", "mount", "-t", "tmpfs", "tmpfs", folder]
        return subprocess.run(probe, capture_output=True).returncode == 0


needs_torchrun = pytest.mark.skipif(not os.path.exists(TORCHRUN), reason="torchrun not installed")
needs_private_mounts = pytest.mark.skipif(
    not private_mounts_work(), reason="needs a private mount namespace and tmpfs mounts (unshare -m, as root)"
)


@dataclass(frozen=True)
class Node:
    """One simulated node: ``private`` folders on storage only it sees (empty tmpfs), ``setup``
    shell commands run in its namespace before its agent starts."""

    private: Sequence[Path] = field(default_factory=tuple)
    setup: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_nodes(args: Sequence[object], nodes: Sequence[Node] = (Node(), Node())) -> List[subprocess.Popen]:
    """Start ``python -m mlkd_cache ARGS`` on ``len(nodes)`` simulated nodes of one rank each."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    procs = []
    for i, node in enumerate(nodes):
        command = [
            TORCHRUN,
            f"--nnodes={len(nodes)}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id=mlkd-test-{port}",
            f"--local-addr=127.0.0.{i + 1}",
            f"--rdzv-conf=is_host={int(i == 0)}",  # node 0's agent holds the rendezvous store, as a head node's does
            "-m",
            "mlkd_cache",
            *map(str, args),
        ]
        if node.private or node.setup:
            mounts = [f"mount -t tmpfs tmpfs {shlex.quote(str(p))}" for p in node.private]
            script = " && ".join([*mounts, *([node.setup] if node.setup else []), 'exec "$@"'])
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "node", *command]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return procs


def finish(procs: Sequence[subprocess.Popen], timeout: float = 300) -> List[subprocess.CompletedProcess]:
    """Wait for every node; (returncode, stdout, stderr) of each, in node order. A node still
    running after ``timeout`` seconds is killed (and the test then fails on its exit code)."""
    done = []
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_node(proc)
            out, err = proc.communicate()
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def run_nodes(
    args: Sequence[object], nodes: Sequence[Node] = (Node(), Node()), timeout: float = 300
) -> List[subprocess.CompletedProcess]:
    """:func:`start_nodes` and wait for all of them."""
    return finish(start_nodes(args, nodes), timeout)


def descendants(pid: int) -> List[int]:
    """Every living process below ``pid`` (torchrun starts each worker in a session of its own)."""
    found, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(k) for k in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL every process of the node ``proc`` started (its agent and its workers), at once."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_last_node_when(
    procs: Sequence[subprocess.Popen], ready: Callable[[], None]
) -> Tuple[subprocess.CompletedProcess, float]:
    """Once ``ready()`` returns (it waits for a moment of the run, and raises if there is none),
    SIGKILL the last node and wait for node 0: (node 0's result, seconds from the kill to its
    exit). No node is left running."""
    try:
        ready()
        kill_node(procs[-1])
        killed = time.monotonic()
        survivor = finish(procs[:1], timeout=120)[0]
        return survivor, time.monotonic() - killed
    finally:
        stop_all(procs)


def stop_all(procs: Sequence[subprocess.Popen]) -> None:
    """Leave no node behind when a test fails early."""
    for proc in procs:
        if proc.poll() is None:
            kill_node(proc)
            proc.communicate()


def error_lines(stderr: str) -> List[str]:
    """Our error lines on a node's stderr (torchrun's agent adds its own report after them)."""
    return [line for line in stderr.splitlines() if line.startswith(ERROR_PREFIX)]


def assert_all_ok(done: Sequence[subprocess.CompletedProcess]) -> None:
    for node, proc in enumerate(done):
        assert proc.returncode == 0, f"node {node}: {proc.stderr[-3000:]}"


def assert_refused_on_every_node(done: Sequence[subprocess.CompletedProcess], match: str) -> Optional[str]:
    """Every node failed with exit code 2 from its rank, printing one and the same error line
    containing ``match`` and no Python traceback of ours; returns that line."""
    import re

    lines = []
    for node, proc in enumerate(done):
        assert proc.returncode != 0, f"node {node} succeeded: {proc.stdout[-2000:]}"
        ours = error_lines(proc.stderr)
        assert len(ours) == 1, f"node {node}: {proc.stderr[-3000:]}"
        assert "mlkd_cache/" not in proc.stderr, f"node {node} printed a traceback of ours: {proc.stderr[-3000:]}"
        assert "exitcode  : 2" in proc.stderr, proc.stderr[-2000:]  # the rank's exit code, as torchrun reports it
        lines.append(ours[0])
    assert len(set(lines)) == 1, lines
    assert re.search(match, lines[0]), lines[0]
    return lines[0]
