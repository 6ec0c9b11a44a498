"""Live control: run an engine on a background thread, fed by a request source, steered by `set()`.

Knob values are validated in the caller's thread (a clear error at once) and applied by the
engine between iterations, each change recorded in the trace. An exception on the engine thread
is kept and re-raised to the caller on its next call. A contained fault (a failed step, a failed
controller or request source) does not stop the run: it is recorded and reported in exactly one
snapshot (`Snapshot.faults`). `snapshot()` is a thread-safe, bounded view of recent metrics for
dashboards; the engine thread never waits on a reader.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .config import check_live
from .core.engine import Engine, RequestOutput
from .errors import ConfigError, EngineError, check_float
from .sampling import SamplingParams
from .sources import RequestSource

RUNNER_KNOBS = ("request_rate",)
SOURCE_RETRIES = 3         # consecutive failures of a request source before it is dropped
STALL_STEPS = 200          # steps with work pending and no token before a "stalled" event


@dataclass
class Snapshot:
    state: str
    step: int
    config: Any
    iterations: Any            # DataFrame, the last `steps` iterations
    layers: Any                # DataFrame, per-layer timings of the last few iterations
    requests: Any              # DataFrame, recently finished requests
    events: Any                # DataFrame by time: the last `steps` knob changes, faults, stalls, rejections and, kept
                               # apart so they never push those out, the last `steps` controller decisions (holds folded)
    totals: dict = field(default_factory=dict)
    error: str | None = None
    faults: list = field(default_factory=list)     # contained faults not yet reported, each reported once
    stalled: str | None = None                     # why no token came for STALL_STEPS steps, while it lasts


class LiveRunner:
    def __init__(self, engine: Engine, source: RequestSource | None = None, keep_outputs: int = 1000,
                 stall_steps: int = STALL_STEPS):
        self.engine = engine
        self.source = source
        self.stall_steps = stall_steps
        self.stalled: str | None = None
        self.stall_count = 0
        self.faults: deque[dict] = deque(maxlen=100)    # contained faults: engine steps, controller, source
        self._faults_seen = 0                           # how many snapshot() has reported
        self._engine_faults = 0
        self.outputs: deque[RequestOutput] = deque(maxlen=keep_outputs)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._error: BaseException | None = None
        self._reported = False
        self._t0 = 0.0
        self._idle = threading.Event()
        self._parked = threading.Event()          # set by the loop while it holds no step in progress
        self._paused_at: float | None = None      # the run clock stops while paused or stopped
        self.rejected = 0
        self.fault_count = 0
        self._source_failures = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LiveRunner":
        self._raise_if_failed()
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        if self._thread is None:
            self._t0 = self.engine.clock.now()
        else:
            self._resume_clock()
        self._thread = threading.Thread(target=self._loop, name="pie-engine", daemon=True)
        self._thread.start()
        return self

    def pause(self, timeout: float = 10.0) -> bool:
        """Stop between iterations: returns once the step in progress (if any) has finished, so the
        engine's state is settled when pause() returns. False if that took longer than `timeout`."""
        self._raise_if_failed()
        if self._running.is_set():
            self._paused_at = self.engine.clock.now()
            self._parked.clear()
        self._running.clear()
        alive = self._thread is not None and self._thread.is_alive()
        if not alive or threading.current_thread() is self._thread:
            return True
        deadline = time.monotonic() + timeout
        while not self._parked.wait(0.01):
            self._raise_if_failed()
            if not self._thread.is_alive():
                return True
            if time.monotonic() > deadline:
                return False
        return True

    def resume(self) -> None:
        self._raise_if_failed()
        self._resume_clock()
        self._running.set()

    def _resume_clock(self) -> None:
        if self._paused_at is not None:
            self._t0 += self.engine.clock.now() - self._paused_at
            self._paused_at = None

    def stop(self, timeout: float = 10.0) -> None:
        if self._paused_at is None:
            self._paused_at = self.engine.clock.now()
        self._stop.set()
        self._running.set()
        if self._thread:
            self._thread.join(timeout)
        self._raise_if_failed()

    @property
    def state(self) -> str:
        if self._error is not None:
            return "failed"
        if self._thread is None or not self._thread.is_alive():
            return "stopped"
        return "running" if self._running.is_set() else "paused"

    @property
    def error(self) -> BaseException | None:
        return self._error

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the source is exhausted and every request finished (or the engine failed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._raise_if_failed()
            if self._idle.is_set():
                return True
            time.sleep(0.01)
        return False

    # -- control --------------------------------------------------------------------------------
    def set(self, **knobs: Any) -> None:
        """Change live knobs: validated now, applied between iterations."""
        self._raise_if_failed()
        check_live(knobs, extra=RUNNER_KNOBS)
        rate = knobs.pop("request_rate", None)
        if rate is not None:
            check_float("request_rate", rate, 0.0, 1e6)
            if self.source is None or not hasattr(self.source, "set_rate"):
                raise ConfigError("request_rate needs a rate-driven request source")
        if knobs:
            self.engine.update(**knobs)
        if rate is not None:
            self.source.set_rate(rate, self.engine.clock.now() - self._t0)

    def abort(self, request_id: Any) -> bool:
        """Abort a request in flight; at the next step boundary its blocks are freed and it is
        returned (in `outputs`) with finish_reason="abort". False if it is not in flight."""
        self._raise_if_failed()
        return self.engine.abort(request_id)

    def cancel_queue(self) -> int:
        """Abort every request that is waiting (not yet running). Returns how many."""
        self._raise_if_failed()
        ids = self.engine.requests_in_flight(waiting_only=True)
        return sum(self.engine.abort(r) for r in ids)

    def submit(self, prompt_token_ids, sampling: SamplingParams | None = None, request_id: Any = None) -> int:
        self._raise_if_failed()
        self._idle.clear()
        return self.engine.add_request(prompt_token_ids, sampling, request_id=request_id)

    def snapshot(self, steps: int = 200, layer_steps: int = 8) -> Snapshot:
        self._raise_if_failed(report_once=True)
        m = self.engine.metrics
        totals = dict(m.totals)
        count = self.fault_count
        new = _newest(self.faults, count - self._faults_seen)
        self._faults_seen = count
        return Snapshot(self.state, totals["iterations"], self.engine.config, m.iterations_df(last=steps),
                        m.layers_df(last_steps=layer_steps), m.requests_df(last=steps), m.events_df(last=steps),
                        totals, None if self._error is None else repr(self._error), new, self.stalled)

    def _fault(self, where: str, exc: BaseException | None = None, **fields: Any) -> None:
        fault = dict(where=where, **fields)
        if exc is not None:
            fault["message"] = f"{type(exc).__name__}: {exc}"
        self.faults.append(fault)
        self.fault_count += 1

    def _raise_if_failed(self, report_once: bool = False) -> None:
        if self._error is None:
            return
        if report_once and self._reported:
            return
        self._reported = True
        raise EngineError(f"the engine thread failed: {self._error!r}") from self._error

    # -- the engine thread ------------------------------------------------------------------------
    def _admit(self, req) -> None:
        """A request the engine cannot take (too long for its limits) is recorded and skipped."""
        try:
            stops = tuple(getattr(req, "stop_token_ids", ()))       # chat requests end at their end of turn
            self.engine.add_request(req.prompt_token_ids, SamplingParams(max_tokens=req.max_tokens, ignore_eos=True,
                                                                         stop_token_ids=stops),
                                    request_id=req.request_id, arrival_time=self._t0 + req.arrival_time)
        except ConfigError as exc:
            self.rejected += 1
            self.engine.metrics.add_event(self.engine.clock.now(), "rejected", request_id=req.request_id,
                                          reason=str(exc))

    def _pull(self, now: float) -> None:
        """New arrivals. A source that raises is skipped this round (a fault); one that raises
        SOURCE_RETRIES times in a row is dropped. Requests in flight keep running either way."""
        try:
            due = self.source.due(now)
        except Exception as exc:
            self._source_failures += 1
            dropped = self._source_failures >= SOURCE_RETRIES
            note = "request source dropped" if dropped else "arrivals skipped this round"
            self.engine.metrics.add_event(self.engine.clock.now(), "error", where="source",
                                          message=f"{type(exc).__name__}: {exc}", note=note)
            self._fault("source", exc, note=note)
            if dropped:
                self.source = None
            return
        self._source_failures = 0
        for req in due:
            self._admit(req)

    def _watch(self) -> None:
        """After a step: surface the engine's contained faults, and notice a stall."""
        eng = self.engine
        for fault in _newest(eng.faults, eng.fault_count - self._engine_faults):
            self._fault(**fault)
        self._engine_faults = eng.fault_count
        if eng.steps_without_token >= self.stall_steps:
            if self.stalled is None:
                self.stalled = eng.stall_reason()
                self.stall_count += 1
                eng.metrics.add_event(eng.clock.now(), "stalled", steps=eng.steps_without_token,
                                      reason=self.stalled)
        elif self.stalled is not None:
            self.stalled = None
            eng.metrics.add_event(eng.clock.now(), "unstalled")

    def _loop(self) -> None:
        eng, clock = self.engine, self.engine.clock
        try:
            while not self._stop.is_set():
                if not self._running.is_set():
                    self._parked.set()
                    self._running.wait(0.05)
                    continue
                now = clock.now() - self._t0
                if self.source is not None:
                    self._pull(now)
                if eng.has_unfinished():
                    self._idle.clear()
                    self.outputs.extend(eng.step())
                    self._watch()
                    if self.stalled is not None:          # nothing can run: do not spin
                        clock.sleep_until(clock.now() + 0.01)
                    continue
                self._watch()
                nxt = self.source.next_arrival() if self.source is not None else None
                if nxt is None:
                    self._idle.set()
                    time.sleep(0.005)
                else:
                    clock.sleep_until(self._t0 + min(nxt, now + 0.05))
        except BaseException as exc:  # reported to the caller, never lost
            self._error = exc
            self._idle.set()


def _newest(buf: deque, n: int) -> list:
    """The last n entries of a bounded buffer (fewer if it dropped some)."""
    items = list(buf)
    return items[len(items) - min(n, len(items)):] if n > 0 else []
