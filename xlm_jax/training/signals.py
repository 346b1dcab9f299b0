"""Stopping a training loop cleanly on SIGINT / SIGTERM, for any loop (pretraining, fine-tuning).

    with StopSignals() as stop:
        for step in ...:
            ...  # one step
            if stop.signum is not None:
                save_checkpoint(step)
                raise Stopped(stop.signum)   # caught by the command: exit code 128 + signum (130 / 143)

The first signal only sets `signum`, so the loop finishes the step in hand and saves; a second one ends the process
at once (the default handlers are back), without a checkpoint. The previous handlers are restored on exit.
"""

from __future__ import annotations

import signal


class Stopped(Exception):
    """Raised by a loop after saving, on a signal; `exit_code` is the shell's convention, 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """SIGINT / SIGTERM set `signum`: the loop saves a checkpoint after the current step and stops; a second
    signal ends the process at once (no checkpoint). The previous handlers come back on exit. Main thread only
    (`signal.signal`)."""

    def __init__(self):
        self.signum = None
        self._old = {}

    def _on_signal(self, signum, _frame):
        self.signum = signum
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def __enter__(self) -> StopSignals:
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
