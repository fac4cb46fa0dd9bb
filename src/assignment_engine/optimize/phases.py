"""The lexicographic phases: one CP-SAT model per component, its objectives optimised in strict order.

Objectives, in order: unassigned accounts (hard), balance (band slack),
continuity (accounts moved, then value moved), affinity (per-pair cost); the
order after 'unassigned' is the rule file's. Each phase minimises one
objective with the earlier ones capped at their best value, hinted with the
best plan so far (the start: start.py), so the result is never worse than
the start; a phase whose plan already meets its lower bound (trivial, or the
LP's: relaxation.py) is not solved. When the start misses a hard goal, a
strict model (every unit placed, every band held) is tried first; the relaxed
one (an 'unassigned' option per unit, penalised band slack) only if it finds
nothing. The neighbourhood search (neighbourhood.py) finishes a continuity
phase CP-SAT left unproven, or starts the affinity phase of a component held
only by capacities.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
from ortools.sat.python import cp_model

from .cpsat import new_solver
from .limits import NO_CAP, Band, Cap
from .neighbourhood import neighbourhood_search
from .problem import VALUE_STEPS, Objective, accounts_moved, accounts_moved_bound
from .relaxation import Relaxation, branched, integral, strict_relaxation
from .start import greedy_start, lp_guided_start, lp_rounded_start

if TYPE_CHECKING:
    from .component import Component

CONTINUITY_GAP = 0.005  # a continuity phase may stop within 0.5 % of its proven bound
# ... and, when its plan rounded from the LP is this many accounts moved or fewer above the LP's bound, without
# CP-SAT: on 19 sampled L components the rounded plan was within one account of the best CP-SAT found,
# which took it 0.2-0.6 s each to find and prove (the bound reported stays the LP's); on components of
# under LP_STOP_PAIRS candidate pairs CP-SAT takes milliseconds, and the S book (about 400 pairs a
# component) moved 4 accounts more (1.6 %) with the stop than without it
LP_STOP_ACCOUNTS = 1
LP_STOP_PAIRS = 2_000
MIN_ROUND = 0.05  # wall seconds a phase must have left for one more CP-SAT round
# The least band slack, where bands cannot all hold, takes this part of a phase's budget and of the time left:
# CP-SAT never improved on the repaired start there (30 components of M, 3 of an L sample at effort 1.5),
# and the continuity phase after it needs the time (on the wall clock it used to get none).
BALANCE_SHARE = 0.25


def lexicographic(part: Component, start: np.ndarray) -> tuple[np.ndarray, list[Objective]]:
    """Optimise the objectives in order; when the start misses a hard goal, first try it as a constraint.

    A model that must place every unit within every band (when nothing shows
    that impossible) finds such a plan far faster than one that minimises
    unplaced units and band slack; only if it finds none within its budget
    is the relaxed model (an 'unassigned' option per unit, penalised slack on
    the bands) solved.
    """
    greedy_scores = part.scores(start)
    placeable = bool(np.all(np.diff(part.ptr) > 0))
    trivial = part.lower_bounds()
    guide = next((n for n in part.order if n in ("continuity", "affinity") and greedy_scores[n] > trivial[n]), None)
    if part.capacity_only and guide is not None and placeable:
        guided = lp_guided_start(part, guide)
        if guided is not None:
            guided_scores = part.scores(guided)
            if _better(guided_scores, greedy_scores, ["unassigned", *part.order]):
                start, greedy_scores = guided, guided_scores
    if (greedy_scores["unassigned"] or greedy_scores["balance"]) and placeable and part.bands_may_hold:
        strict = _phases(part, start, greedy_scores, strict=True)
        if strict is not None:
            return strict
    if greedy_scores["unassigned"] and any(isinstance(d, Cap) for d in part.dims):
        # the relaxed model keeps what its start places: start from the placement that leaves fewer out
        alternative = greedy_start(part, room_first=True)
        if part.scores(alternative)["unassigned"] < greedy_scores["unassigned"]:
            start, greedy_scores = alternative, part.scores(alternative)
    if "balance" not in part.order or not any(isinstance(d, Band) for d in part.dims):
        relaxed = _phases(part, start, greedy_scores, strict=False)
        assert relaxed is not None  # the start is a solution of the relaxed model
        return relaxed
    # bands that cannot all hold: first the least slack, then, with every user's band redrawn around that
    # plan so that no later plan has more slack (widened_bands), the later objectives as a strict model
    first = _phases(part, start, greedy_scores, strict=False, until="balance", share=1.0 if greedy_scores["unassigned"] else BALANCE_SHARE)
    assert first is not None
    best, objectives = first
    if part.scores(best)["unassigned"] == 0 and placeable:
        rest = _phases(part, best, greedy_scores, strict=True, bands=widened_bands(part, best))
        if rest is not None:
            return rest[0], objectives + [o for o in rest[1] if o.name not in ("unassigned", "balance")]
    relaxed = _phases(part, best, greedy_scores, strict=False)
    assert relaxed is not None
    return relaxed[0], objectives + [o for o in relaxed[1] if o.name not in ("unassigned", "balance")]


def widened_bands(part: Component, best: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per band, low and high ends per user within which no plan that places every unit has more slack
    on that band than ``best`` (a complete plan whose slack is the least found).

    Each user's band widened just to cover ``best`` would do, but it pins the
    loads: when one account is larger than every band, its holder is above
    and everyone else below, and with the total conserved no load could move
    at all. Where every unit weighs the same for each of its candidates, the
    total is conserved, and a band's slack is at most Σ (slack in ``best`` +
    load in ``best`` − load) over users whose load stays at most their end
    below: ``lo`` for a user below the band, the load in ``best`` for the
    others (for bands with ``lo`` ≤ ``hi``). That sum is the slack of ``best``. So users may shed load freely
    and those below the band may gain up to it; mirrored (loads only rising,
    to ``hi`` above the band and to the load in ``best`` for the others) when
    more users are above the band than below.
    """
    loads = part.loads(best)
    counts = np.diff(part.ptr)
    widened = {}
    for i, (d, load) in enumerate(zip(part.dims, loads, strict=True)):
        if not isinstance(d, Band):
            continue
        below, above = load < d.lo, load > d.hi
        first = d.values[part.ptr[:-1][counts > 0]] if len(d.values) else d.values
        conserved = bool(np.all(d.values == np.repeat(first, counts[counts > 0]))) and np.all(d.values >= 0) and np.all(d.lo <= d.hi)
        if not (below.any() or above.any()):
            widened[i] = (d.lo, d.hi)
        elif not conserved:
            widened[i] = (np.minimum(d.lo, load), np.maximum(d.hi, load))
        elif below.sum() >= above.sum():  # loads may fall anywhere, and rise only below the band
            widened[i] = (d.fixed, np.where(below, d.lo, load))
        else:  # loads may rise anywhere, and fall only above the band
            top = d.fixed + np.bincount(part.pair_user, weights=d.values, minlength=len(part.users)).astype(np.int64)
            widened[i] = (np.where(above, d.hi, load), np.maximum(top, load))
    return widened


