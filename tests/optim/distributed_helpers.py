"""Running a test worker in two gloo processes on CPU: a free port, and a spawn that cannot hang the suite."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: Callable[..., None], args: tuple, world: int = 2, timeout_s: float = 120) -> None:
    """``worker(rank, *args)`` in ``world`` spawned processes; killed and failed after ``timeout_s``.

    The worker should end with a barrier and ``os._exit(0)`` (see tests/optim/test_distributed.py for why).
    """
    context = mp.spawn(worker, args=args, nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"the {world}-process gloo run did not finish within {timeout_s:.0f} s")
