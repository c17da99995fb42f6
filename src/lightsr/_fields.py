"""Field checks of typed settings: ranges that the YAML config reader (:mod:`lightsr.train.config`) applies to a
dataclass field, attached as ``dataclasses.field(metadata=...)``.

Neutral ground for every module that defines settings read from a config (the trainer's schema, the degradations'
settings), so that neither imports the other for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    ok: Callable[[Any], bool]
    desc: str  # what the key expects, as the error message says it ("a positive int")


def meta(ok: Callable[[Any], bool], desc: str) -> dict[str, Check]:
    """Field metadata carrying a range check (the dict is what ``dataclasses.field(metadata=...)`` takes)."""
    return {"check": Check(ok, desc)}


POSITIVE_INT = meta(lambda v: v > 0, "a positive int")
NON_NEGATIVE_INT = meta(lambda v: v >= 0, "a non-negative int")
POSITIVE_FLOAT = meta(lambda v: v > 0 and math.isfinite(v), "a positive float")
NON_NEGATIVE_FLOAT = meta(lambda v: v >= 0 and math.isfinite(v), "a non-negative float")
UNIT_HALF_OPEN = meta(lambda v: 0 <= v < 1, "a float in [0, 1)")
UNIT_INTERVAL = meta(lambda v: 0 < v <= 1, "a float in (0, 1]")
UNIT_PROB = meta(lambda v: 0 <= v <= 1, "a probability in [0, 1]")
NON_EMPTY_STR = meta(lambda v: bool(v.strip()), "a non-empty string")


def pair(lo: float, hi: float, what: str = "floats") -> dict[str, Check]:
    """A ``[low, high]`` range inside ``[lo, hi]``."""
    return meta(lambda v: lo <= v[0] <= v[1] <= hi, f"a pair [low, high] of {what} with {lo:g} ≤ low ≤ high ≤ {hi:g}")


def probs(n: int) -> dict[str, Check]:
    """``n`` probabilities (normalised by their user)."""
    return meta(lambda v: all(0 <= p <= 1 for p in v) and sum(v) > 0,
                f"{n} probabilities in [0, 1], not all 0 (they are normalised)")
