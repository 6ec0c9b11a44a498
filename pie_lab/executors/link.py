"""An emulated host link: copies in FIFO order, paced to a bandwidth.

Each job's copy really happens (bytes move between tensors) and lands latency + bytes / bandwidth
after it starts (once the link is free), so overlap and stalls behave as on a real link. A copy of
up to `inline_bytes` runs on the caller's thread when it is issued and lands, on the link's
timeline, at that paced end (a wait sleeps until then): handing it to the copy thread would cost
the host more than the copy (25-130 us of wake-up and GIL hand-off on a loaded 2-core machine,
against ~30 us to copy 1 MiB). Larger copies go to a worker thread that copies, then sleeps out the
paced duration. Timestamps are time.perf_counter() seconds. `EmulatedStreams` puts two links (h2d, d2h)
behind the streaming loop's `Streams` operations. A wait never hangs: a copy thread that
died, or a copy that does not land within its bound, raises EngineError. The emulation is not
free: the copies' CPU time (on the cores and memory bandwidth compute uses; for the worker also the
spin that ends each paced wait) adds up in `cpu_seconds`; a real link's DMA costs the host none.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import EngineError

WAIT_BOUND_S = 60.0          # beyond its paced duration, how long a wait may last before it is an error
INLINE_BYTES = 1 << 20       # copies up to this size run on the caller's thread


@dataclass
class CopyJob:
    run: Callable[[], None]
    nbytes: int
    issued: float = field(default_factory=time.perf_counter)
    start: float = float("nan")
    end: float = float("nan")
    cpu: float = 0.0                    # CPU seconds the link thread spent on it (copy and pacing)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    link: "EmulatedLink | None" = None
    worker: threading.Thread | None = None        # the thread whose queue holds this job
    not_before: float = float("-inf")             # the link is busy with earlier (inline) copies until then

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
            raise _failed(self.error) from self.error
        return time.perf_counter() - t


class PacedCopy:
    """A copy done on the issuing thread; on the link's timeline it runs from `start` to `end`."""
    __slots__ = ("issued", "start", "end", "nbytes", "cpu", "error")

    def __init__(self, issued: float, nbytes: int):
        self.issued, self.nbytes, self.error = issued, nbytes, None

    def wait(self) -> float:
        """Sleep until the copy landed; returns seconds waited."""
        if self.error is not None:
            raise _failed(self.error) from self.error
        t = time.perf_counter()
        sleep_until(self.end)
        return time.perf_counter() - t


class EmulatedLink:
    def __init__(self, bandwidth_gbps: float, latency_us: float, name: str = "h2d",
                 inline_bytes: int = INLINE_BYTES):
        self.bandwidth = bandwidth_gbps * 1e9
        self.latency = latency_us * 1e-6
        self.name = name
        self.inline_bytes = inline_bytes
        self._jobs: queue.SimpleQueue[CopyJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: CopyJob | None = None      # the latest job given to the worker
        self._free_at = float("-inf")         # when the latest inline copy lands
        self._worker_cpu = 0.0                # written by the worker only
        self._inline_cpu = 0.0                # written by the issuing thread only

    def set(self, bandwidth_gbps: float, latency_us: float) -> None:
        self.bandwidth, self.latency = bandwidth_gbps * 1e9, latency_us * 1e-6

    def duration(self, nbytes: int) -> float:
        return self.latency + nbytes / self.bandwidth

    @property
    def cpu_seconds(self) -> float:
        """Host CPU time the copies cost so far: the worker's (copies and pacing) and the inline copies'."""
        return self._worker_cpu + self._inline_cpu

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, run: Callable[[], None], nbytes: int) -> CopyJob | PacedCopy:
        last = self._last
        if nbytes <= self.inline_bytes and (last is None or last.done.is_set()):
            return self._inline(run, nbytes, float("-inf") if last is None else last.end)
        return self._enqueue(run, nbytes)

    def _inline(self, run: Callable[[], None], nbytes: int, worker_free: float) -> PacedCopy:
        """Copy now, in the caller's torch mode; the copy's time on this thread is its CPU cost."""
        job = PacedCopy(time.perf_counter(), nbytes)
        job.start = max(job.issued, self._free_at, worker_free)
        try:
            run()
        except Exception as exc:  # reported to the waiter, as the worker does
            job.error = exc
        done = time.perf_counter()
        job.end = self._free_at = max(job.start + self.duration(nbytes), done)
        job.cpu = done - job.issued
        self._inline_cpu += job.cpu
        return job

    def _enqueue(self, run: Callable[[], None], nbytes: int) -> CopyJob:
        if not self.alive:
            self._restart()
        job = CopyJob(run, nbytes, link=self, worker=self._thread, not_before=self._free_at)
        self._last = job
        self._jobs.put(job)
        return job

    def _restart(self) -> None:
        """A fresh queue and worker; jobs left to a dead worker never run."""
        self._jobs, self._last = queue.SimpleQueue(), None
        self._thread = threading.Thread(target=self._work, args=(self._jobs,), name=f"pie-link-{self.name}",
                                        daemon=True)
        self._thread.start()

    def quiesce(self) -> None:
        """After a failed step: return once no copy of that step can still be writing."""
        last = self._last
        if self.alive and last is not None and not last.done.is_set():      # inline copies are done already
            self._enqueue(lambda: None, 0).wait()

    @torch.inference_mode()           # tensors made under inference mode may only be written under it
    def _work(self, jobs: queue.SimpleQueue) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            sleep_until(job.not_before)
            cpu = time.thread_time()
            job.start = time.perf_counter()
            try:
                job.run()
            except BaseException as exc:  # reported to the waiter
                job.error = exc
            sleep_until(job.start + self.duration(job.nbytes))
            job.end = time.perf_counter()
            job.cpu = time.thread_time() - cpu
            self._worker_cpu += job.cpu
            job.done.set()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None