def bands_may_hold(part: Component) -> bool:
    """False when a simple count shows some band cannot hold (then the strict model is skipped)."""
    for d in part.dims:
        if not isinstance(d, Band):
            continue
        if np.any(d.fixed > d.hi) or np.any(d.lo > d.hi):
            return False
        smallest = part.per_unit(np.minimum, d.values, empty=0)
        if np.any(smallest > part.per_unit(np.maximum, d.hi[part.pair_user], empty=0)):
            return False  # a unit too big for every candidate's band
        low = int(d.fixed.sum() + smallest.sum())
        high = int(d.fixed.sum() + part.per_unit(np.maximum, d.values, empty=0).sum())
        if d.lo.sum() > high or d.hi.sum() < low:
            return False
    return True


def _phases(
    part: Component,
    start: np.ndarray,
    greedy_scores: dict[str, int],
    *,
    strict: bool,
    bands: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
    until: str | None = None,
    share: float = 1.0,
) -> tuple[np.ndarray, list[Objective]] | None:
    """One CP-SAT model, its objectives solved in order (up to ``until``).

    ``strict``: every unit placed and every band held (``bands`` may redraw
    them per dimension index); ``share``: the part of the component's budget
    and time left this model may use. Otherwise: an 'unassigned' option per unit and
    penalised band slack. None when a strict model finds no solution.
    """
    has_caps = any(isinstance(d, Cap) for d in part.dims)
    counts = np.diff(part.ptr)
    unplaced = np.ones(len(part.units), dtype=bool) if has_caps and not strict else counts == 0  # units with an 'unassigned' option
    present = {
        "balance": not strict and bool(part.users) and any(isinstance(d, Band) for d in part.dims),
        "continuity": True,
        "affinity": bool(part.cost.any()),
    }
    relevant = ["unassigned"] * bool(unplaced.any()) + [name for name in part.order if present[name]]
    if until is not None:
        relevant = relevant[: relevant.index(until) + 1] if until in relevant else relevant
    # in the strict model the start (outside a band, or leaving units out) is no solution: no incumbent yet,
    # unless it holds the bands (redrawn around it) or the LP's rounded plan does (below)
    best, best_scores = (None, None) if strict else (start, dict(greedy_scores))
    bounds = part.lower_bounds(complete=strict or greedy_scores["unassigned"] == 0)
    clock = part.clock
    if clock.over():  # no time left: the start as it is (a strict model has none)
        return None if strict else _scaled(part, start, [_kept(name, greedy_scores, bounds) for name in relevant])
    effective_bands = {i: (bands or {}).get(i, (d.lo, d.hi)) for i, d in enumerate(part.dims) if isinstance(d, Band)}
    lp: dict[str, int] = {}  # bounds of this strict model's LP relaxation
    if strict and _holds(part, start, effective_bands):  # redrawn bands cover the plan they were drawn around
        best, best_scores = start, part.scores(start)
    if strict and "continuity" in relevant:
        relaxation = strict_relaxation(part, part.continuity, effective_bands)
        if relaxation is not None:
            lp["continuity"] = _lp_bound(part, relaxation)
            relaxations = [relaxation]
            branches = branched(part, part.continuity, effective_bands, relaxation)
            if branches is not None and not branches and best is None:
                return None  # proven: no plan holds the bands
            if branches:  # every plan is in one of them: the least of their bounds is one
                lp["continuity"] = max(lp["continuity"], min(_lp_bound(part, b) for b in branches))
                relaxations = sorted(branches, key=lambda b: _lp_bound(part, b))
            for r in relaxations:
                rounded = lp_rounded_start(part, r.values, part.continuity, effective_bands)
                if rounded is not None and (best_scores is None or _better(part.scores(rounded), best_scores, relevant)):
                    best, best_scores = rounded, part.scores(rounded)

    def lower(complete: bool) -> dict[str, int]:
        return {name: max(value, lp.get(name, value)) for name, value in part.lower_bounds(complete).items()}

    bounds = lower(strict or greedy_scores["unassigned"] == 0)
    objectives = []
    if strict:
        objectives.append(Objective("unassigned", 0, 0, greedy_scores["unassigned"], "OPTIMAL"))
        if any(isinstance(d, Band) for d in part.dims) and bands is None:
            objectives.append(Objective("balance", 0, 0, greedy_scores["balance"], "OPTIMAL"))
    if (
        best is not None and best_scores is not None and strict and all(_close(part, best_scores[n], bounds[n], n) for n in relevant)
    ):  # by the LP
        states = {n: "OPTIMAL" if best_scores[n] <= bounds[n] else "START" if best is start else "FEASIBLE" for n in relevant}
        return _scaled(
            part,
            best,
            objectives + [Objective(n, best_scores[n], min(bounds[n], best_scores[n]), greedy_scores[n], states[n]) for n in relevant],
        )
    model = cp_model.CpModel()
    x = [model.new_bool_var("") for _ in range(len(part.pair_user))]
    unplaced_terms = []
    for k in range(len(part.units)):
        row = x[part.ptr[k] : part.ptr[k + 1]]
        if unplaced[k]:
            none = model.new_bool_var("")
            model.add_exactly_one([*row, none])
            unplaced_terms.append((none, int(part.size[k])))
        else:
            model.add_exactly_one(row)
    user_pairs = part.user_pairs
    slack = []
    for i, d in enumerate(part.dims):
        for c in range(len(part.users)):
            pairs = user_pairs[c]
            pairs = pairs[d.values[pairs] != 0]
            expr = cp_model.LinearExpr.weighted_sum([x[p] for p in pairs], d.values[pairs].tolist()) + int(d.fixed[c])
            if isinstance(d, Cap) and d.cap[c] < NO_CAP:
                model.add(expr <= int(d.cap[c]))
            if isinstance(d, Band) and strict:
                lo, hi = effective_bands[i]
                model.add_linear_constraint(expr, int(lo[c]), int(hi[c]))
            elif isinstance(d, Band):
                top = int(d.fixed[c] + d.values[pairs].sum())
                over = model.new_int_var(0, max(top - int(d.hi[c]), 0), "")
                under = model.new_int_var(0, max(int(d.lo[c]) - int(d.fixed[c]), 0), "")
                model.add(expr - over <= int(d.hi[c]))
                model.add(expr + under >= int(d.lo[c]))
                slack += [(over, d.weight), (under, d.weight)]
    exprs = {
        "unassigned": cp_model.LinearExpr.weighted_sum([v for v, _ in unplaced_terms], [s for _, s in unplaced_terms]),
        "balance": cp_model.LinearExpr.weighted_sum([v for v, _ in slack], [w for _, w in slack]),
        "continuity": cp_model.LinearExpr.weighted_sum(x, part.continuity.tolist()),
        "affinity": cp_model.LinearExpr.weighted_sum(x, part.cost.tolist()),
    }
    hint = start if best is None else best
    to_solve = [name for name in relevant if best_scores is None or best_scores[name] > bounds[name]]
    solver = new_solver(part.seed)
    # the budget is shared by the phases to solve (a failed strict attempt costs one more budget); so is the
    # wall-clock time left, each phase taking an equal part of what the ones before it left
    phase_budget = clock.budget * share / max(len(to_solve), 1)

    def settle(name: str, value: int, bound: float, state: str) -> None:
        """Record the phase and cap its objective at ``value``, the best found, for the later phases."""
        objectives.append(Objective(name, value, bound, greedy_scores[name], state))
        model.add(exprs[name] <= value)

    def run(until: float) -> cp_model.CpSolverStatus:
        """Solve the model within the phase's budget and until ``until`` (time.monotonic())."""
        clock.limit(solver, max(budget, 0.0), until)  # a search may overrun its share by one model
        status = solver.solve(model)
        if status == cp_model.MODEL_INVALID:  # a bug in this module, never a user error
            raise RuntimeError(f"invalid CP-SAT model: {model.validate()}")
        clock.stopped(solver, proven=status in (cp_model.OPTIMAL, cp_model.INFEASIBLE))
        return status

    budget = clock.budget
    if strict and not relevant:  # nothing to optimise: one solve for any plan that holds
        _hint(model, x, hint)
        if run(clock.until(1)) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        best = _read(part, solver, x)
    for name in relevant:
        if best_scores is not None and best_scores["unassigned"] == 0:
            bounds = lower(complete=True)  # placing every unit is now a constraint
        if best_scores is not None and best_scores[name] <= bounds[name]:  # at its trivial or LP bound: proven
            settle(name, best_scores[name], best_scores[name], "OPTIMAL")
            continue
        if clock.over():  # no time left: the best plan so far, unproven
            if best_scores is None:
                return None
            settle(name, best_scores[name], bounds[name], "START" if best is start else "FEASIBLE")
            continue
        earlier = [n for n in relevant[: relevant.index(name)] if n in ("continuity", "affinity")]
        budget, state = phase_budget, "START" if best is start else "FEASIBLE"
        phase_end = clock.until((len(to_solve) - to_solve.index(name) if name in to_solve else 1) / share)
        halfway = (time.monotonic() + phase_end) / 2  # inf without a wall-clock end
        # the exchange search needs a complete plan: before CP-SAT on the affinity of a capacity-only
        # component when the start is one, else after CP-SAT (a strict model's continuity, or its affinity)
        search_first = name == "affinity" and part.capacity_only and best_scores is not None and best_scores["unassigned"] == 0
        search_after = not search_first and (name == "continuity" and strict or name == "affinity" and part.capacity_only)
        if search_first:
            assert best is not None and best_scores is not None  # search_first needs the incumbent (both are set together)
            # generalized assignment: the exchange search first; it converges in a fraction of the budget
            # on small components and does all the improving on large ones, where a single CP-SAT worker
            # improves nothing (GAP 80 × 1600); CP-SAT gets the rest, to prove or improve its plan
            improved, spent = neighbourhood_search(part, best, name, earlier, effective_bands, budget / 2, halfway)
            budget -= spent
            if _better(part.scores(improved), best_scores, relevant):
                best, best_scores, hint, state = improved, part.scores(improved), improved, "FEASIBLE"
            if best_scores[name] <= bounds[name]:
                settle(name, best_scores[name], bounds[name], "OPTIMAL")
                continue
        model.minimize(exprs[name])
        _tune(solver, name)
        bound = float(bounds[name])
        rounds = [halfway if search_after else phase_end]
        while rounds:
            _hint(model, x, hint)
            status = run(rounds.pop())
            budget -= solver.response_proto.deterministic_time
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                found = _read(part, solver, x)
                scores = part.scores(found)
                # a search stopped by the gap limit also reports OPTIMAL: only a met bound is a proof
                proven = status == cp_model.OPTIMAL and solver.objective_value <= solver.best_objective_bound
                if best_scores is None or _better(scores, best_scores, relevant):
                    best, best_scores, hint = found, scores, found
                    state = "OPTIMAL" if proven else "FEASIBLE"
                elif proven:
                    state = "OPTIMAL"
                bound = max(bound, float(solver.best_objective_bound))
            if best_scores is None:
                return None  # no full placement found in the budget
            assert best is not None  # set together with best_scores
            if search_after and best_scores["unassigned"] == 0 and state != "OPTIMAL" and best_scores[name] > bound * (1 + CONTINUITY_GAP):
                improved, _ = neighbourhood_search(part, best, name, earlier, effective_bands, clock.budget, phase_end)
                scores = part.scores(improved)
                if _better(scores, best_scores, relevant):
                    best, best_scores, hint = improved, scores, improved
                    state = "OPTIMAL" if best_scores[name] <= bound else "FEASIBLE"
            # on the wall clock, time the phase has left (a search that ended early, or was not needed) goes to
            # CP-SAT again, from the best plan; on effort alone, each step has had its budget
            again = search_after and clock.end is not None and state != "OPTIMAL" and budget > 0
            search_after = False
            if again and phase_end - time.monotonic() > MIN_ROUND:
                rounds.append(phase_end)
        assert best_scores is not None  # each round returned above without a plan
        settle(name, best_scores[name], bound, state)
    assert best is not None  # a strict model without a plan returned None above
    return _scaled(part, best, objectives)


