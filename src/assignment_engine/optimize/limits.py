"""A user's limits inside a component, in integers: a capacity (hard) or a balance band.

CP-SAT takes integers only. Each load dimension of a component becomes one
per-pair integer load and, per local user, a fixed load and either a cap or a
band. The conversions keep the rounding on the safe side: an integer plan
inside a cap or band is a real plan inside it, and an exact fit stays a fit.
Every step of the method (start, phases, neighbourhood search) reads these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RESOLUTION = 1_000_000  # integer units per mean fair share
NO_CAP = np.iinfo(np.int64).max // 4


@dataclass
class Dim:
    """A load dimension inside a component, as integers per candidate pair: a capacity or a band."""

    values: np.ndarray  # int64 per pair
    fixed: np.ndarray  # int64 per local user


@dataclass
class Cap(Dim):
    cap: np.ndarray  # capacity, per local user (NO_CAP = none)


@dataclass
class Band(Dim):
    lo: np.ndarray  # band, per local user
    hi: np.ndarray
    mean_fair: float  # integer units in the mean fair share
    weight: int = 1  # objective weight of one unit of band slack


def capacity_dim(values: np.ndarray, fixed: np.ndarray, caps: np.ndarray) -> Cap:
    """A capacity in integers: exact for whole numbers with small totals, else scaled to a million units per
    largest capacity, rounding only within 1e-9 of a value (an exact fit stays a fit).

    Loads above every capacity are clipped just above it: they cannot fit either way, and the model's sums
    stay far from CP-SAT's integer range (a thousand accounts of 10^15 each would overflow it).
    """
    finite = np.isfinite(caps)
    top = float(caps[finite].max())
    whole = bool(np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0))
    if whole and float(values.sum()) + float(fixed.sum()) + top < 2**50:
        cap = np.where(finite, np.nan_to_num(caps, posinf=0), NO_CAP).astype(np.int64)
        return Cap(values.astype(np.int64), fixed.astype(np.int64), cap)
    scale = 1e6 / max(top, 1e-9)
    cap = np.where(finite, np.floor(np.nan_to_num(caps, posinf=0) * scale * (1 + 1e-9)), NO_CAP).astype(np.int64)
    above = int(cap[finite].max()) + 1

    def load(x: np.ndarray) -> np.ndarray:
        return np.minimum(np.ceil(x * scale * (1 - 1e-9)), above).astype(np.int64)

    return Cap(load(values), load(fixed), cap)


def band_dim(
    values: np.ndarray, fixed: np.ndarray, share: np.ndarray, tolerance: float, total: float, n_users: int, pair_user: np.ndarray
) -> Band:
    """A balance band in integers: exact for whole numbers, else scaled with the rounding error kept inside.

    Whole-number values (counts, amounts in whole currency units) are used as
    they are, so a load exactly on the edge of the band is inside it. Other
    values are scaled to RESOLUTION units per mean fair share and the band is
    shrunk by each user's worst rounding error, so an integer load inside the
    band is a real load inside the tolerance.
    """
    if np.all(np.mod(values, 1) == 0) and np.all(np.mod(fixed, 1) == 0) and total < 2**50:
        eps = 1e-9 * share
        lo = np.ceil(share * (1 - tolerance) - eps)
        hi = np.floor(share * (1 + tolerance) + eps)
        return Band(values.astype(np.int64), fixed.astype(np.int64), lo.astype(np.int64), hi.astype(np.int64), mean_fair=total / n_users)
    scale = RESOLUTION * n_users / total
    err = 0.5 * (np.bincount(pair_user, minlength=n_users) + 1)
    lo = np.ceil(share * (1 - tolerance) * scale + err)
    hi = np.floor(share * (1 + tolerance) * scale - err)
    return Band(
        np.round(values * scale).astype(np.int64),
        np.round(fixed * scale).astype(np.int64),
        lo.astype(np.int64),
        hi.astype(np.int64),
        mean_fair=float(RESOLUTION),
    )
