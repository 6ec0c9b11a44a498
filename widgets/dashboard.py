"""The dashboard: control panel + overlap timeline + latency + memory + readout + error area.

Threads: the engine runs on the LiveRunner's thread; a `Refresher` thread polls
`runner.snapshot()` at `refresh_hz` and redraws the panels. The engine thread never waits on
the UI: the snapshot copies bounded buffers under a short lock and all shaping, chart building
and widget sends happen on the refresher thread (thread-safe comm sends need ipykernel>=7.1;
with an older kernel pass `loop=` to marshal the widget updates onto the kernel's event loop).
Widget callbacks only hand values to `runner.set`.
"""
from __future__ import annotations

import html
import threading
import time
from typing import Any, Callable

import ipywidgets as W

from pie_lab import load_tokenizer, ControllerConfig, create_engine, EngineConfig, spec_from_model
from pie_lab.live import LiveRunner

from .chart_data import decision_text
from .controls import ControlPanel, ErrorArea
from .panels import History, LatencyPanel, MemoryPanel, OverlapTimeline
from .answers import AnswersPanel
from .workload import WorkloadSource, engine_capacity, prompt_text

# The cpu dashboard is there to show streaming: offload "eager" keeps the budget's blocks on the host
# (and their copies on the timeline) even while the GPU pool has room; the engine's default,
# "on-demand", moves blocks only under memory pressure (pass offload="on-demand" to see it).
CPU_DEFAULTS = dict(policy="pie", num_gpu_blocks=64, num_host_blocks=256, swap_budget_blocks=16,
                    offload="eager", link_bandwidth_gbps=0.5)
SIM_DEFAULTS = dict(policy="pie", controller=ControllerConfig(enabled=True))
CPU_MAX_PARAMS = 300e6
REAL_MODEL = "smollm2-135m"     # answers in words; launch()'s default          # larger models belong on the sim executor (or cuda)


