"""A Bloom filter of IMEI keys, over rbloom.

Keys are the 14-digit IMEI key as a Python int, hashed with ``operator.index``
(the int is its own hash, and rbloom mixes it). The builtin ``hash`` would also
work in one process, but rbloom refuses to save such a filter because str/bytes
hashes are salted per process; an integer identity hash gives the same bits in
every process, so a filter built by an import job can be saved and loaded.

Measured with sequential, TAC-clustered and random IMEIs, the observed false
positive rate matches the requested one, so no extra mixing is needed.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Iterable

from rbloom import Bloom

__all__ = [
    "DEFAULT_FP_RATE",
    "MIN_EXPECTED_ITEMS",
    "Bloom",
    "bloom_bytes",
    "imei_key",
    "load_bloom",
    "new_bloom",
    "save_bloom",
]

DEFAULT_FP_RATE = 0.001
# rbloom rejects expected_items=0; a small floor keeps an empty list usable and
# costs a few hundred bytes.
MIN_EXPECTED_ITEMS = 256


def imei_key(imei14: str) -> int:
    """The Bloom key of a 14-digit IMEI key (which must already be normalised)."""
    return int(imei14)


def new_bloom(expected_items: int, fp_rate: float = DEFAULT_FP_RATE, keys: Iterable[int] = ()) -> Bloom:
    """A filter sized for ``expected_items`` at ``fp_rate``, filled with ``keys``."""
    if not 0.0 < fp_rate < 1.0:
        raise ValueError(f"false-positive rate must be in (0, 1), got {fp_rate}")
    bloom = Bloom(max(expected_items, MIN_EXPECTED_ITEMS), fp_rate, hash_func=operator.index)
    bloom.update(keys)
    return bloom


def save_bloom(bloom: Bloom, path: str | os.PathLike[str]) -> None:
    """Write the filter to ``path`` (rbloom's own format)."""
    bloom.save(path)


def load_bloom(path: str | os.PathLike[str]) -> Bloom:
    """Read a filter written by :func:`save_bloom`."""
    return Bloom.load(path, operator.index)


def bloom_bytes(bloom: Bloom) -> int:
    """Approximate memory held by the filter's bit array."""
    return int(bloom.size_in_bits) // 8
