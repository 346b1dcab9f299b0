"""Host batches built ahead of the device: batch k+1 (and up to `depth` more) is made in a background thread while
step k runs.

    with Prefetcher(source.batch, start=0, stop=n_steps, depth=2) as batches:
        for step in range(n_steps):
            host_batch = batches.get(step)

The batches are whatever `make(step)` returns, in step order, so a batch that is a pure function of (seed, step)
(`xlm_jax.data.batches.BatchSource.batch`) is the same with prefetching on or off, and a resumed run (which starts
the producer at its first step) sees the same batches as an unbroken one. The queue is bounded (`depth` batches):
the producer never runs further ahead than that, whatever the device does. An exception in `make` is raised by the
`get` of that step, in the caller's thread; leaving the `with` block (normally, on an exception, on a stop signal)
stops the producer and joins it, and the thread is a daemon, so even a process that dies in the middle leaves no
thread behind that would keep it alive. `depth=0` builds each batch in the caller's thread, on `get` (no thread).

`waited_s` is the time `get` spent blocked (with depth 0: building the batch), the host time the device waited
for; `built_s` the time the producer spent in `make`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

_POLL_S = 0.1  # how often a blocked producer or consumer looks at the stop flag / the other side's liveness


class Prefetcher:
    """Batches `make(step)` for steps start, start + 1, ... (< stop), built up to `depth` ahead in one daemon thread.

    `get(step)` must be called with consecutive steps from `start`; it returns `make(step)` or raises what `make`
    raised. Raises ValueError for depth < 0, or a `get` out of order."""

    def __init__(self, make: Callable[[int], Any], start: int, stop: int, depth: int = 2, name: str = "prefetch"):
        if depth < 0:
            raise ValueError(f"depth={depth}: must be >= 0 (0 = build each batch on get, in the caller's thread)")
        self.make, self.next_step, self.stop_step, self.depth = make, start, stop, depth
        self.waited_s = self.built_s = 0.0
        self.gets = 0
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread = None
        if depth > 0 and start < stop:
            self._thread = threading.Thread(target=self._produce, args=(start,), name=name, daemon=True)
            self._thread.start()

    def _produce(self, start: int) -> None:
        for step in range(start, self.stop_step):
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                item = (step, self.make(step), None)
            except BaseException as e:  # handed to the consumer, which raises it in its own thread
                item = (step, None, e)
            self.built_s += time.perf_counter() - t0
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def get(self, step: int) -> Any:
        """The batch of `step` (the step after the last one got)."""
        if step != self.next_step:
            raise ValueError(f"get({step}): expected step {self.next_step} (batches come in step order)")
        if not self.next_step < self.stop_step:
            raise ValueError(f"get({step}): beyond the last step {self.stop_step - 1}")
        self.next_step += 1
        self.gets += 1
        t0 = time.perf_counter()
        if self._thread is None:
            try:
                return self.make(step)
            finally:
                elapsed = time.perf_counter() - t0
                self.waited_s += elapsed
                self.built_s += elapsed
        while True:
            try:
                got, batch, error = self._queue.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError(f"the batch producer stopped before step {step}") from None
        self.waited_s += time.perf_counter() - t0
        if error is not None:
            raise error
        assert got == step, (got, step)
        return batch

    def close(self) -> None:
        """Stops the producer (it finishes the batch in hand, if any) and joins it. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=_POLL_S)
            self._thread = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
