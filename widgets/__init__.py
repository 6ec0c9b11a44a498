"""Jupyter widgets for pie_lab: a live dashboard around a `pie_lab.live.LiveRunner`.

    from widgets import Dashboard
    dash = Dashboard.launch(model="opt-tiny", executor="cpu", request_rate=20)   # builds, starts
    dash                                                                          # shows it
    # or, around a runner you built:  Dashboard(runner).show()

Parts, usable on their own: ControlPanel, OverlapTimeline, LatencyPanel, MemoryPanel, ErrorArea,
Refresher; chart builders for static use in `widgets.charts`; a live-switchable request source
in `widgets.workload`. Charts are Altair JupyterCharts in offline mode (no CDN needed).
Uses only pie_lab's public API; pie_lab never imports this package.
"""
from .chart_data import iteration_frame, timeline_frame, transparency_frame
from .charts import latency_chart, memory_chart, timeline_chart, transparency_chart
from .controls import ControlPanel, ErrorArea, parse_assignments
from .dashboard import CPU_DEFAULTS, SIM_DEFAULTS, Dashboard, Refresher
from .panels import LatencyPanel, MemoryPanel, OverlapTimeline, enable_offline
from .whatif import WhatIfExplorer
from .workload import WORKLOADS, WorkloadSource, engine_capacity

__all__ = ["Dashboard", "ControlPanel", "OverlapTimeline", "LatencyPanel", "MemoryPanel", "ErrorArea", "Refresher",
           "WorkloadSource", "WORKLOADS", "engine_capacity", "enable_offline", "parse_assignments",
           "timeline_frame", "timeline_chart", "transparency_frame", "transparency_chart", "iteration_frame",
           "latency_chart", "memory_chart", "CPU_DEFAULTS", "SIM_DEFAULTS", "WhatIfExplorer"]