class Refresher:
    """Calls `callback()` every 1/hz seconds on a daemon thread; errors go to `on_error`.

    `loop`: an asyncio loop to run `apply(result)` on (marshalled with call_soon_threadsafe);
    without it both run on the refresher thread.
    """

    def __init__(self, callback: Callable[[], Any], hz: float = 2.0, on_error: Callable[[str], None] | None = None,
                 apply: Callable[[Any], None] | None = None, loop=None, name: str = "pie-refresher"):
        if not 0 < hz <= 30:
            raise ValueError(f"refresh rate hz={hz} is out of range: allowed (0, 30]")
        self.callback, self.apply, self.loop = callback, apply, loop
        self.interval = 1.0 / hz
        self.on_error = on_error or (lambda m: None)
        self.count = 0
        self.busy_s = 0.0                  # time spent inside callbacks (for overhead accounting)
        self.last_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.name = name

    def start(self) -> "Refresher":
        if self._thread and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    def tick(self) -> None:
        t0 = time.perf_counter()
        try:
            result = self.callback()
            if self.apply is not None:
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self._apply_safely, result)
                else:
                    self.apply(result)
        except Exception as exc:  # noqa: BLE001 - surface, keep refreshing
            self.on_error(f"dashboard refresh failed: {type(exc).__name__}: {exc}")
        self.last_s = time.perf_counter() - t0
        self.busy_s += self.last_s
        self.count += 1

    def _apply_safely(self, result):
        try:
            self.apply(result)
        except Exception as exc:  # noqa: BLE001
            self.on_error(f"dashboard update failed: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay < 0:                  # fell behind: do not try to catch up
                nxt, delay = time.monotonic(), 0.0
            self._stop.wait(delay)


class Dashboard:
    """One call: `Dashboard(runner).show()` or `Dashboard.launch(model=..., executor=..., **options)`.

    Attributes: runner, engine, controls (ControlPanel), timeline (OverlapTimeline), latency
    (LatencyPanel), memory (MemoryPanel), errors (ErrorArea), readout / budget_label /
    knob_label / state_label (HTML), refresher (Refresher), widget (the whole VBox).
    """

    def __init__(self, runner: LiveRunner, refresh_hz: float = 2.0, steps: int = 48, layer_steps: int = 3,
                 duration_s: float | None = None, start: bool = True, restart: Callable | None = None,
                 loop=None, history_points: int = 240, title: str = "pie_lab live"):
        self.runner = runner
        self.steps, self.layer_steps = steps, layer_steps
        self.duration_s = duration_s
        self._restart_factory = restart
        self.history = History(points=history_points)
        self._deadline = None
        self._update_lock = threading.Lock()
        self.errors = ErrorArea()
        self.controls = ControlPanel(runner, self.errors, on_restart=self.restart if restart else None)
        spec = runner.engine.spec
        self.timeline = OverlapTimeline(max_steps=layer_steps)
        self.latency = LatencyPanel()
        self.memory = MemoryPanel(host_capacity=runner.engine.host_capacity, num_layers=spec.num_layers)
        self.title = W.HTML(f"<h3 style='margin:4px 0'>{html.escape(title)}</h3>")
        self.state_label = W.HTML()
        self.state_label.add_class("pie-state")
        self.budget_label = W.HTML()
        self.budget_label.add_class("pie-budget")
        self.knob_label = W.HTML()
        self.knob_label.add_class("pie-last-knob")
        self.controller_label = W.HTML()
        self.controller_label.add_class("pie-last-controller")
        self.readout = W.VBox([self.state_label, self.budget_label, self.knob_label, self.controller_label],
                              layout=W.Layout(border="1px solid #ddd", padding="4px", width="380px"))
        self.readout.add_class("pie-readout")
        self.answers = AnswersPanel(getattr(runner.source, "tokenizer", None), prompt_text(runner.source))
        charts = W.VBox([self.timeline.widget, self.latency.widget, self.memory.widget, self.answers.widget])
        self.widget = W.VBox([self.title, W.HBox([W.VBox([self.readout, self.controls.widget]), charts]),
                              self.errors.box])
        self.widget.add_class("pie-dashboard")
        self.refresher = Refresher(self._collect, refresh_hz, on_error=self.errors.add, apply=self._apply, loop=loop)
        self.last_snapshot = None
        self._stall_shown = None
        self._update_readout_idle()
        if start:
            self.start()

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def launch(cls, model: Any = REAL_MODEL, executor: str = "cpu", workload: str | None = None,
               request_rate: float | None = None, seed: int = 0, refresh_hz: float = 2.0,
               duration_s: float | None = None, show: bool = False, **options: Any) -> "Dashboard":
        """Build an engine, a workload source and a runner, start them, and return the dashboard.

        Default: the real SmolLM2-135M-Instruct answering data/prompts.jsonl (workload "instructions")
        at 1 request/s; a model without a tokenizer defaults to alpaca_like at 20 requests/s."""
        runner = _build_runner(model, executor, workload, request_rate, seed, options)

        def restart(model_, executor_, config_, workload_, rate_):
            return _build_runner(model_, executor_, workload_, rate_, seed, {}, config_)

        dash = cls(runner, refresh_hz=refresh_hz, duration_s=duration_s, restart=restart)
        runner.start()
        return dash.show() if show else dash

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> "Dashboard":
        if self.runner.state == "stopped" and self.runner.error is None:
            src = self.runner.source
            if hasattr(src, "set_rate") and getattr(src, "rate", None) is not None:
                src.set_rate(src.rate, 0.0)       # a (re)started run counts time from 0 again
            self.runner.start()
        if self.duration_s is not None:
            self._deadline = time.monotonic() + self.duration_s
        self.refresher.start()
        return self

    def stop(self) -> None:
        """Stop the engine and the refresher (after a last redraw)."""
        self._halt("")
        self.refresh()

    def _halt(self, prefix: str) -> None:
        """Stop the refresher, then the engine thread; an engine error goes to the error area."""
        self.refresher.stop()
        try:
            self.runner.stop()
        except Exception as exc:  # noqa: BLE001
            self.errors.add(f"{prefix}{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.stop()
        try:
            self.runner.engine.close()
        except Exception:  # noqa: BLE001
            pass

    def show(self) -> "Dashboard":
        from IPython.display import display
        display(self.widget)
        return self

    def _ipython_display_(self):
        from IPython.display import display
        display(self.widget)

    def wait(self, seconds: float) -> None:
        """Let the engine run for `seconds` (blocks the cell: for scripts and short test runs)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and self.runner.state in ("running", "paused"):
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def restart(self, model: Any = None, executor: str | None = None) -> None:
        """Rebuild the engine with the chosen executor and model, keeping the knobs where they apply.

        Needs the dashboard to know how to build a runner: `Dashboard.launch` gives it one; with
        `Dashboard(runner, restart=factory)`, `factory(model, executor, config, workload, rate)`
        must return a new, unstarted LiveRunner.
        """
        if self._restart_factory is None:
            raise RuntimeError("this dashboard wraps a runner it did not build: use Dashboard.launch to restart")
        model = model or self.controls.model.value
        executor = executor or self.controls.executor.value
        old = self.runner.engine
        spec = spec_from_model(model) if isinstance(model, str) else None
        if executor == "cpu" and spec is not None and spec.num_params() > CPU_MAX_PARAMS:
            raise RuntimeError(f"{model} has {spec.num_params() / 1e9:.1f}B parameters: too big for the cpu "
                               "executor; pick executor 'sim' (modelled timings) or 'cuda'")
        cfg = old.config
        if model != old.spec.name or executor != old.executor_name:
            base = {k: v for k, v in cfg.to_dict().items()
                    if k not in ("num_gpu_blocks", "num_host_blocks", "gpu_kv_limit_gb", "swap_budget_blocks",
                                 "max_model_len")}
            base.update(CPU_DEFAULTS if executor == "cpu" else SIM_DEFAULTS if executor == "sim" else {})
            cfg = EngineConfig(**base)
        self._halt("the old engine had failed: ")
        old.close()
        src = self.runner.source
        workload = getattr(src, "name", None) or self.controls.workload.value
        rate = float(getattr(src, "rate", None) or self.controls.request_rate.value)
        runner = self._restart_factory(model, executor, cfg, workload, rate)
        with self._update_lock:
            self.runner = runner
            self.answers = self._rebind_answers(runner)
            self.history.reset()
            self.memory.host_capacity = runner.engine.host_capacity
            self.memory.num_layers = runner.engine.spec.num_layers
        self.controls.bind(runner)
        runner.start()
        self.start()

    # -- refreshing -------------------------------------------------------------------------
    def _collect(self):
        """On the refresher thread: take a snapshot, and stop the run once its time is up."""
        if self._deadline is not None and time.monotonic() > self._deadline and self.runner.state == "running":
            self._deadline = None
            self.runner.stop()
            self.errors.add(f"the run reached duration_s={self.duration_s} and was stopped; "
                            "call dash.start() to run again")
        try:
            return self.runner.snapshot(steps=self.steps, layer_steps=self.layer_steps)
        except Exception as exc:  # noqa: BLE001 - the engine thread failed: reported once
            self.errors.add(f"engine error: {exc}")
            return None

    def _apply(self, snap) -> None:
        if snap is None:
            return
        with self._update_lock:
            self.last_snapshot = snap
            if snap.error:
                self.errors.add(f"engine error: {snap.error}")
            for f in snap.faults:                 # contained: the run goes on; each shown once
                hit = f" ({f['requests']} request(s) failed)" if f.get("requests") else ""
                self.errors.add(f"{f['where']} fault{hit}: {f.get('message', '')} {f.get('note', '')}".rstrip())
            if snap.stalled and snap.stalled != self._stall_shown:
                self.errors.add(f"stalled: {snap.stalled}")
            self._stall_shown = snap.stalled
            self._update_readout(snap)
            self.controls.sync(snap.config)
            self.answers.update(list(self.runner.outputs)[-self.answers.rows:])
            if not self.history.update(snap):
                return                           # paused, stopped or idle: nothing new to draw
            for panel in (self.timeline, self.latency, self.memory):
                panel.update(snap, self.history)

    def refresh(self) -> None:
        """One redraw now, on the calling thread."""
        self._apply(self._collect())

    def _update_readout_idle(self):
        c = self.runner.engine.config
        self.budget_label.value = _budget_html(c.swap_budget_blocks, c)
        self.state_label.value = f"state: <b>{self.runner.state}</b>"

    def _update_readout(self, snap) -> None:
        c = snap.config
        it = snap.iterations
        extra = ""
        if not it.empty:
            r = it.iloc[-1]
            extra = (f" &middot; step {int(r['step'])} &middot; batch {int(r['batch_size'])} &middot; "
                     f"GPU {int(r['gpu_blocks_used'])}/{int(r['gpu_blocks_limit'])} &middot; "
                     f"host {int(r['host_blocks_used'])} blocks")
        eng = self.runner.engine
        state = "stalled" if snap.stalled and snap.state == "running" else snap.state
        self.state_label.value = (f"state: <b>{state}</b> &middot; {html.escape(str(eng.spec.name))} on "
                                  f"{eng.executor_name}{extra}")
        self.budget_label.value = _budget_html(c.swap_budget_blocks, c)
        ev = snap.events
        if ev is not None and not ev.empty:
            knobs = ev[ev["kind"] == "knob"]
            if not knobs.empty:
                rec = knobs.iloc[-1].dropna().to_dict()
                fields = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.items() if k not in ("time", "kind", "step"))
                self.knob_label.value = f"last knob change (step {int(rec.get('step', -1))}): {html.escape(fields)}"
            ctl = ev[ev["kind"] == "controller"]
            if not ctl.empty:
                rec = ctl.iloc[-1].to_dict()
                over = rec.get("overhead")
                over_s = f", measured overhead {over * 100:.1f}%" if isinstance(over, float) and over == over else ""
                self.controller_label.value = (f"controller (step {int(rec.get('step', -1))}): "
                                               f"{html.escape(decision_text(rec))}{over_s}")

    def snapshot(self):
        return self.runner.snapshot(steps=self.steps, layer_steps=self.layer_steps)

    def _rebind_answers(self, runner) -> AnswersPanel:
        self.answers.tokenizer = getattr(runner.source, "tokenizer", None)
        self.answers.prompt_text = prompt_text(runner.source)
        return self.answers

    @property
    def engine(self):
        return self.runner.engine


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _budget_html(budget: int, c) -> str:
    ctl = c.controller
    mode = (f"controller on, target {ctl.target_overhead * 100:.1f}% stall" if ctl.enabled and c.policy == "pie"
            else "set by hand")
    offload = f" &middot; offload {c.offload}" if c.budgeted else ""
    return (f"swap budget: <b>{budget} blocks</b> ({mode}){offload} &middot; prefetch depth {c.prefetch_depth} "
            f"&middot; link {c.link_bandwidth_gbps:.4g} GB/s &middot; policy {c.policy}")


def _build_runner(model, executor, workload, request_rate, seed, options, config: EngineConfig | None = None):
    if config is None:
        defaults = CPU_DEFAULTS if executor == "cpu" else SIM_DEFAULTS if executor == "sim" else {"policy": "pie"}
        opts = {**defaults, **options}
        engine = create_engine(model, executor, **opts)
    else:
        engine = create_engine(model, executor, config=config)
    tokenizer = load_tokenizer(model) if executor != "sim" else None
    if workload is None or (workload == "instructions" and tokenizer is None):
        workload = "instructions" if tokenizer is not None else "alpaca_like"
    if request_rate is None:
        request_rate = 1.0 if workload == "instructions" else 20.0
    source = WorkloadSource(workload, request_rate, engine.spec.vocab_size, engine.max_model_len, seed=seed,
                            capacity=engine_capacity(engine), tokenizer=tokenizer)
    return LiveRunner(engine, source)
