"""Request sources for the live runner: a fixed list, or an endless stream at a settable rate."""
from __future__ import annotations

import random
import threading
from collections import deque
from typing import Any, Callable, Iterable, Protocol

from .errors import check_float


class RequestSource(Protocol):
    def due(self, now: float) -> list[Any]:
        """Requests whose arrival_time (seconds since the run started) is <= now."""

    def next_arrival(self) -> float | None:
        """The next arrival time, or None when the source is exhausted."""


class ListSource:
    """A finite workload: objects with request_id, prompt_token_ids, max_tokens, arrival_time."""

    def __init__(self, requests: Iterable[Any]):
        self._queue = deque(sorted(requests, key=lambda r: r.arrival_time))
        self._lock = threading.Lock()

    def due(self, now: float) -> list[Any]:
        out = []
        with self._lock:
            while self._queue and self._queue[0].arrival_time <= now:
                out.append(self._queue.popleft())
        return out

    def next_arrival(self) -> float | None:
        with self._lock:
            return self._queue[0].arrival_time if self._queue else None


class RateSource:
    """Endless Poisson arrivals at `rate` req/s; `make(rng, request_id, arrival_time)` builds each request."""

    def __init__(self, make: Callable[[random.Random, int, float], Any], rate: float, seed: int = 0,
                 limit: int | None = None):
        check_float("request_rate", rate, 0.0, 1e6)
        self.make = make
        self.rate = rate
        self.limit = limit
        self._rng = random.Random(seed)
        self._count = 0
        self._next = self._draw(0.0)
        self._lock = threading.Lock()

    def _draw(self, after: float) -> float | None:
        if self.rate <= 0 or (self.limit is not None and self._count >= self.limit):
            return None
        return after + self._rng.expovariate(self.rate)

    def set_rate(self, rate: float, now: float) -> None:
        check_float("request_rate", rate, 0.0, 1e6)
        with self._lock:
            self.rate = rate
            self._next = self._draw(now)

    def due(self, now: float) -> list[Any]:
        out = []
        with self._lock:
            while self._next is not None and self._next <= now:
                out.append(self.make(self._rng, self._count, self._next))
                self._count += 1
                self._next = self._draw(self._next)
        return out

    def next_arrival(self) -> float | None:
        with self._lock:
            return self._next
