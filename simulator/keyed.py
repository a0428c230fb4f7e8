"""Random numbers keyed by who they belong to, not by where they fall in a batch.

A value is a hash of (seed, stage, tag, owner, rank of the row among the owner's rows), so a
person's draws are the same whichever other people are simulated in the same chunk: the
output of a seed does not depend on the chunk size. The hash is splitmix64's finaliser,
vectorised over numpy uint64 arrays (counter-based, like Philox, but keyed per row).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from scipy.special import ndtri

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53
# Above this mean the Poisson inverse-CDF walk is long; a normal approximation is used there.
_POISSON_WALK_MAX = 40.0


def _mix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


@lru_cache(maxsize=4096)
def _tag(*parts: str | int) -> np.uint64:
    text = "/".join(str(p) for p in parts).encode()
    return np.uint64(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little"))


def rank_within(owner: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows have the same owner (0 for the first)."""
    n = len(owner)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if np.all(owner[1:] >= owner[:-1]):  # grouped already: the common case, no sort needed
        order = np.arange(n)
        sorted_owner = owner
    else:
        order = np.argsort(owner, kind="stable")
        sorted_owner = owner[order]
    starts = np.r_[True, sorted_owner[1:] != sorted_owner[:-1]]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    return rank


class Draws:
    """Draws for rows owned by people (or devices): row i gets values keyed on
    (owner[i], its rank among that owner's rows) and the tag of the draw.

    With `by_owner=True` the rank is left out: every row of an owner gets the same value
    (a trait of the person, read wherever the person appears)."""

    def __init__(self, seed: int, stage: str, owner: np.ndarray, *, by_owner: bool = False,
                 rank: np.ndarray | None = None) -> None:
        owner = np.asarray(owner, dtype=np.int64)
        self.n = len(owner)
        self.seed, self.stage = seed, stage
        key = _mix(owner.astype(np.uint64) * _GOLDEN ^ _tag(seed, stage))
        if not by_owner:
            r = rank_within(owner) if rank is None else np.asarray(rank, dtype=np.int64)
            key = _mix(key + r.astype(np.uint64) * _GOLDEN)
        self._key = key

    def bits(self, tag: str) -> np.ndarray:
        return _mix(self._key ^ _tag(self.seed, self.stage, tag))

    def random(self, tag: str) -> np.ndarray:
        """Uniform in [0, 1)."""
        return (self.bits(tag) >> np.uint64(11)).astype(np.float64) * _TO_UNIT

    def _open_unit(self, tag: str) -> np.ndarray:
        """Uniform in (0, 1): safe for inverse CDFs."""
        return ((self.bits(tag) >> np.uint64(11)).astype(np.float64) + 0.5) * _TO_UNIT

    def uniform(self, tag: str, low: float, high: float) -> np.ndarray:
        return low + (high - low) * self.random(tag)

    def integers(self, tag: str, low: int, high: np.ndarray | int) -> np.ndarray:
        """Integers in [low, high); `high` may differ per row."""
        span = np.asarray(high, dtype=np.int64) - low
        return low + (self.random(tag) * span).astype(np.int64)

    def choice(self, tag: str, n: int, p: np.ndarray | list[float] | None = None) -> np.ndarray:
        if p is None:
            return self.integers(tag, 0, n)
        cum = np.cumsum(np.asarray(p, dtype=np.float64))
        cum /= cum[-1]
        return np.minimum(np.searchsorted(cum, self.random(tag), side="right"), n - 1)

    def normal(self, tag: str, loc: float | np.ndarray = 0.0,
               scale: float | np.ndarray = 1.0) -> np.ndarray:
        return loc + scale * ndtri(self._open_unit(tag))

    def lognormal(self, tag: str, mean: float, sigma: float) -> np.ndarray:
        return np.exp(self.normal(tag, mean, sigma))

    def exponential(self, tag: str, scale: float) -> np.ndarray:
        return -scale * np.log(self._open_unit(tag))

    def poisson(self, tag: str, lam: float | np.ndarray) -> np.ndarray:
        """Inverse-CDF Poisson: the smallest k whose CDF reaches the row's uniform."""
        u = self._open_unit(tag)
        lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), u.shape)
        k = np.zeros(self.n, dtype=np.int64)
        big = lam > _POISSON_WALK_MAX
        if big.any():
            z = ndtri(u[big])
            k[big] = np.maximum(0, np.floor(lam[big] + np.sqrt(lam[big]) * z + 0.5))
        idx = np.flatnonzero(~big)
        lam_s, u_s = lam[idx], u[idx]
        p = np.exp(-lam_s)
        cdf = p.copy()
        active = np.flatnonzero(u_s > cdf)
        step = 0
        while len(active):
            step += 1
            p_a = p[active] * lam_s[active] / step
            p[active] = p_a
            cdf[active] += p_a
            k[idx[active]] = step
            active = active[u_s[active] > cdf[active]]
        return k
