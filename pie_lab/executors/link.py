"""An emulated host link: a worker thread that performs copies in FIFO order, paced to a bandwidth.

Each job's copy really happens (bytes move between tensors); the worker then sleeps until
latency + bytes / bandwidth has passed since the job started, so overlap and stalls behave as on
a real link. Timestamps are time.perf_counter() seconds. A wait never hangs: a copy thread that
died, or a copy that does not land within its bound, raises EngineError.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import EngineError

WAIT_BOUND_S = 60.0          # beyond its paced duration, how long a wait may last before it is an error


@dataclass
class CopyJob:
    run: Callable[[], None]
    nbytes: int
    issued: float = field(default_factory=time.perf_counter)
    start: float = float("nan")
    end: float = float("nan")
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    link: "EmulatedLink | None" = None
    worker: threading.Thread | None = None        # the thread whose queue holds this job

    def wait(self) -> float:
        """Block until the copy landed; returns seconds waited. EngineError if it never will."""
        t = time.perf_counter()
        bound = t + WAIT_BOUND_S + (self.link.duration(self.nbytes) if self.link else 0.0)
        while not self.done.wait(0.05):
            name = self.link.name if self.link else "link"
            if self.worker is not None and not self.worker.is_alive():
                raise EngineError(f"the emulated {name} copy thread died; a copy of {self.nbytes} bytes "
                                  "never landed")
            if time.perf_counter() > bound:
                raise EngineError(f"a copy of {self.nbytes} bytes on the emulated {name} link did not land "
                                  f"within {bound - t:.0f} s")
        if self.error is not None:
            raise EngineError(f"emulated link copy failed: {type(self.error).__name__}: {self.error}") \
                from self.error
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

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, run: Callable[[], None], nbytes: int) -> CopyJob:
        if not self.alive:
            self._restart()
        job = CopyJob(run, nbytes, link=self, worker=self._thread)
        self._jobs.put(job)
        return job

    def _restart(self) -> None:
        """A fresh queue and worker; jobs left to a dead worker never run."""
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, args=(self._jobs,), name=f"pie-link-{self.name}",
                                        daemon=True)
        self._thread.start()

    def quiesce(self) -> None:
        """After a failed step: return once no copy of that step can still be writing."""
        if self.alive:
            self.submit(lambda: None, 0).wait()

    def _work(self, jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
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