def _lp_bound(part: Component, relaxation: Relaxation) -> int:
    """The LP's bound on continuity, and the one its prices give on accounts moved alone (moves_floor)."""
    return max(integral(relaxation.bound), moves_floor(part, relaxation))


def moves_floor(part: Component, relaxation: Relaxation) -> int:
    """A bound on continuity from a bound on accounts moved alone, with the LP's prices: every plan moves
    a whole number of accounts, at least ⌈the priced bound on moves⌉, and its continuity is at least
    (VALUE_STEPS + 1) per account moved. Converting the LP's continuity bound to accounts moved must allow
    for up to VALUE_STEPS of value moved in it (accounts_moved_bound), which loses almost an account on
    most components; this does not."""
    if relaxation.prices is None:
        return 0
    scale = VALUE_STEPS + 1  # the LP's prices are in units of continuity
    return integral(relaxation.prices.bound(part.moves * float(scale)) / scale) * scale


def _close(part: Component, value: int, bound: int, name: str) -> bool:
    """At its bound, or a continuity within the gap CP-SAT would stop at (CONTINUITY_GAP), or within
    LP_STOP_ACCOUNTS accounts moved of it on a component of LP_STOP_PAIRS candidate pairs or more."""
    if value <= bound:
        return True
    if name != "continuity":
        return False
    near = len(part.pair_user) >= LP_STOP_PAIRS and accounts_moved(value) - accounts_moved_bound(bound) <= LP_STOP_ACCOUNTS
    return value <= bound * (1 + CONTINUITY_GAP) or near


