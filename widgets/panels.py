"""Chart panels: each owns one Altair JupyterChart (offline) and redraws it from a snapshot.

A refresh only shapes a few hundred rows of plain records and assigns `jc.spec` from a template
validated once (see `charts.SpecTemplate`): a few milliseconds per panel. Over-time charts read
a `History` of one aggregated point per refresh, so they span minutes while each snapshot only
carries the last few hundred iterations.
"""
from __future__ import annotations

import threading
from collections import deque

import altair as alt
import ipywidgets as W

from . import charts as C

_offline_lock = threading.Lock()
_offline_done = False


def enable_offline() -> None:
    """JupyterChart imports vega from a CDN unless told otherwise: call before creating any chart.
    Static charts a cell returns render through the same offline JupyterChart (vega inline)."""
    global _offline_done
    with _offline_lock:
        if not _offline_done:
            alt.JupyterChart.enable_offline()
            alt.renderers.enable("jupyter", offline=True)
            _offline_done = True


class History:
    """Bounded history: one point per refresh (iterations aggregated), recent request latencies,
    and the events in view. `update(snap)` returns True when something new arrived."""

    def __init__(self, points: int = 240, max_requests: int = 300):
        self.points: deque[dict] = deque(maxlen=points)
        self.requests: deque[dict] = deque(maxlen=max_requests)
        self.events: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.points.clear()
        self.requests.clear()
        self.events = []
        self.origin: float | None = None
        self.last_step = -1
        self.last_finish = float("-inf")
        self.last_tokens: int | None = None

    def update(self, snap) -> bool:
        it = snap.iterations
        if it is None or len(it) == 0:
            return False
        if self.origin is None:
            self.origin = float(it["start"].iloc[0])
        prev = self.points[-1]["end"] if self.points else None
        total = (snap.totals or {}).get("generated_tokens")
        tokens = None if total is None or self.last_tokens is None else total - self.last_tokens
        p = C.iteration_point(it, self.last_step, self.origin, prev, tokens)
        if p is None:
            return False
        self.last_tokens = total
        self.points.append(p)
        self.last_step = p["step"]
        rows, self.last_finish = C.request_rows(snap.requests, self.origin, self.last_finish)
        self.requests.extend(rows)
        self.events = C.event_rows(snap.events, self.origin, self.points[0]["t"])
        return True

    @property
    def last(self) -> dict | None:
        return self.points[-1] if self.points else None


class ChartPanel:
    names: tuple[str, ...] = ()
    css = "pie-chart"

    def __init__(self, width: int = C.WIDTH):
        enable_offline()
        self.width = width
        self.template = C.SpecTemplate(self.builder, self.names, width=width)
        self.data: dict[str, list] = {n: [] for n in self.names}
        self.jc = alt.JupyterChart(self.template.chart, embed_options={"actions": False})
        self.jc.spec = self.template.fill(**self.data)
        self.jc.add_class(self.css)
        self.caption = W.HTML(value="")
        self.widget = W.VBox([self.jc, self.caption])
        self.widget.add_class(self.css)
        self.updates = 0

    @staticmethod
    def builder(*data, width):
        raise NotImplementedError

    def shape(self, snap, history: History) -> tuple[dict, str]:
        raise NotImplementedError

    def update(self, snap, history: History) -> None:
        data, caption = self.shape(snap, history)
        self.data = data
        self.jc.spec = self.template.fill(**data)
        if caption != self.caption.value:
            self.caption.value = caption
        self.updates += 1

    @property
    def spec(self) -> dict:
        """The Vega-Lite spec the browser shows now (with its data)."""
        return self.jc.spec

    @property
    def chart(self):
        """The current view as a regular Altair chart (to save or display statically)."""
        return self.template.chart_with(**self.data)


class OverlapTimeline(ChartPanel):
    """Per-layer compute vs copy stream vs stall over the last `max_steps` iterations."""
    names = ("timeline",)
    css = "pie-timeline"

    def __init__(self, max_steps: int = 3, width: int = C.WIDTH):
        self.max_steps = max_steps
        self.transparency: list[dict] = []
        super().__init__(width)

    @staticmethod
    def builder(timeline, width):
        return C.timeline_chart(timeline, width=width)

    def shape(self, snap, history):
        rows = C.timeline_rows(snap.layers, self.max_steps)
        tr = C.transparency_rows(snap.layers, getattr(snap.config, "link_bandwidth_gbps", None))
        self.transparency = tr
        if not tr:
            return {"timeline": rows}, "<i>no iterations yet</i>"
        stalled = [r["layer"] for r in tr if not r["transparent"]]
        comp = sum(r["compute_ms"] for r in tr) / len(tr)
        copy = sum(r["copy_ms"] for r in tr) / len(tr)
        mb = sum(r["mbytes"] for r in tr) / len(tr)
        if mb == 0:
            verdict = "nothing streamed from the host in these iterations"
        elif not stalled:
            verdict = "every layer's copy is hidden under compute: swapping is transparent"
        else:
            verdict = f"layers {stalled} stall: their copies do not fit under the compute before them"
        caption = (f"<small>per layer, mean over the last iterations: compute {comp:.3f} ms, copy {copy:.3f} ms "
                   f"for {mb:.3g} MB. {verdict}.</small>")
        return {"timeline": rows}, caption


class LatencyPanel(ChartPanel):
    """Iteration time, TTFT/TPOT, throughput over time; the budget and decisions overlaid."""
    names = ("history", "requests", "events")
    css = "pie-latency"

    @staticmethod
    def builder(history, requests, events, width):
        return C.latency_chart(history, requests, events, width=width)

    def shape(self, snap, history):
        pts = [{k: v for k, v in p.items() if k != "end"} for p in history.points]
        caption = ""
        if pts:
            last = pts[-1]
            link = (f", emulated link copies {last['link_cpu_ms']:.3f} ms CPU (inline or on the link threads, sharing the cores with "
                    "compute; a real link's DMA costs none)" if last.get("link_cpu_ms") else "")
            caption = (f"<small>now: {last['iter_ms']:.3f} ms per iteration, stall {last['stall_ms']:.3f} ms, "
                       f"{last['tokens_per_s']:.0f} tokens/s, batch {last['batch_size']:.1f}{link}</small>")
        return {"history": pts, "requests": list(history.requests), "events": history.events}, caption


class MemoryPanel(ChartPanel):
    """GPU and host blocks in use over time, the staging ring's cost, and the split now."""
    names = ("memory", "now")
    css = "pie-memory"

    def __init__(self, width: int = C.WIDTH, host_capacity: int | None = None, num_layers: int | None = None):
        self.host_capacity, self.num_layers = host_capacity, num_layers
        super().__init__(width)

    @staticmethod
    def builder(memory, now, width):
        return C.memory_chart(memory, now, width=width)

    def shape(self, snap, history):
        last = history.last
        caption = ""
        if last:
            b, d, L = last["swap_budget"], last["prefetch_depth"], self.num_layers
            saved = f"; net GPU blocks saved ~ budget x (1 - d/L) = {b * (1 - d / L):.1f}" if L else ""
            caption = (f"<small>staging ring: {last['staging_blocks']} GPU blocks reserved for streaming "
                       f"(prefetch depth {d}){saved}</small>")
        return {"memory": C.memory_rows(history.points), "now": C.memory_now_rows(last, self.host_capacity)}, caption
