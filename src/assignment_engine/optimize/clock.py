"""Time and effort: how long each component may be worked on.

Two limits, either or both:

* **effort**: deterministic seconds of CP-SAT (and GLOP) work per phase
  budget of a component, counted by the solvers themselves, so a plan
  depends only on its inputs, seed and effort, never on the machine's load
  or on ``--workers``; the default (``DEFAULT_EFFORT``) applies when no
  wall-clock limit is given;
* **deadline**: a wall-clock instant (``time.time()``) by which the run's
  solving must end. ``share_time`` gives each component that needs CP-SAT a
  deadline of its own, in proportion to an estimate of its work (its size
  and whether its bands can all hold), and every
  step of the method (CP-SAT calls, the LP relaxation, the neighbourhood
  search, the band repair) stops at its component's. A component that
  stopped on the clock is reported (``Clock.cut``); its plan may differ from
  run to run.

A deadline crosses processes (and machines, for the Dask executor) as a
``time.time()`` instant; a component converts it once, when it starts, into a
``time.monotonic()`` end that the steps check.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ortools.sat.python import cp_model

    from .component import Component


class Timed(Protocol):
    """What :func:`share_time` schedules: a part with a deadline to set (a Component, or the Pending that stands for one)."""

    deadline: float | None


T = TypeVar("T", bound=Timed)

DEFAULT_EFFORT = 1.5  # deterministic seconds per phase budget of a component when no wall-clock limit is given (as ruleset's)
AFTER_SOLVING = 60e-6  # wall seconds per account held back from the solver for building and writing the plan (M:
# 100,000 accounts in 3.4 to 6.6 s at load averages of 5 to 9 on 2 cores)
MARGIN = 0.01  # of the time limit, held back as well: on a loaded machine CP-SAT stops up to 0.5 % late (GAP, 60 s)
OVERRUN = 6e-6  # wall seconds per candidate pair a component stops early: CP-SAT overruns its time limit by about
# 3 µs a variable (loading and stopping a model of 128,000 pairs: 0.4 s) and reading its answer back takes 2 µs


def effort_in_force(effort: float | None, time_limit: float | None) -> float | None:
    """The effort a run works to: the one given; else the default, unless a wall-clock limit bounds the run
    instead (then None: each component works until it is proven optimal, converges or its time is up)."""
    if effort is not None:
        return effort
    return None if time_limit is not None else DEFAULT_EFFORT


def solving_deadline(started: float, time_limit: float, accounts: int) -> float:
    """The instant (``time.time()``) solving must end for a run started at ``started`` to end within
    ``time_limit`` seconds: building and writing the plan after solving are held back, estimated at
    AFTER_SOLVING seconds an account, and MARGIN of the limit for stops that land late on a loaded
    machine (at most a quarter of the limit in all)."""
    return started + time_limit - min(AFTER_SOLVING * accounts + MARGIN * time_limit, time_limit / 4)


@dataclass
class Clock:
    """One component's limits while it is solved: ``effort`` (None: none) and the wall-clock ``end``
    (``time.monotonic()``; None: none). ``cut`` records that some step stopped on the wall clock."""

    effort: float | None
    end: float | None = None
    cut: bool = False

    @classmethod
    def starting(cls, effort: float | None, deadline: float | None, pairs: int = 0) -> Clock:
        """The clock of a component of ``pairs`` candidate pairs that starts now, ``deadline`` being a ``time.time()``
        instant: its steps end OVERRUN seconds a pair earlier, for CP-SAT to stop and the plan to be read back."""
        end = None if deadline is None else time.monotonic() + (deadline - time.time()) - OVERRUN * pairs
        return cls(DEFAULT_EFFORT if effort is None and end is None else effort, end)

    @property
    def budget(self) -> float:
        """The deterministic budget of one phase (infinite without effort)."""
        return math.inf if self.effort is None else self.effort

    def left(self) -> float:
        """Wall seconds to the end (infinite without one)."""
        return math.inf if self.end is None else max(self.end - time.monotonic(), 0.0)

    def over(self) -> bool:
        """True once the end has passed: the caller stops, and the component is reported stopped on time."""
        if self.end is not None and time.monotonic() >= self.end:
            self.cut = True
            return True
        return False

    def until(self, parts: float) -> float:
        """The end of the next of ``parts`` equal shares of the time left (``time.monotonic()``; inf without an end)."""
        return math.inf if self.end is None else time.monotonic() + self.left() / max(parts, 1.0)

    def limit(self, solver: cp_model.CpSolver, deterministic: float, until: float = math.inf) -> None:
        """Bound the next solve by ``deterministic`` seconds of work and by the wall clock, up to ``until``
        (``time.monotonic()``) and never past the end."""
        solver.parameters.max_deterministic_time = max(deterministic, 0.0)
        end = min(until, self.end if self.end is not None else math.inf)
        solver.parameters.max_time_in_seconds = math.inf if math.isinf(end) else max(end - time.monotonic(), 0.0)

    def stopped(self, solver: cp_model.CpSolver, proven: bool) -> None:
        """After a solve that ended without an answer (``proven`` False): note a stop on the wall clock,
        the solve having used less than its deterministic budget."""
        if proven or math.isinf(solver.parameters.max_time_in_seconds):
            return
        if solver.response_proto.deterministic_time < solver.parameters.max_deterministic_time * 0.999:
            self.cut = True


# A component whose bands cannot all hold (an account larger than a band, say) runs a balance phase before
# its continuity phase and a longer repair: on a sample of the L book 0.6-1.2 s at effort 1.5, against
# 0.05-0.6 s (0.25 s on average) for components of the same size whose start holds their bands.
HARD_BANDS_WORK = 4


def work(part: Component) -> float:
    """An estimate of a component's solving work: its candidate pairs times its load dimensions plus one
    (the size of its models), HARD_BANDS_WORK times that when its bands cannot all hold; none for a
    component that needs no solver."""
    if not part.needs_solver:
        return 0.0
    return float(len(part.pair_user) * (len(part.dims) + 1)) * (1 if part.bands_may_hold else HARD_BANDS_WORK)


def share_time(parts: Sequence[T], deadline: float, workers: int, weigh: Callable[[T], float]) -> list[T]:
    """Give each part a deadline of its own out of the time left to ``deadline``; the parts, largest first.

    The parts are scheduled largest first on ``workers`` (each next part on the
    first worker free, as a pool takes them) with durations in proportion to
    their ``work``, and the schedule is stretched to end at ``deadline``: a
    part's deadline is its end there. A part that starts early, because the
    ones before it finished early, so has more time than its share: time a
    part does not use passes to the parts after it. ``weigh`` gives a part's
    work (:func:`work` of a component; a ``Pending`` carries its own).
    """
    order = sorted(parts, key=lambda p: -weigh(p))
    if not order:
        return order
    now = time.time()
    window = max(deadline - now, 0.0)
    free = [0.0] * max(1, min(workers, len(order)))
    ends = []
    for part in order:
        start = heapq.heappop(free)
        ends.append(start + weigh(part))
        heapq.heappush(free, ends[-1])
    makespan = max(max(ends), 1e-9)
    for part, end in zip(order, ends, strict=True):
        part.deadline = now + window * end / makespan
    return order