def _holds(part: Component, chosen: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]]) -> bool:
    """Is the plan one of the strict model's: every unit placed, within every capacity and band?"""
    if np.any(chosen < 0):
        return False
    for i, (d, load) in enumerate(zip(part.dims, part.loads(chosen), strict=True)):
        if isinstance(d, Cap) and np.any(load > d.cap) or i in bands and (np.any(load < bands[i][0]) or np.any(load > bands[i][1])):
            return False
    return True


def _kept(name: str, scores: dict[str, int], bounds: dict[str, int]) -> Objective:
    """A phase not solved for want of time: the start's value, proven only if it meets its bound."""
    return Objective(
        name, scores[name], min(bounds[name], scores[name]), scores[name], "OPTIMAL" if scores[name] <= bounds[name] else "START"
    )


def _scaled(part: Component, chosen: np.ndarray, objectives: list[Objective]) -> tuple[np.ndarray, list[Objective]]:
    """The plan and its objectives, band slack reported in mean fair shares."""
    for o in objectives:
        if o.name == "balance":
            o.value, o.bound, o.greedy = (x / part.balance_unit for x in (o.value, o.bound, o.greedy))
    return chosen, objectives


def _read(part: Component, solver: cp_model.CpSolver, x: list[cp_model.IntVar]) -> np.ndarray:
    values = np.fromiter((solver.boolean_value(v) for v in x), dtype=bool, count=len(x))
    chosen = np.full(len(part.units), -1, dtype=np.int64)
    picked = np.flatnonzero(values)
    chosen[part.pair_unit[picked]] = picked
    return chosen


