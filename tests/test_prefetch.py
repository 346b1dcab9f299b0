"""xlm_jax.data.prefetch.Prefetcher: batches in step order, the same as built inline, errors raised in the
caller, and no thread left behind however the consumer stops."""

import threading
import time

import numpy as np
import pytest

from xlm_jax.data.prefetch import Prefetcher


def make(step: int) -> dict:
    return {"ids": np.random.default_rng(step).integers(0, 100, (4, 8))}  # a pure function of the step


def producers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "prefetch"]


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_batches_equal_inline_ones_from_any_start(depth):
    with Prefetcher(make, start=5, stop=12, depth=depth) as batches:
        for step in range(5, 12):
            np.testing.assert_array_equal(batches.get(step)["ids"], make(step)["ids"])
    assert batches.gets == 7 and batches.waited_s >= 0 and not producers()


def test_out_of_order_and_past_the_end_are_refused():
    with Prefetcher(make, start=0, stop=2, depth=2) as batches:
        with pytest.raises(ValueError, match="expected step 0"):
            batches.get(1)
        batches.get(0)
        batches.get(1)
        with pytest.raises(ValueError, match="beyond the last step"):
            batches.get(2)


def test_an_error_in_make_is_raised_by_the_get_of_that_step():
    def failing(step):
        if step == 3:
            raise KeyError("bad row")
        return step

    with Prefetcher(failing, start=0, stop=10, depth=2) as batches:
        assert [batches.get(s) for s in range(3)] == [0, 1, 2]
        with pytest.raises(KeyError, match="bad row"):
            batches.get(3)
    assert not producers()


def test_leaving_early_with_a_full_queue_joins_the_producer():
    built = []

    def slow(step):
        built.append(step)
        return step

    with pytest.raises(RuntimeError, match="consumer failed"):
        with Prefetcher(slow, start=0, stop=1000, depth=2) as batches:
            batches.get(0)
            time.sleep(0.3)  # the producer fills the queue and blocks on it
            raise RuntimeError("consumer failed")
    assert not producers()
    assert len(built) <= 4  # bounded: never more than depth batches ahead of the consumer (+ the one in hand)


def test_the_producer_runs_ahead_while_the_consumer_works():
    def build(step):
        time.sleep(0.05)
        return step

    with Prefetcher(build, start=0, stop=6, depth=2) as batches:
        batches.get(0)
        for step in range(1, 6):
            time.sleep(0.1)  # the "device step": longer than a batch, so the next one is ready
            batches.get(step)
    assert batches.waited_s < 0.1 + 0.05 * 2  # only the first batch is waited for in full


def test_negative_depth_is_refused():
    with pytest.raises(ValueError, match="depth=-1"):
        Prefetcher(make, 0, 1, depth=-1)
