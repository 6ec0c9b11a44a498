"""A stand-in for the few torch.cuda calls `CudaStreams` makes, so the cuda executor's own code runs
on the CPU: streams, events with timing, waits, synchronisation.

Work runs eagerly on the host; what the stand-in models is *when* each stream would run it. Every
stream keeps a virtual time: the host work done while a stream is current (inside
`stream(s)`, or on the compute stream otherwise) is an operation on it, starting once the stream
is free and the host has issued it, lasting the host time it took times the stream's `rate`.
`wait_event` / `wait_stream` hold a stream until an event's time; events take the time of the
stream's work before them; `synchronize` brings the host's clock up to a stream or event. So the
timings the executor reads follow from the order of its records and waits: a missing wait shows
as a copy that lands after the layer reading it started, or one that starts before its slot's
reader finished. `elapsed_time` of an event the host has not waited past raises, as on a GPU.
"""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager


class FakeStream:
    def __init__(self, cuda: "FakeCuda", name: str, rate: float):
        self.cuda, self.name, self.rate = cuda, name, rate
        self.t = 0.0

    def wait_event(self, event: "FakeEvent") -> None:
        self.cuda._tick()
        assert event.t is not None, "wait on an event never recorded"
        self.t = max(self.t, event.t)
        self.cuda.log.append(("wait_event", self.name, event.id))

    def wait_stream(self, other: "FakeStream") -> None:
        self.cuda._tick()
        self.t = max(self.t, other.t)
        self.cuda.log.append(("wait_stream", self.name, other.name))

    def synchronize(self) -> None:
        self.cuda._tick()
        self.cuda._host_reaches(self.t)


class FakeEvent:
    def __init__(self, cuda: "FakeCuda", enable_timing: bool):
        self.cuda, self.enable_timing = cuda, enable_timing
        self.id = next(cuda._ids)
        self.t: float | None = None

    def record(self, stream: FakeStream) -> None:
        self.cuda._tick()
        self.t = stream.t
        self.cuda.log.append(("record", stream.name, self.id))

    def synchronize(self) -> None:
        self.cuda._tick()
        self.cuda._host_reaches(self.t)

    def elapsed_time(self, end: "FakeEvent") -> float:
        """Milliseconds from this event to `end`, both recorded with timing and both done."""
        assert self.enable_timing and end.enable_timing, "elapsed_time needs enable_timing=True"
        host = self.cuda.host_time()
        for ev in (self, end):
            assert ev.t is not None and ev.t <= host + 1e-12, f"event {ev.id} read before it completed"
        return (end.t - self.t) * 1e3


class FakeCuda:
    def __init__(self, compute_rate: float = 1.0, copy_rate: float = 1.0):
        self.log: list[tuple] = []
        self._ids = itertools.count()
        self._origin = time.perf_counter()
        self._ahead = 0.0                 # the host's clock = wall time + what synchronising added
        self.compute = FakeStream(self, "compute", compute_rate)
        self.copy_rate = copy_rate
        self.streams = [self.compute]
        self.current = self.compute
        self._last = self.host_time()
        self.total_bytes = 80 * 2**30        # what mem_get_info reports: an 80 GiB card
        self.free_bytes = 64 * 2**30

    def host_time(self) -> float:
        return time.perf_counter() - self._origin + self._ahead

    def _host_reaches(self, t: float) -> None:
        self._ahead += max(0.0, t - self.host_time())
        self._last = self.host_time()

    def _tick(self) -> None:
        """The host work since the last call was one operation on the current stream."""
        now = self.host_time()
        s = self.current
        s.t = max(s.t, self._last) + (now - self._last) * s.rate
        self._last = now

    # -- the torch.cuda calls the cuda executor makes ----------------------------------------------
    def current_stream(self, device=None) -> FakeStream:
        return self.compute

    def Stream(self, device=None) -> FakeStream:          # noqa: N802 - torch.cuda's name
        s = FakeStream(self, f"copy{len(self.streams)}", self.copy_rate)
        self.streams.append(s)
        return s

    def Event(self, enable_timing: bool = False) -> FakeEvent:   # noqa: N802 - torch.cuda's name
        return FakeEvent(self, enable_timing)

    @contextmanager
    def stream(self, s: FakeStream):
        self._tick()
        prev, self.current = self.current, s
        try:
            yield
        finally:
            self._tick()
            self.current = prev

    def mem_get_info(self, device=None) -> tuple[int, int]:
        return self.free_bytes, self.total_bytes

    def get_device_name(self, device=None) -> str:
        return "stand-in GPU"

    def synchronize(self, device=None) -> None:
        self._tick()
        self._host_reaches(max(s.t for s in self.streams))