def _hint(model: cp_model.CpModel, x: list[cp_model.IntVar], chosen: np.ndarray) -> None:
    """Hint the plan ``chosen`` (pair per unit, -1 for none) to the model."""
    model.clear_hints()
    hinted = np.zeros(len(x), dtype=bool)
    hinted[chosen[chosen >= 0]] = True
    for var, value in zip(x, hinted.tolist(), strict=True):
        model.add_hint(var, value)


def _tune(solver: cp_model.CpSolver, phase: str) -> None:
    """Parameters measured on the M benchmark's balance and continuity phases (about 500
    units × 5 users each): objective lower-bound search proves more components
    optimal and finds better plans, and probing during presolve costs more than it
    saves; closing the last 0.5 % of a continuity gap took a sixth of the time. On
    the generalized-assignment benchmark (unassigned, affinity) CP-SAT's defaults
    do better."""
    tuned = phase in ("balance", "continuity")
    solver.parameters.use_objective_lb_search = tuned
    solver.parameters.cp_model_probing_level = 0 if tuned else 2
    solver.parameters.relative_gap_limit = CONTINUITY_GAP if phase == "continuity" else 0.0


def _better(a: dict[str, int], b: dict[str, int], order: list[str]) -> bool:
    return [a[n] for n in order] < [b[n] for n in order]
