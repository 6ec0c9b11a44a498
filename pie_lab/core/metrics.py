"""Per-iteration, per-layer, per-request and event records, in bounded memory, as DataFrames."""
from __future__ import annotations

import itertools
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .plan import StepPlan, StepTiming
from .sequence import Sequence


LAYER_COLUMNS = ["step", "step_start", "layer", "compute_start", "compute_end", "copy_issue", "copy_start",
                 "copy_end", "wait", "bytes", "copy_busy", "host_start", "host_end", "host_wait", "host_bytes", "host_window"]


@dataclass(frozen=True)
class IterationRecord:
    step: int
    start: float
    end: float
    batch_size: int
    prefill_tokens: int
    decode_tokens: int
    gpu_blocks_used: int
    host_blocks_used: int          # host pool in use: host-resident blocks of the batch + swap space
    gpu_blocks_limit: int
    staging_blocks: int
    swap_budget: int
    prefetch_depth: int
    streamed_blocks: int
    stream_bytes: int
    offload_bytes: int
    blocking_copy_bytes: int
    blocking_copy_time: float
    copy_time: float
    compute_time: float
    stall: float
    overlap_ratio: float          # hidden copy time / copy time (1.0 when nothing streamed)
    preempted: int
    swapped_out: int
    swap_space_blocks: int        # host blocks held by swapped-out (preempted) sequences
    context_tokens: int           # sum of the batch's context lengths
    waiting: int
    emulated_link: bool
    link_cpu_time: float          # CPU seconds the emulated link's copies cost (cpu executor)
    host_compute_budget: int = 0   # hybrid: host-computed share allowed (blocks)
    host_computed_blocks: int = 0  # hybrid: host-resident blocks attended on the host this step
    host_time: float = 0.0         # hybrid: host attention time, summed over layers
    host_wait: float = 0.0         # hybrid: device time waiting for the host's partials
    host_bytes: int = 0            # hybrid: host KV attended on the host, all layers
    host_window: float = 0.0       # hybrid: device time the host had per layer before the merge, summed

    @property
    def duration(self) -> float:
        return self.end - self.start

    @classmethod
    def build(cls, plan: StepPlan, timing: StepTiming, start: float, end: float, **state: Any) -> "IterationRecord":
        sm = plan.summary
        return cls.of(timing, step=plan.step_id, start=start, end=end, batch_size=sm.batch_size,
                      prefill_tokens=sm.prefill_tokens, decode_tokens=sm.decode_tokens,
                      streamed_blocks=plan.num_streamed_blocks, host_computed_blocks=sm.host_computed_blocks,
                      context_tokens=sm.context_tokens, **state)

    @classmethod
    def of(cls, timing: StepTiming, **fields: Any) -> "IterationRecord":
        """The record from a step's timing and its other fields (what `build` reads off a plan)."""
        copy = timing.copy_time
        stall = timing.stall
        overlap = 1.0 if copy <= 0 else max(0.0, min(1.0, (copy - stall) / copy))
        return cls(stream_bytes=timing.stream_bytes, offload_bytes=timing.async_copy_bytes,
                   blocking_copy_bytes=timing.blocking_copy_bytes, blocking_copy_time=timing.blocking_copy_time,
                   copy_time=copy, compute_time=timing.compute_time, stall=stall, overlap_ratio=overlap,
                   emulated_link=timing.emulated_link, link_cpu_time=timing.link_cpu_time,
                   host_time=timing.host_time, host_wait=timing.host_wait,
                   host_bytes=timing.host_bytes, host_window=timing.host_window, **fields)


def request_record(seq: Sequence, request_id: Any) -> dict:
    n_out = len(seq.output_token_ids)
    ttft = seq.first_token_time - seq.arrival_time if seq.first_token_time is not None else float("nan")
    decode_span = (seq.finish_time - seq.first_token_time) if n_out > 1 else float("nan")
    return dict(request_id=request_id, seq_id=seq.seq_id, arrival=seq.arrival_time,
                first_scheduled=seq.first_scheduled_time, first_token=seq.first_token_time,
                finish=seq.finish_time, prompt_tokens=len(seq.prompt_token_ids), output_tokens=n_out,
                ttft=ttft, tpot=decode_span / (n_out - 1) if n_out > 1 else float("nan"),
                e2e=seq.finish_time - seq.arrival_time, preemptions=seq.num_preemptions,
                swaps=seq.num_swaps, finish_reason=seq.finish_reason)


