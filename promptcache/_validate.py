"""Validation helpers: enums checked at the boundary, numbers checked with their names."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TypeVar

from promptcache.exceptions import ConfigError

__all__ = ["parse_enum", "positive", "ttl_seconds"]

E = TypeVar("E", bound=StrEnum)


def parse_enum(enum: type[E], value: E | str, what: str) -> E:
    """Return ``value`` as a member of ``enum``, or raise ConfigError listing the valid values."""
    if isinstance(value, enum):
        return value
    try:
        return enum(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum)
        raise ConfigError(f"{what} must be one of {valid}, got {value!r}") from None


def positive(value: float, what: str, *, allow_zero: bool = False) -> float:
    """Return ``value`` if it is a positive number (or zero when allowed), else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # noqa: PLR0124
        raise ConfigError(f"{what} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{what} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value


def ttl_seconds(ttl: object) -> float:
    """``ttl`` as float seconds if it is a positive finite number, else ValueError naming it."""
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)
