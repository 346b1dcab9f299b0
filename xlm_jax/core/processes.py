"""Worker pools that never fork a process running threads.

`os.fork()` copies only the calling thread: a lock another thread held (JAX's / XLA's thread pools, once a backend
has started, as in a training process that prepares its data after `model.init_from` loaded a checkpoint) stays
held forever in the child, which can deadlock; Python 3.12+ warns "This process is multi-threaded, use of fork()
may lead to deadlocks in the child". `worker_pool` forks only a single-threaded process (fast start-up) and
otherwise starts its workers with "spawn" (fresh interpreters, no os.fork()).
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any, Callable


def thread_count() -> int:
    """The threads of this process as the OS counts them (XLA's C++ threads included; Linux: /proc/self/stat's
    20th field, as CPython's own fork warning reads it), else the Python threads."""
    try:
        with open("/proc/self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[17])  # fields after "(comm)": state is field 3
    except (OSError, ValueError, IndexError):
        return threading.active_count()


def start_method() -> str:
    """"spawn" when this process runs more than one thread (forking it is unsafe), else the platform default."""
    return "spawn" if thread_count() > 1 else multiprocessing.get_start_method()


def worker_pool(processes: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()):
    """A `multiprocessing.Pool` of `processes` workers started by `start_method()`; the initializer and the
    functions mapped must be importable module-level functions (spawned workers import them)."""
    return multiprocessing.get_context(start_method()).Pool(processes, initializer=initializer, initargs=initargs)
