"""Time-budgeted training (``gan-train --minutes T``): the run measures its own speed over its
first steps, then plans its length, and the intervals of everything that happens "every N steps",
so that the last checkpoint lands inside T minutes of wall time.

The plan is revised every ~1% of the run from the step time measured since the last revision, so
a shared host that slows down shortens the run instead of overrunning it. Schedules read the
run's length from the plan (instance noise annealing, ADA's adjustment speed), so they fit the
budget. The functions here are pure; the trainer times the steps and the outputs and calls them.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

from training.errors import UserError

# Measure at least this many steps and seconds (after the first step, which pays one-off set-up),
# but never more than MEASURE_FRACTION of the budget, before planning.
MEASURE_STEPS = 10
MEASURE_SECONDS = 2.0
MEASURE_FRACTION = 0.1
# Revisions of the plan per run: each may overrun by at most one revision's worth of steps.
REVISIONS = 100
# A revision reads the step time over at least this many recent steps (one step is noisy).
WINDOW_STEPS = 20
# Outputs per run that the plan spreads evenly over its length (unless the user set the interval).
OUTPUTS_PER_RUN = {"sample_every": 10, "ckpt_every": 10, "eval_every": 10}


@dataclass
class TimeBudget:
    """``seconds`` of wall time counted from ``start`` (``time.monotonic()``)."""

    seconds: float
    start: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()


@dataclass
class OutputCosts:
    """Measured seconds of one sample grid, one checkpoint and one evaluation (0 when off)."""

    samples: float = 0.0
    checkpoint: float = 0.0
    evaluation: float = 0.0
    figures: float = 0.0  # loss plot and progress GIF, written once at the end

    def final(self) -> float:
        """What the end of a run writes: samples, a checkpoint, an evaluation, the figures."""
        return self.samples + self.checkpoint + self.evaluation + self.figures


def check_minutes(minutes: float | None, kimg_given: float | None, epochs_given: int | None):
    """Refuse a budget that is not a positive number, or one given together with a length."""
    if minutes is None:
        return
    if not (isinstance(minutes, int | float) and math.isfinite(minutes) and minutes > 0):
        raise UserError(f"--minutes {minutes!r} not allowed: give a number of minutes > 0, e.g. 10")
    for flag, value in (("--kimg", kimg_given), ("--epochs", epochs_given)):
        if value is not None:
            raise UserError(
                f"--minutes {minutes:g} and {flag} {value:g} both set the training length; "
                "give one of them"
            )


def measured_enough(steps: int, seconds: float, measuring: float, budget: TimeBudget) -> bool:
    """True once the timed steps (``seconds`` of steps, ``measuring`` of wall time since the
    measurement began) are enough to plan on, or the measurement has used its share."""
    if steps >= MEASURE_STEPS and seconds >= MEASURE_SECONDS:
        return True
    spent = measuring >= MEASURE_FRACTION * budget.seconds or budget.left() <= 0
    return steps >= 2 and spent


def minimum_seconds(elapsed: float, measuring: float, costs: OutputCosts) -> float:
    """The shortest budget worth running: what it took to start and measure, as long again to
    train, and the final outputs."""
    return elapsed + measuring + costs.final()


def too_short(minutes: float, elapsed: float, measuring: float, costs: OutputCosts) -> UserError:
    need = minimum_seconds(elapsed, measuring, costs)
    evaluation = f", {costs.evaluation:.1f} s for an evaluation" if costs.evaluation else ""
    return UserError(
        f"--minutes {minutes:g} ({minutes * 60:.1f} s) is too short for this run: here it took "
        f"{elapsed:.1f} s to start and measure the training speed, and the end of a run takes "
        f"{costs.checkpoint:.1f} s for a checkpoint, {costs.samples + costs.figures:.1f} s for "
        f"samples and figures{evaluation}; the minimum is about --minutes {math.ceil(need / 60 * 100) / 100:g}"
    )


def steps_that_fit(
    seconds_left: float,
    step_seconds: float,
    costs: OutputCosts,
    intervals: dict[str, int],
) -> int:
    """How many more steps fit in ``seconds_left``: each step costs its own time plus its share
    of the periodic outputs, and the final outputs are reserved."""
    per_step = step_seconds
    per_step += costs.samples / intervals["sample_every"]
    per_step += costs.checkpoint / intervals["ckpt_every"]
    if intervals.get("eval_every"):
        per_step += costs.evaluation / intervals["eval_every"]
    usable = seconds_left - costs.final()
    return max(0, math.floor(usable / max(per_step, 1e-9)))


def plan_intervals(steps: int, current: dict[str, int], given: set[str]) -> dict[str, int]:
    """Intervals that spread OUTPUTS_PER_RUN outputs over ``steps``; those the user gave, and an
    evaluation that is off, stay as they are."""
    out = dict(current)
    for name, count in OUTPUTS_PER_RUN.items():
        if name in given or (name == "eval_every" and not current.get(name)):
            continue
        out[name] = max(1, steps // count)
    return out


def first_plan_intervals(step_seconds: float, seconds_left: float, costs: OutputCosts,
                         current: dict[str, int], given: set[str]) -> dict[str, int]:  # fmt: skip
    """Intervals for the first plan: the step count depends on them through the outputs' cost
    and they on it, so solve by iterating (converges in a few rounds)."""
    intervals = dict(current)
    steps = steps_that_fit(seconds_left, step_seconds, costs, intervals)
    for _ in range(5):
        intervals = plan_intervals(steps, current, given)
        steps = steps_that_fit(seconds_left, step_seconds, costs, intervals)
    return intervals


def process_start() -> float:
    """``time.monotonic()`` when this process started (Linux; elsewhere: now), so that a budget
    includes the seconds spent importing torch and loading the data."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.monotonic()
    return time.monotonic() - min(max(0.0, age), 3600.0)


def format_seconds(seconds: float) -> str:
    """``754.2`` -> ``"12:34"`` (minutes:seconds; hours when needed)."""
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
