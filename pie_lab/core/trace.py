"""Export the engine's records as a Chrome trace / Perfetto JSON (the "Trace Event Format").

Tracks (one process "pie_lab", a thread each): iterations, per-layer compute, the copy stream,
stalls, policy hybrid's host attention and the device's waits for it, controller decisions and
knob changes (instant events), and counters for the swap budget and blocks in use. Times are microseconds from the first record.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from .metrics import Metrics

PID = 1
TRACKS = {"iterations": 1, "compute": 2, "copy stream": 3, "stall": 4, "controller": 5, "knobs": 6,
          "host attention": 7, "host wait": 8}


def chrome_trace(metrics: Metrics) -> dict:
    layers = metrics.layer_rows()
    with metrics._lock:
        iterations = list(metrics.iterations)
    events = metrics.event_rows()
    starts = [r.start for r in iterations] + [e["time"] for e in events]
    t0 = min(starts) if starts else 0.0
    us = lambda t: round((t - t0) * 1e6, 3)  # noqa: E731
    out: list[dict] = [dict(ph="M", pid=PID, name="process_name", args=dict(name="pie_lab"))]
    out += [dict(ph="M", pid=PID, tid=tid, name="thread_name", args=dict(name=name)) for name, tid in TRACKS.items()]
    for r in iterations:
        out.append(dict(ph="X", pid=PID, tid=TRACKS["iterations"], name=f"step {r.step}", ts=us(r.start),
                        dur=round(r.duration * 1e6, 3), cat="iteration",
                        args=dict(batch=r.batch_size, prefill_tokens=r.prefill_tokens, decode_tokens=r.decode_tokens,
                                  stall_ms=r.stall * 1e3, overlap_ratio=r.overlap_ratio,
                                  streamed_blocks=r.streamed_blocks, stream_bytes=r.stream_bytes)))
        out.append(dict(ph="C", pid=PID, name="blocks", ts=us(r.start),
                        args=dict(gpu=r.gpu_blocks_used, host=r.host_blocks_used, budget=r.swap_budget,
                                  staging=r.staging_blocks)))
    for step, start, l in layers:
        out.append(dict(ph="X", pid=PID, tid=TRACKS["compute"], name=f"layer {l.layer}", cat="compute",
                        ts=us(start + l.compute_start), dur=round((l.compute_end - l.compute_start) * 1e6, 3),
                        args=dict(step=step)))
        if not math.isnan(l.copy_start):
            out.append(dict(ph="X", pid=PID, tid=TRACKS["copy stream"], name=f"copy layer {l.layer}", cat="copy",
                            ts=us(start + l.copy_start), dur=round((l.copy_end - l.copy_start) * 1e6, 3),
                            args=dict(step=step, bytes=l.bytes, issued_us=us(start + l.copy_issue))))
        if l.wait > 0:
            out.append(dict(ph="X", pid=PID, tid=TRACKS["stall"], name=f"stall layer {l.layer}", cat="stall",
                            ts=us(start + l.compute_start - l.wait), dur=round(l.wait * 1e6, 3),
                            args=dict(step=step)))
        if not math.isnan(l.host_start):
            out.append(dict(ph="X", pid=PID, tid=TRACKS["host attention"], name=f"host attention layer {l.layer}",
                            cat="host", ts=us(start + l.host_start), dur=round(l.host_time * 1e6, 3),
                            args=dict(step=step, bytes=l.host_bytes, window_us=round(l.host_window * 1e6, 3))))
            if l.host_wait > 0:
                out.append(dict(ph="X", pid=PID, tid=TRACKS["host wait"], name=f"host wait layer {l.layer}",
                                cat="host", ts=us(start + l.host_end - l.host_wait), dur=round(l.host_wait * 1e6, 3),
                                args=dict(step=step)))
    for e in events:
        track = "controller" if e["kind"] == "controller" else "knobs"
        args = {k: _jsonable(v) for k, v in e.items() if k not in ("time", "kind")}
        name = e.get("rule", "knob change") if track == "controller" else "knob change"
        out.append(dict(ph="i", s="t", pid=PID, tid=TRACKS[track], name=name, ts=us(e["time"]), cat=e["kind"],
                        args=args))
    return dict(traceEvents=out, displayTimeUnit="ms", otherData=dict(source="pie_lab"))


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def export_chrome_trace(metrics: Metrics, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(metrics)))
    return path
