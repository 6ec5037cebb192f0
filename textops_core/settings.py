"""Numbers read from the environment, each refused with a message naming the variable."""

from __future__ import annotations

import os


def env_int(name: str, default: int, minimum: int = 1) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def _env_float(name: str, default: float, valid, requirement: str) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not valid(number):
        raise ValueError(f"{name} must be {requirement}, got {value!r}")
    return number


def env_positive_float(name: str, default: float) -> float:
    return _env_float(name, default, lambda n: n > 0, "a positive number")


def env_fraction(name: str, default: float) -> float:
    return _env_float(name, default, lambda n: 0 <= n <= 1, "a number from 0 to 1")


def env_switch(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in {"1", "on", "true", "yes"}:
        return True
    if value in {"0", "off", "false", "no"}:
        return False
    raise ValueError(f"{name} must be on or off, got {value!r}")


def env_seconds(name: str, default: float) -> float:
    """A duration: a finite positive number of seconds (an infinite one would never end)."""
    return _env_float(name, default, lambda n: 0 < n < float("inf"), "a finite positive number")


def env_wait_seconds(name: str, default: float) -> float:
    """How long to wait: a finite number of seconds of at least 0 (0: try once, never wait)."""
    return _env_float(
        name,
        default,
        lambda n: 0 <= n < float("inf"),
        "a finite number of seconds of at least 0 (0: try once)",
    )
