"""Loss-coefficient schedules as XLM writes them (`--lambda_ae "0:1,100000:0.1,300000:0"`).

A schedule is either one number (constant) or `step:value` points with strictly increasing integer steps:
the value is interpolated linearly between points and held after the last one (XLM `get_lambda_value`);
before the first point it is the first value (XLM starts every run at the first point's value). A value of 0
means the objective's step is skipped that iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xlm_jax.core.errors import UserError


@dataclass(frozen=True)
class LambdaSchedule:
    points: tuple[tuple[int, float], ...]  # ((step, value), ...), steps strictly increasing

    def __call__(self, step: int) -> float:
        """The coefficient at iteration `step`."""
        points = self.points
        if step <= points[0][0]:
            return points[0][1]
        for (x_a, y_a), (x_b, y_b) in zip(points, points[1:]):
            if x_a <= step < x_b:
                return y_a + (step - x_a) * (y_b - y_a) / (x_b - x_a)
        return points[-1][1]


def parse_lambda(text: str | float | int, key: str = "lambda") -> LambdaSchedule:
    """"0.5" or 0.5 (constant) or "0:1,100000:0.1,300000:0" -> LambdaSchedule. Raises UserError naming `key` for
    a malformed point, a step that is not a non-negative integer, steps not strictly increasing, or a value that
    is negative or not finite."""
    if isinstance(text, bool):
        raise UserError(f"{key}={text!r}: expected a number or step:value points such as 0:1,100000:0.1")
    if isinstance(text, (int, float)):
        text = repr(float(text))
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{key}={text!r}: expected a number or step:value points such as 0:1,100000:0.1")

    def number(raw: str, where: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise UserError(f"{key}={text!r}: {where} {raw!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{key}={text!r}: {where} {raw!r} must be a finite number >= 0")
        return value

    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 1 and ":" not in parts[0]:
        return LambdaSchedule(((0, number(parts[0], "value")),))
    points = []
    for part in parts:
        step, sep, value = part.partition(":")
        if not sep:
            raise UserError(f"{key}={text!r}: point {part!r} is not step:value")
        if not step.strip().isdigit():
            raise UserError(f"{key}={text!r}: step {step.strip()!r} must be a non-negative integer")
        points.append((int(step), number(value.strip(), "value")))
    for (a, _), (b, _) in zip(points, points[1:]):
        if b <= a:
            raise UserError(f"{key}={text!r}: steps must increase strictly ({a} then {b})")
    return LambdaSchedule(tuple(points))