def deep_size(x: Any, depth: int = 3) -> int:
    """Bytes held by a record: the object plus its fields' values (shared keys not counted)."""
    n = sys.getsizeof(x)
    if depth == 0:
        return n
    if isinstance(x, dict):
        return n + sum(deep_size(v, depth - 1) for v in x.values())
    if isinstance(x, (tuple, list)):
        return n + sum(deep_size(v, depth - 1) for v in x)
    fields = getattr(x, "__dict__", None)
    return n + (deep_size(fields, depth) if fields is not None else 0)


class ByteBoundedBuffer(deque):
    """A deque that drops its oldest rows once they hold more than `max_bytes` (estimated from a row
    measured every `sample` appends; the records of one buffer all have the same fields)."""

    def __init__(self, max_bytes: int, max_rows: int | None = None, sample: int = 256):
        super().__init__(maxlen=max_rows)
        self.max_bytes = max_bytes
        self.row_bytes = 1
        self._sample = sample
        self._appended = 0

    def append(self, row) -> None:
        if self._appended % self._sample == 0:
            self.row_bytes = max(1, deep_size(row))
        self._appended += 1
        super().append(row)
        while len(self) * self.row_bytes > self.max_bytes:
            self.popleft()

    @property
    def nbytes(self) -> int:
        return len(self) * self.row_bytes


class StepLayers(ByteBoundedBuffer):
    """Per-step layer timings, (step, step start, layers), expanded to rows only when read (a sim
    step's compute-only layers are one column); bounded in bytes and, optionally, in layer rows."""

    def __init__(self, max_bytes: int, max_rows: int | None = None):
        super().__init__(max_bytes)
        self.max_rows = max_rows
        self.rows = 0                  # layer rows held

    def append(self, entry) -> None:
        self.rows += len(entry[2])
        super().append(entry)
        while self.max_rows is not None and len(self) > 1 and self.rows - len(self[0][2]) >= self.max_rows:
            self.popleft()

    def popleft(self):
        entry = super().popleft()
        self.rows -= len(entry[2])
        return entry

    def excess(self) -> int:
        """Rows of the oldest step beyond max_rows: not shown."""
        return max(0, self.rows - self.max_rows) if self.max_rows is not None else 0


# Shares of Metrics(max_bytes) per buffer: layer rows are the most numerous (one per layer per step).
# Controller decisions have their own buffer, so their chatter never pushes a knob change, fault,
# stall or restart out of `events`.
BUFFER_SHARES = dict(iterations=0.25, layers=0.5, requests=0.2, events=0.03, decisions=0.02)
DECISION_KINDS = frozenset({"controller"})
DEFAULT_METRICS_BYTES = 32 * 2**20


