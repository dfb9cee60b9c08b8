"""Run generation work on every core, with results in submission order."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from typing import Callable, Iterable, Iterator


def default_num_workers() -> int:
    """Return the number of CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextlib.contextmanager
def _main_module_hidden():
    """Keep spawned workers from importing the parent's `__main__` module.

    A "spawn" worker imports the parent's main module before it runs anything. When
    the parent is the training script, that imports TensorFlow in every worker,
    which costs seconds and hundreds of megabytes each. The workers only need the
    generator's own modules, which they import when they unpickle the function, so
    the main module's `__spec__` and `__file__` are hidden while the pool starts.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {key: main.__dict__[key] for key in ("__spec__", "__file__") if key in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def ordered_map(function: Callable, items: Iterable, num_workers: int) -> Iterator:
    """Yield `function(item)` for each item, in order, from `num_workers` processes.

    `function` must be defined at the top level of a module other than `__main__`,
    so that worker processes can import it. With one worker everything runs in this
    process.
    """
    if num_workers == 1:
        yield from map(function, items)
        return
    # "spawn" starts clean interpreters: forking a parent that has already started
    # TensorFlow's threads can deadlock the children.
    context = multiprocessing.get_context("spawn")
    with _main_module_hidden():
        pool = context.Pool(num_workers)
    with pool:
        yield from pool.imap(function, items)