class EmulatedStreams:
    """The streaming loop's `Streams` on the CPU: compute is the calling thread (marks are
    perf_counter times), copies run on two emulated links, h2d and d2h, paced to one bandwidth."""
    emulated = True

    def __init__(self, bandwidth_gbps: float, latency_us: float, inline_bytes: int = INLINE_BYTES):
        self.h2d = EmulatedLink(bandwidth_gbps, latency_us, "h2d", inline_bytes)
        self.d2h = EmulatedLink(bandwidth_gbps, latency_us, "d2h", inline_bytes)

    def set(self, bandwidth_gbps: float, latency_us: float) -> None:
        self.h2d.set(bandwidth_gbps, latency_us)
        self.d2h.set(bandwidth_gbps, latency_us)

    @property
    def cpu_seconds(self) -> float:
        """CPU time both links' copy threads spent so far."""
        return self.h2d.cpu_seconds + self.d2h.cpu_seconds

    def mark(self) -> float:
        return time.perf_counter()

    def seconds(self, a: float, b: float) -> float:
        return b - a

    def blocking(self, run: Callable[[], int]) -> int:
        start = time.perf_counter()
        nbytes = run()
        sleep_until(start + self.h2d.duration(nbytes))
        return nbytes

    def offload(self, run: Callable[[], object], nbytes: int) -> CopyJob | PacedCopy:
        return self.d2h.submit(run, nbytes)

    def fence(self) -> None:
        """Compute ran to completion on this thread: nothing to order."""

    def stage(self, run: Callable[[], object], nbytes: int, after: float | None) -> CopyJob | PacedCopy:
        # `after` has passed: compute runs on this thread, so the slot's reader is done
        return self.h2d.submit(run, nbytes)

    def wait(self, copies) -> None:
        for job in copies:
            job.wait()

    def drain(self) -> None:
        self.h2d.quiesce()

    def settle(self, handle) -> None:
        if isinstance(handle, (CopyJob, PacedCopy)):
            handle.wait()

    def recover(self) -> None:
        for link in (self.h2d, self.d2h):
            try:
                link.quiesce()
            except Exception:       # a dead worker: its jobs never run, a new one starts on demand
                pass

    def close(self) -> None:
        self.h2d.close()
        self.d2h.close()


def _failed(error: BaseException) -> EngineError:
    return EngineError(f"emulated link copy failed: {type(error).__name__}: {error}")


def sleep_until(t: float) -> None:
    """Sleep to perf_counter time t; the last fraction of a millisecond spins for precision."""
    while True:
        delay = t - time.perf_counter()
        if delay <= 0:
            return
        time.sleep(delay if delay > 2e-4 else 0)
