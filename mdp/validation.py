"""Argument checks shared by every public entry point.

Each check raises ``ValueError`` naming the argument, the value it received and
the valid range, so that bad input fails before any computation starts.
"""

from __future__ import annotations

import math
import numbers


def check_real(name: str, value, *, low=None, high=None,
               low_open: bool = False, high_open: bool = False) -> float:
    """Return ``value`` as a finite float inside the given bounds, or raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be in {_describe_range(low, high, low_open, high_open)}, got {value!r}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be in {_describe_range(low, high, low_open, high_open)}, got {value!r}")
    return value


def check_integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int inside ``[low, high]``, or raise ``ValueError``.

    Floats with an integral value (``20.0``) are accepted; ``20.5``, booleans and
    strings are not.
    """
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        value = int(value)
    elif isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        value = int(value)
    else:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        upper = "infinity" if high is None else str(high)
        raise ValueError(f"{name} must be an integer in [{low}, {upper}], got {value!r}")
    return value


def check_choice(name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices``, or raise ``ValueError``."""
    if value not in choices:
        allowed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _describe_range(low, high, low_open, high_open) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    low_text = "-infinity" if low is None else f"{low:g}"
    high_text = "infinity" if high is None else f"{high:g}"
    return f"{left}{low_text}, {high_text}{right}"