class Metrics:
    """Thread-safe recorder; every buffer is bounded in bytes (and optionally rows), so a long run
    keeps memory flat once the buffers fill."""

    def __init__(self, max_bytes: int = DEFAULT_METRICS_BYTES, max_iterations: int | None = None,
                 max_layer_rows: int | None = None, max_requests: int | None = None, max_events: int | None = None):
        self._lock = threading.Lock()
        b = {k: int(share * max_bytes) for k, share in BUFFER_SHARES.items()}
        self.max_bytes = max_bytes
        self.iterations: deque[IterationRecord] = ByteBoundedBuffer(b["iterations"], max_iterations)
        self.layers = StepLayers(b["layers"], max_layer_rows)
        self.requests: deque[dict] = ByteBoundedBuffer(b["requests"], max_requests)
        self.events: deque[dict] = ByteBoundedBuffer(b["events"], max_events)
        self.decisions: deque[dict] = ByteBoundedBuffer(b["decisions"], max_events)
        self._runs: dict[Any, tuple[Any, dict]] = {}      # run group -> (key, its event)
        self.totals = dict(iterations=0, requests=0, generated_tokens=0, stream_bytes=0, stall=0.0)

    @property
    def nbytes(self) -> dict:
        """Estimated bytes held per buffer."""
        with self._lock:
            return {k: getattr(self, k).nbytes for k in BUFFER_SHARES}

    def add_iteration(self, rec: IterationRecord, timing: StepTiming) -> None:
        with self._lock:
            self.iterations.append(rec)
            self.layers.append((rec.step, rec.start, timing.layers))
            self.totals["iterations"] += 1
            self.totals["generated_tokens"] += rec.decode_tokens
            self.totals["stream_bytes"] += rec.stream_bytes
            self.totals["stall"] += rec.stall

    def add_request(self, row: dict) -> None:
        with self._lock:
            self.requests.append(row)
            self.totals["requests"] += 1

    def add_event(self, time: float, kind: str, run: tuple[Any, Any] | None = None, **fields: Any) -> None:
        """One event. `run=(group, key)`: an event whose key repeats its group's last one is folded
        into it (`count` + 1, `until` and `last_step` moved on); a key of None starts no run.
        Kinds in DECISION_KINDS go to their own buffer (`decisions`), every other kind to `events`."""
        with self._lock:
            if run is not None:
                group, key = run
                last = self._runs.get(group)
                if key is not None and last is not None and last[0] == key:
                    ev = last[1]
                    ev.update(count=ev["count"] + 1, until=time, last_step=fields.get("step"))
                    return
                fields.update(count=1, until=time, last_step=fields.get("step"))
            ev = dict(time=time, kind=kind, **fields)
            (self.decisions if kind in DECISION_KINDS else self.events).append(ev)
            if run is not None:
                self._runs[run[0]] = (run[1], ev)

    # -- views (copy the rows under the lock, build frames outside it) -----------------------
    def _tail(self, buf: deque, last: int | None) -> list:
        with self._lock:
            if not last or last >= len(buf):
                return list(buf)
            return list(itertools.islice(buf, len(buf) - last, None))

    def iterations_df(self, last: int | None = None):
        import pandas as pd
        rows = self._tail(self.iterations, last)
        df = pd.DataFrame([vars(r) for r in rows], columns=list(IterationRecord.__dataclass_fields__))
        df["duration"] = df["end"] - df["start"]
        return df

    def layer_rows(self, last_steps: int | None = None) -> list[tuple]:
        """(step, step start, LayerTiming) for the layers kept (of the last `last_steps` steps)."""
        with self._lock:
            if last_steps and self.layers:
                first = self.layers[-1][0] - last_steps + 1
                steps = []
                for r in reversed(self.layers):
                    if r[0] < first:
                        break
                    steps.append(r)
                steps.reverse()
            else:
                steps = list(self.layers)
            excess = self.layers.excess() if len(steps) == len(self.layers) else 0
        rows = [(step, start, l) for step, start, layers in steps for l in layers]
        del rows[:excess]
        return rows

    @property
    def num_layer_rows(self) -> int:
        with self._lock:
            return self.layers.rows - self.layers.excess()

    def layers_df(self, last_steps: int | None = None):
        import pandas as pd
        rows = self.layer_rows(last_steps)
        return pd.DataFrame([(s, t0, *vars(l).values()) for s, t0, l in rows], columns=LAYER_COLUMNS)

    def requests_df(self, last: int | None = None):
        import pandas as pd
        return pd.DataFrame(self._tail(self.requests, last))

    def event_rows(self, last: int | None = None) -> list[dict]:
        """The last `last` events and the last `last` decisions (each kept apart), merged by time."""
        rows = self._tail(self.events, last) + self._tail(self.decisions, last)
        with self._lock:
            rows = [dict(r) for r in rows]          # a run's event may grow while it is read
        return sorted(rows, key=lambda r: r["time"])

    def events_df(self, last: int | None = None):
        import pandas as pd
        return pd.DataFrame(self.event_rows(last))
