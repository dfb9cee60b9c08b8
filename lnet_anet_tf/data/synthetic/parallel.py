"""Run generation work on every core, with results in submission order."""

from __future__ import annotations

import multiprocessing
import os
from typing import Callable, Iterable, Iterator


def default_num_workers() -> int:
    """Return the number of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def ordered_map(function: Callable, items: Iterable, num_workers: int) -> Iterator:
    """Yield `function(item)` for each item, in order, from `num_workers` processes.

    `function` must be a module-level function so that worker processes can import
    it. With one worker everything runs in this process.
    """
    if num_workers == 1:
        yield from map(function, items)
        return
    # "spawn" starts clean interpreters: forking a parent that has already started
    # TensorFlow's threads can deadlock the children.
    with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        yield from pool.imap(function, items)
