"""The start: a feasible plan that every later step improves, so the result is never worse than it.

Continuity first: ``greedy_start`` keeps each unit's current owner where
capacity allows, places the rest largest first, then ``_repair`` moves or
swaps units of the user furthest outside a band until no move helps. With
``room_first`` it places the hardest unit first where it takes the least
room, for capacities that cheapest-first leaves units out of. On components
held only by capacities, ``lp_guided_start`` rounds the LP relaxation
(relaxation.py), which places every unit where the greedy may leave some
out, and records the LP's bound. Within bands, ``lp_rounded_start`` keeps
the LP's whole units and solves the few split ones exactly. The phases
(phases.py) keep whichever start scores better.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from ortools.sat.python import cp_model

from .cpsat import new_solver, placement_model
from .limits import NO_CAP, Band, Cap
from .relaxation import LoadRows, relax

if TYPE_CHECKING:
    from .component import Component


def greedy_start(part: Component, room_first: bool = False) -> np.ndarray:
    """Keep current owners where capacity allows, place the rest largest first, then repair bands.

    ``room_first`` (capacities only, no bands) places the hardest unit first
    on the candidate whose capacity it takes the smallest part of, ignoring
    cost: on tight capacities it places every unit where cheapest-first
    leaves some out.
    """
    n_units = len(part.units)
    load = [d.fixed.copy() for d in part.dims]
    chosen = np.full(n_units, -1, dtype=np.int64)
    caps = [(i, d.cap) for i, d in enumerate(part.dims) if isinstance(d, Cap)]
    bands = [(i, d) for i, d in enumerate(part.dims) if isinstance(d, Band)]

    def fits(p: int) -> bool:
        c = part.pair_user[p]
        return all(load[i][c] + part.dims[i].values[p] <= cap[c] for i, cap in caps)

    def move(p: int, sign: int) -> None:
        c = part.pair_user[p]
        for i, d in enumerate(part.dims):
            load[i][c] += sign * d.values[p]

    pending = []
    for k in range(n_units):
        lo, hi = part.ptr[k], part.ptr[k + 1]
        if lo == hi:
            continue
        p = lo + int(np.argmin(part.moves[lo:hi]))
        if part.moves[p] < part.size[k] and fits(p):
            chosen[k] = p
            move(p, 1)
        else:
            pending.append(k)
    share = None  # per pair: the largest part of a capacity the unit takes (room_first)
    if room_first and caps and not bands:
        share = np.max([part.dims[i].values / np.maximum(cap[part.pair_user], 1) for i, cap in caps], axis=0)
        hardest = part.per_unit(np.minimum, share, empty=0.0)
        pending.sort(key=lambda k: (-float(hardest[k]), k))
    else:
        size_key = part.dims[bands[0][0]].values if bands else part.cost
        pending.sort(key=lambda k: (-int(size_key[part.ptr[k] : part.ptr[k + 1]].max(initial=0)), k))
    for k in pending:
        best, best_key = -1, None
        for p in range(part.ptr[k], part.ptr[k + 1]):
            if not fits(p):
                continue
            c = part.pair_user[p]
            fill = (
                max(((load[i][c] + d.values[p]) / max(int(d.hi[c]), 1) for i, d in bands), default=0.0)
                if share is None
                else float(share[p])
            )
            key = (fill, int(part.cost[p]), p)
            if best_key is None or key < best_key:
                best, best_key = p, key
        if best >= 0:
            chosen[k] = best
            move(best, 1)
    if bands:
        _repair(part, chosen, load, bands, fits, move)
    return chosen


def _repair(
    part: Component,
    chosen: np.ndarray,
    load: list[np.ndarray],
    bands: list[tuple[int, Band]],
    fits: Callable[[int], bool],
    move: Callable[[int, int], None],
) -> None:
    """Local search on band violations: best single move or swap for the worst user, until none helps.

    Candidate moves are scored in arrays: for the worst user s and each other
    user t, every unit of s that may go to t (a move) and every pair of such
    units of s and t (a swap). Ties prefer actions that move fewer accounts.
    """
    n_users = len(part.users)
    if len(part.units) * n_users > 5_000_000:
        return  # too large for a dense pair table; CP-SAT works from the greedy start as it is
    pair_of = np.full((len(part.units), n_users), -1, dtype=np.int64)
    pair_of[part.pair_unit, part.pair_user] = np.arange(len(part.pair_user))
    band_of = dict(bands)  # dim index → band
    band_index = list(band_of)
    cap_dims = [(i, d) for i, d in enumerate(part.dims) if isinstance(d, Cap)]

    def viol(i: int, users: np.ndarray | int, new_load: np.ndarray) -> np.ndarray:
        d = band_of[i]
        return d.weight * (np.maximum(new_load - d.hi[users], 0) + np.maximum(d.lo[users] - new_load, 0))

    def user_violation() -> np.ndarray:
        return sum((viol(i, np.arange(n_users), load[i]) for i in band_index), np.zeros(n_users, dtype=np.int64))

    unit_user = np.full(len(part.units), -1, dtype=np.int64)
    for _ in range(4 * len(part.units) + 50):
        if part.clock.over():
            return
        placed = chosen >= 0
        unit_user[placed] = part.pair_user[chosen[placed]]
        unit_user[~placed] = -1
        per_user = user_violation()
        if per_user.sum() == 0:
            return
        acted = False
        for s in np.argsort(-per_user, kind="stable"):
            if per_user[s] == 0:
                break
            at_s = np.flatnonzero(unit_user == s)
            best: tuple[int, int, str, tuple[int, ...]] | None = None  # (gain, -moves, kind, units and pairs)
            # every move of a unit of s to another user t at once (units × users): the largest gain, then the
            # fewest accounts moved, then the first user and unit
            targets = pair_of[at_s]  # -1 where t is no candidate
            allowed = targets >= 0
            allowed[:, s] = False
            if allowed.any():
                everyone = np.arange(n_users)
                src, to = chosen[at_s], np.maximum(targets, 0)
                gain = np.zeros(targets.shape, dtype=np.int64)
                for i in band_index:
                    v = part.dims[i].values
                    before = viol(i, s, load[i][s]) + viol(i, everyone, load[i])
                    gain += before[None, :] - viol(i, s, load[i][s] - v[src])[:, None] - viol(i, everyone, load[i][None, :] + v[to])
                for i, d in cap_dims:
                    allowed &= load[i][None, :] + d.values[to] <= d.cap[None, :]
                gain = np.where(allowed, gain, -1)
                extra = part.moves[to] - part.moves[src][:, None]
                top = _first_best(gain, extra, by_column=True)
                if top is not None:
                    k, t = top
                    best = (int(gain[k, t]), -int(extra[k, t]), "move", (at_s[k], targets[k, t]))
            for t in range(n_users) if best is None else ():  # swaps only when no single move helps
                if t == s:
                    continue
                base = sum(viol(i, s, load[i][s]) + viol(i, t, load[i][t]) for i in band_index)
                at_t = np.flatnonzero(unit_user == t)
                a_units = at_s[pair_of[at_s, t] >= 0]
                b_units = at_t[pair_of[at_t, s] >= 0]
                if len(a_units) and len(b_units) and len(a_units) * len(b_units) <= 250_000:
                    a_src, a_dst = chosen[a_units], pair_of[a_units, t]
                    b_src, b_dst = chosen[b_units], pair_of[b_units, s]
                    after = 0
                    for i in band_index:
                        v = part.dims[i].values
                        new_s = load[i][s] - v[a_src][:, None] + v[b_dst][None, :]
                        new_t = load[i][t] + v[a_dst][:, None] - v[b_src][None, :]
                        after = after + viol(i, s, new_s) + viol(i, t, new_t)
                    gain = base - after
                    for ci, d in cap_dims:
                        v = d.values
                        ok_t = load[ci][t] + v[a_dst][:, None] - v[b_src][None, :] <= d.cap[t]
                        ok_s = load[ci][s] - v[a_src][:, None] + v[b_dst][None, :] <= d.cap[s]
                        gain = np.where(ok_t & ok_s, gain, -1)
                    extra = (part.moves[a_dst] - part.moves[a_src])[:, None] + (part.moves[b_dst] - part.moves[b_src])[None, :]
                    top = _first_best(gain, extra, by_column=False)
                    if top is not None and (best is None or (gain[top], -extra[top]) > best[:2]):
                        ia, ib = top
                        best = (int(gain[ia, ib]), -int(extra[ia, ib]), "swap", (a_units[ia], a_dst[ia], b_units[ib], b_dst[ib]))
            if best is None:
                continue
            if best[2] == "move":
                k, dst = best[3]
                move(chosen[k], -1)
                move(dst, 1)
                chosen[k] = dst
            else:
                ka, da, kb, db = best[3]
                move(chosen[ka], -1)
                move(chosen[kb], -1)
                move(da, 1)
                move(db, 1)
                chosen[ka], chosen[kb] = da, db
            acted = True
            break
        if not acted:
            return


def _first_best(gain: np.ndarray, extra: np.ndarray, by_column: bool) -> tuple[int, int] | None:
    """The cell of the largest positive gain, then the fewest accounts moved, then the first in row order
    (``by_column``: in column order); None when no gain is positive. Linear, where a sort would not be."""
    top = gain.max(initial=0)
    if top <= 0:
        return None
    tied = gain == top
    fewest = extra[tied].min()
    rows, columns = np.nonzero(tied & (extra == fewest))  # in row order
    i = int(np.argmin(columns * gain.shape[0] + rows)) if by_column else 0
    return int(rows[i]), int(columns[i])


def lp_guided_start(part: Component, name: str) -> np.ndarray | None:
    """A start rounded from the LP relaxation of objective ``name`` (capacities only); records its bound.

    Units go in order of their largest LP value (the integral ones first, which
    always fit together), each to its highest-valued pair that fits, cheapest
    first among equals; units none of whose LP pairs fits then go to their
    cheapest pair that does (on GAP e801600: +1.69 % in one pass, +1.55 % in two).
    """
    target = {"continuity": part.continuity, "affinity": part.cost}[name]
    capacities = [LoadRows(d.values, d.cap, d.cap < NO_CAP, d.fixed) for d in part.dims if isinstance(d, Cap)]
    clock = part.clock
    seconds = clock.left() / 2  # at most half the time left: the phases need the rest
    started = time.monotonic()
    relaxation = relax(part.ptr, part.pair_user, part.user_pairs, target, capacities, clock.budget, seconds)
    if relaxation is None:
        clock.cut |= time.monotonic() - started >= 0.99 * seconds  # stopped on the wall clock, not for want of a solution
        return None
    part.lp_bounds[name] = relaxation.bound
    values = relaxation.values
    load = [c.fixed.copy() for c in capacities]
    chosen = np.full(len(part.units), -1, dtype=np.int64)
    units = np.arange(len(part.units))  # every unit has a pair (the caller checks)
    top = np.maximum.reduceat(values, part.ptr[:-1])
    for in_lp in (True, False):
        for k in units[np.lexsort((units, -top))].tolist():
            lo, hi = part.ptr[k], part.ptr[k + 1]
            if chosen[k] >= 0:
                continue
            # first the LP's pairs by value; then, loads having only grown, by cost alone
            ranked = np.lexsort((target[lo:hi], -values[lo:hi])) if in_lp else np.argsort(target[lo:hi], kind="stable")
            for p in (lo + ranked).tolist():
                if in_lp and values[p] <= 1e-9:
                    break
                c = part.pair_user[p]
                if all(used[c] + cap.values[p] <= cap.cap[c] for used, cap in zip(load, capacities, strict=True)):
                    chosen[k] = p
                    for used, cap in zip(load, capacities, strict=True):
                        used[c] += cap.values[p]
                    break
    return chosen


SPLIT_UNITS = 200  # past this many units the LP split, rounding it is left to CP-SAT on the whole component


def lp_rounded_start(
    part: Component, values: np.ndarray, target: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]]
) -> np.ndarray | None:
    """A plan within capacities and ``bands`` from an LP solution (``values`` per pair) of ``target``.

    A basic solution splits at most one unit per load row, so the units it
    places whole stay where it put them and the split ones (a few dozen at
    most on a component of a thousand units) are placed by a CP-SAT model of
    their own, exactly, at the least ``target``: a plan within a few units'
    cost of the LP's bound in milliseconds. Where integer bands leave the split
    units no room, the units the LP moves are freed as well (another place
    costs them nothing more in accounts moved). None when even then they
    cannot be placed (the phases solve the whole component), or when they are
    too many or time is up.
    """
    whole = values >= 1 - 1e-6
    placed = np.full(len(part.units), -1, dtype=np.int64)
    placed[part.pair_unit[whole]] = np.flatnonzero(whole)
    split = np.flatnonzero(placed < 0)
    if len(split) > SPLIT_UNITS or part.clock.over():
        return None
    if not len(split):
        return placed
    moved = np.flatnonzero((placed >= 0) & (part.moves[np.maximum(placed, 0)] > 0))
    for free in (split, np.union1d(split, moved)):
        if len(free) > SPLIT_UNITS or part.clock.over():
            return None
        chosen = placed.copy()
        chosen[free] = -1
        if _place_exactly(part, chosen, free, target, bands):
            return chosen
    return None


def _place_exactly(
    part: Component, chosen: np.ndarray, free: np.ndarray, target: np.ndarray, bands: dict[int, tuple[np.ndarray, np.ndarray]]
) -> bool:
    """Place the ``free`` units (unplaced in ``chosen``) at the least ``target`` within capacities and
    ``bands`` around the others, by CP-SAT; False when they cannot all be placed so (or time is up)."""
    pairs = np.concatenate([np.arange(part.ptr[k], part.ptr[k + 1]) for k in free.tolist()])
    model, x = placement_model(part, pairs, range(len(part.users)), part.loads(chosen), bands)
    model.minimize(cp_model.LinearExpr.weighted_sum(x, target[pairs].tolist()))
    solver = new_solver(part.seed)
    part.clock.limit(solver, part.clock.budget / 4)
    if solver.solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return False
    for p, var in zip(pairs.tolist(), x, strict=True):
        if solver.boolean_value(var):
            chosen[part.pair_unit[p]] = p
    return True
