"""An emulated host link: a worker thread that performs copies in FIFO order, paced to a bandwidth.

Each job's copy really happens (bytes move between tensors); the worker then sleeps until
latency + bytes / bandwidth has passed since the job started, so overlap and stalls behave as on
a real link. Timestamps are time.perf_counter() seconds.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class CopyJob:
    run: Callable[[], None]
    nbytes: int
    issued: float = field(default_factory=time.perf_counter)
    start: float = float("nan")
    end: float = float("nan")
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self) -> float:
        """Block until the copy landed; returns seconds waited."""
        t = time.perf_counter()
        self.done.wait()
        if self.error is not None:
            raise RuntimeError("emulated link copy failed") from self.error
        return time.perf_counter() - t


class EmulatedLink:
    def __init__(self, bandwidth_gbps: float, latency_us: float, name: str = "h2d"):
        self.bandwidth = bandwidth_gbps * 1e9
        self.latency = latency_us * 1e-6
        self.name = name
        self._jobs: queue.SimpleQueue[CopyJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def set(self, bandwidth_gbps: float, latency_us: float) -> None:
        self.bandwidth, self.latency = bandwidth_gbps * 1e9, latency_us * 1e-6

    def duration(self, nbytes: int) -> float:
        return self.latency + nbytes / self.bandwidth

    def submit(self, run: Callable[[], None], nbytes: int) -> CopyJob:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=f"pie-link-{self.name}", daemon=True)
            self._thread.start()
        job = CopyJob(run, nbytes)
        self._jobs.put(job)
        return job

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job.start = time.perf_counter()
            try:
                job.run()
            except BaseException as exc:  # reported to the waiter
                job.error = exc
            sleep_until(job.start + self.duration(job.nbytes))
            job.end = time.perf_counter()
            job.done.set()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None


def sleep_until(t: float) -> None:
    """Sleep to perf_counter time t; the last fraction of a millisecond spins for precision."""
    while True:
        delay = t - time.perf_counter()
        if delay <= 0:
            return
        time.sleep(delay if delay > 2e-4 else 0)
