"""Vectorised random identifiers: UUIDs and hex tokens from a seeded generator, no Python loop."""

from __future__ import annotations

import binascii

import numpy as np
import polars as pl

_UUID_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])


def uuids(rng: np.random.Generator, n: int) -> pl.Series:
    """n random version-4 UUID strings (deterministic for the generator's state)."""
    b = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    hx = np.frombuffer(binascii.hexlify(b.tobytes()), dtype=np.uint8).reshape(n, 32)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_POS] = hx
    return pl.Series(out.view("S36").ravel()).cast(pl.String)


def hex_tokens(rng: np.random.Generator, n: int, nbytes: int) -> pl.Series:
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    hx = np.frombuffer(binascii.hexlify(b.tobytes()), dtype=np.uint8).reshape(n, 2 * nbytes)
    return pl.Series(np.ascontiguousarray(hx).view(f"S{2 * nbytes}").ravel()).cast(pl.String)


def pick(values: list[str] | tuple[str, ...], idx: np.ndarray) -> pl.Series:
    """values[idx] as a string Series, without building a numpy unicode array."""
    return pl.Series(list(values), dtype=pl.String).gather(np.asarray(idx, dtype=np.int64))


def _hex_of(b: np.ndarray) -> np.ndarray:
    n, width = b.shape
    return np.frombuffer(binascii.hexlify(np.ascontiguousarray(b).tobytes()),
                         dtype=np.uint8).reshape(n, 2 * width)


def uuids_from_bits(hi: np.ndarray, lo: np.ndarray) -> pl.Series:
    """Version-4 UUID strings from two 64-bit words per row (keyed draws, see keyed.py)."""
    n = len(hi)
    b = np.empty((n, 16), dtype=np.uint8)
    b[:, :8] = hi.astype(">u8").view(np.uint8).reshape(n, 8)
    b[:, 8:] = lo.astype(">u8").view(np.uint8).reshape(n, 8)
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_POS] = _hex_of(b)
    return pl.Series(out.view("S36").ravel()).cast(pl.String)


def hex_from_bits(bits: np.ndarray, nbytes: int) -> pl.Series:
    """Lower-case hex of the first `nbytes` (at most 8) bytes of each 64-bit word."""
    n = len(bits)
    b = bits.astype(">u8").view(np.uint8).reshape(n, 8)[:, :nbytes]
    return pl.Series(np.ascontiguousarray(_hex_of(b)).view(f"S{2 * nbytes}").ravel()).cast(
        pl.String)
