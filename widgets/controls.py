"""The control panel: sliders and switches that hand values to `LiveRunner.set`, nothing more.

Observe callbacks run on the kernel's main thread; they only validate-and-hand-off through the
runner's thread-safe `set()` (applied by the engine between iterations). Rejected values are
shown in the error area, never raised into the void. `sync()` moves the controls to the engine's
actual values (e.g. the budget the controller chose) without echoing them back as knob changes.
"""
from __future__ import annotations

import dataclasses
import html
import threading
import time
from typing import Any, Callable

import ipywidgets as W

from pie_lab import EXECUTORS, NAMED_SHAPES, OFFLOAD_MODES, ConfigError, PieLabError, real_model_names

from .workload import WORKLOADS

STYLE = {"description_width": "150px"}
LAYOUT = W.Layout(width="360px")


class ErrorArea:
    """Shows rejected knob values and engine-thread errors (newest first, a few kept)."""

    def __init__(self, keep: int = 6):
        self.keep = keep
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self.widget = W.HTML(value="")
        self.widget.add_class("pie-errors")
        self.clear_button = W.Button(description="clear", layout=W.Layout(width="60px", display="none"))
        self.clear_button.on_click(lambda _: self.clear())
        self.box = W.HBox([self.widget, self.clear_button])

    def add(self, message: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            if self.messages and self.messages[0].endswith(message):
                return
            self.messages.insert(0, f"{stamp} {message}")
            del self.messages[self.keep:]
            text = "".join(f"<div>{html.escape(m)}</div>" for m in self.messages)
        self.widget.value = f'<div style="color:#b00020;font-family:monospace;font-size:12px">{text}</div>'
        self.clear_button.layout.display = ""

    def clear(self) -> None:
        with self._lock:
            self.messages = []
        self.widget.value = ""
        self.clear_button.layout.display = "none"

    @property
    def text(self) -> str:
        with self._lock:
            return "\n".join(self.messages)


class ControlPanel:
    """Live knobs of one runner; `executor` and `model` apply on restart (`on_restart` callback).

    Attributes are the widgets: swap_budget, offload, prefetch_depth, max_num_seqs, num_gpu_blocks,
    link_bandwidth, controller_enabled, controller_target, workload, request_rate, executor,
    model, restart_button, pause_button, stop_button, cancel_button (aborts the waiting requests),
    command (free-form "knob=value").
    """

    def __init__(self, runner, errors: ErrorArea | None = None,
                 on_restart: Callable[[], None] | None = None):
        self.errors = errors or ErrorArea()
        self.on_restart = on_restart
        self._local = threading.local()
        c = dict(continuous_update=False, style=STYLE, layout=LAYOUT)
        self.swap_budget = W.IntSlider(description="swap budget (blocks)", min=0, max=1, **c)
        self.swap_budget.add_class("pie-swap-budget")
        self.offload = W.ToggleButtons(
            description="offload", options=list(OFFLOAD_MODES), style={**STYLE, "button_width": "auto"},
            layout=W.Layout(width="360px", display="flex", align_items="center"),     # label and buttons on one row
            tooltips=[f"{mode}: {what}" for mode, what in OFFLOAD_MODES.items()])
        self.offload.add_class("pie-offload")
        self.prefetch_depth = W.IntSlider(description="prefetch depth (layers)", min=1, max=8, **c)
        self.max_num_seqs = W.IntSlider(description="max batch size", min=1, max=256, **c)
        self.num_gpu_blocks = W.IntSlider(description="GPU KV limit (blocks)", min=1, max=1, **c)
        self.link_bandwidth = W.FloatLogSlider(description="link bandwidth (GB/s)", base=10, min=-3, max=3,
                                               step=0.05, readout_format=".3g", **c)
        self.controller_enabled = W.Checkbox(description="adaptive controller", indent=False,
                                             layout=W.Layout(width="180px"))
        self.controller_target = W.FloatSlider(description="target stall (%)", min=0.5, max=30,
                                               step=0.5, readout_format=".1f", **c)
        self.workload = W.Dropdown(description="workload", options=list(WORKLOADS), style=STYLE, layout=LAYOUT)
        self.request_rate = W.FloatLogSlider(description="request rate (req/s)", base=10, min=-1, max=3,
                                             step=0.05, readout_format=".3g", **c)
        self.executor = W.Dropdown(description="executor (restart)", options=list(EXECUTORS), style=STYLE,
                                   layout=LAYOUT)
        self.model = W.Dropdown(description="model (restart)", options=[*real_model_names(), *NAMED_SHAPES], style=STYLE,
                                layout=LAYOUT)
        self.restart_button = W.Button(description="restart", icon="refresh", tooltip="rebuild the engine with "
                                       "this executor and model, keeping the knobs", layout=W.Layout(width="110px"))
        self.pause_button = W.ToggleButton(description="pause", icon="pause", layout=W.Layout(width="110px"))
        self.stop_button = W.Button(description="stop", icon="stop", layout=W.Layout(width="110px"))
        self.cancel_button = W.Button(description="cancel queue", icon="times", tooltip="abort every request "
                                      "still waiting; running ones finish", layout=W.Layout(width="140px"))
        self.cancel_button.add_class("pie-cancel-queue")
        self.command = W.Text(description="set knob", placeholder="e.g. max_num_batched_tokens=4096",
                              continuous_update=False, style=STYLE, layout=LAYOUT)
        self.widget = W.VBox([
            W.HTML("<b>Swapping</b>"), self.swap_budget, self.offload, self.prefetch_depth, self.link_bandwidth,
            W.HTML("<b>Batch and memory</b>"), self.max_num_seqs, self.num_gpu_blocks,
            W.HTML("<b>Adaptive controller</b>"), self.controller_enabled, self.controller_target,
            W.HTML("<b>Workload</b>"), self.workload, self.request_rate,
            W.HTML("<b>Engine</b>"), self.executor, self.model,
            W.HBox([self.restart_button, self.pause_button, self.stop_button]), self.cancel_button, self.command,
        ], layout=W.Layout(width="380px"))
        self.widget.add_class("pie-controls")
        self.bind(runner)
        for name, knob in (("swap_budget", "swap_budget_blocks"), ("prefetch_depth", "prefetch_depth"),
                           ("max_num_seqs", "max_num_seqs"), ("num_gpu_blocks", "num_gpu_blocks"),
                           ("link_bandwidth", "link_bandwidth_gbps"), ("request_rate", "request_rate"),
                           ("offload", "offload")):
            getattr(self, name).observe(self._knob_handler(knob), names="value")
        self.controller_enabled.observe(self._on_controller, names="value")
        self.controller_target.observe(self._on_controller, names="value")
        self.workload.observe(self._on_workload, names="value")
        self.pause_button.observe(self._on_pause, names="value")
        self.restart_button.on_click(lambda _: self._restart())
        self.stop_button.on_click(lambda _: self._stop())
        self.cancel_button.on_click(lambda _: self._cancel_queue())
        self.command.observe(self._on_command, names="value")

    # -- binding to a runner ----------------------------------------------------------------
    def bind(self, runner) -> None:
        """Point the panel at `runner` (again, after a restart) and load its current values."""
        self.runner = runner
        eng = runner.engine
        c = eng.config
        host_cap = eng.host_capacity
        gpu_cap = eng.gpu_capacity
        pie = c.policy == "pie"
        self._seen = {"budget": c.swap_budget_blocks, "controller": bool(c.controller.enabled),
                      "target": round(c.controller.target_overhead * 100, 1), "prefetch_depth": c.prefetch_depth,
                      "max_num_seqs": c.max_num_seqs, "offload": c.offload}
        with self.syncing():
            self.swap_budget.max = max(1, host_cap)
            self.swap_budget.value = min(c.swap_budget_blocks, self.swap_budget.max)
            self.swap_budget.disabled = not pie or host_cap == 0
            self.offload.value = c.offload
            self.offload.disabled = not c.budgeted
            self.prefetch_depth.max = max(8, eng.spec.num_layers)
            self.prefetch_depth.value = c.prefetch_depth
            self.max_num_seqs.max = max(256, c.max_num_seqs)
            self.max_num_seqs.value = c.max_num_seqs
            self.num_gpu_blocks.max = max(1, gpu_cap)
            self.num_gpu_blocks.value = eng.gpu_limit
            self.link_bandwidth.value = c.link_bandwidth_gbps
            self.link_bandwidth.disabled = eng.executor_name == "cuda"
            self.controller_enabled.value = bool(c.controller.enabled)
            self.controller_enabled.disabled = not pie
            self.controller_target.value = round(c.controller.target_overhead * 100, 1)
            self.controller_target.disabled = not pie
            src = runner.source
            has_rate = src is not None and hasattr(src, "set_rate")
            self.request_rate.disabled = not has_rate
            if has_rate:
                self.request_rate.value = max(0.1, float(getattr(src, "rate", 1.0) or 0.1))
            self.workload.disabled = not hasattr(src, "set_workload")
            if hasattr(src, "set_workload"):
                self.workload.value = src.name
            self.executor.value = eng.executor_name if eng.executor_name in EXECUTORS else "cpu"
            if eng.spec.name in self.model.options:
                self.model.value = eng.spec.name
        self.restart_button.disabled = self.on_restart is None

    class _Guard:
        def __init__(self, local):
            self.local = local

        def __enter__(self):
            self.local.depth = getattr(self.local, "depth", 0) + 1

        def __exit__(self, *exc):
            self.local.depth -= 1

    def syncing(self):
        """Context: trait changes made inside are the engine's state, not the user's (no knob sent)."""
        return self._Guard(self._local)

    @property
    def _is_syncing(self) -> bool:
        return getattr(self._local, "depth", 0) > 0

    def sync(self, config) -> None:
        """Show the engine's own changes (the controller moving the budget) on the controls.

        Only values that changed in the engine since the last sync move a control, so a value the
        user just set and the engine has not applied yet is not pulled back.
        """
        seen = self._seen
        with self.syncing():
            b = config.swap_budget_blocks
            if seen.get("budget") != b and b <= self.swap_budget.max:
                self.swap_budget.value = b
            en = bool(config.controller.enabled)
            if seen.get("controller") != en:
                self.controller_enabled.value = en
            target = round(config.controller.target_overhead * 100, 1)
            if seen.get("target") != target and self.controller_target.min <= target <= self.controller_target.max:
                self.controller_target.value = target
            if seen.get("offload") != config.offload:
                self.offload.value = config.offload
            for name, knob in (("prefetch_depth", "prefetch_depth"), ("max_num_seqs", "max_num_seqs")):
                v = getattr(config, knob)
                w = getattr(self, name)
                if seen.get(knob) != v and w.min <= v <= w.max:
                    w.value = v
        self._seen = {"budget": b, "controller": en, "target": target, "prefetch_depth": config.prefetch_depth,
                      "max_num_seqs": config.max_num_seqs, "offload": config.offload}

    # -- handing values to the engine ---------------------------------------------------------
    def apply(self, **knobs: Any) -> bool:
        """`runner.set(**knobs)`; a rejected value goes to the error area. True when accepted."""
        try:
            self.runner.set(**knobs)
            return True
        except PieLabError as exc:
            self.errors.add(f"rejected {', '.join(f'{k}={v!r}' for k, v in knobs.items())}: {exc}")
        except Exception as exc:  # noqa: BLE001 - never lose an error in a callback
            self.errors.add(f"{type(exc).__name__}: {exc}")
        return False

    def _knob_handler(self, knob: str):
        def handler(change):
            if self._is_syncing:
                return
            value = change["new"]
            if knob == "link_bandwidth_gbps":
                value = float(f"{value:.4g}")
            self.apply(**{knob: value})
        return handler

    def _on_controller(self, change):
        if self._is_syncing:
            return
        ctl = self.runner.engine.config.controller
        new = dataclasses.replace(ctl, enabled=bool(self.controller_enabled.value),
                                  target_overhead=float(self.controller_target.value) / 100.0)
        self.apply(controller=new)

    def _on_workload(self, change):
        if self._is_syncing:
            return
        try:
            self.runner.source.set_workload(change["new"])
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"rejected workload={change['new']!r}: {exc}")

    def _on_pause(self, change):
        try:
            if change["new"]:
                self.runner.pause()
                self.pause_button.description, self.pause_button.icon = "resume", "play"
            else:
                self.runner.resume()
                self.pause_button.description, self.pause_button.icon = "pause", "pause"
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"{type(exc).__name__}: {exc}")

    def _stop(self):
        try:
            self.runner.stop()
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"{type(exc).__name__}: {exc}")

    def _cancel_queue(self):
        try:
            n = self.runner.cancel_queue()
            self.errors.add(f"cancelled {n} waiting request(s)")
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"{type(exc).__name__}: {exc}")

    def _restart(self):
        if self.on_restart is None:
            return
        try:
            self.on_restart()
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"restart failed: {type(exc).__name__}: {exc}")

    def _on_command(self, change):
        text = (change["new"] or "").strip()
        if not text:
            return
        try:
            knobs = parse_assignments(text)
        except ConfigError as exc:
            self.errors.add(str(exc))
            return
        if self.apply(**knobs):
            with self.syncing():
                self.command.value = ""


def parse_assignments(text: str) -> dict:
    """'a=1, b=2.5, c=eager' -> {'a': 1, 'b': 2.5, 'c': 'eager'}; values are Python literals (ints,
    floats, True/False, quoted strings) or a bare word such as a mode name (offload=on-demand)."""
    import ast
    out = {}
    for part in text.replace(";", ",").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ConfigError(f"cannot read {part.strip()!r}: write knob=value, e.g. swap_budget_blocks=32")
        k, v = (s.strip() for s in part.split("=", 1))
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            if not v.replace("-", "_").isidentifier():
                raise ConfigError(f"cannot read the value of {k}: {v!r} is not a number, True/False or a word") from None
            out[k] = v
    return out
