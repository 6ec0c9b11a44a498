"""Errors raised by pie_lab, and the range checks that produce them."""
from __future__ import annotations

from typing import Any, Iterable


class PieLabError(Exception):
    """Base class for pie_lab errors."""


class ConfigError(PieLabError, ValueError):
    """A setting is out of range or of the wrong type; the message names it and the allowed values."""


class EngineError(PieLabError, RuntimeError):
    """The engine could not do what was asked (for example, a request that can never fit)."""


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer{_range(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value} is out of range: allowed{_range(lo, hi)}")
    return value


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number{_range(lo, hi, lo_open)}, got {value!r}")
    value = float(value)
    if value != value:
        raise ConfigError(f"{name} must be a number{_range(lo, hi, lo_open)}, got NaN")
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    if too_low or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value} is out of range: allowed{_range(lo, hi, lo_open)}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(map(repr, choices))}")
    return value


def check_fits(name: str, value: Any, needed: int, available: int | None, memory: str, allowed: str = "") -> None:
    """Before an allocation: `needed` bytes for knob `name` must fit the `available` bytes of `memory`."""
    if available is not None and needed > available:
        raise ConfigError(f"{name}={value} needs {_bytes(needed)} of {memory} but {_bytes(max(0, available))} "
                          f"are available{'; allowed: ' + allowed if allowed else ''}")


def _bytes(n: float) -> str:
    return f"{n / 2**30:.3g} GiB ({int(n)} bytes)" if n >= 2**30 else f"{n / 2**20:.3g} MiB ({int(n)} bytes)"


def _range(lo, hi, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
