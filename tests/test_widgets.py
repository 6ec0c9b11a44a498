"""Headless widget tests: traits set from Python, effects checked on the engine and in the widgets."""
from __future__ import annotations

import time

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("altair")

from pie_lab import ConfigError, SamplingParams, create_engine   # noqa: E402
from pie_lab.live import LiveRunner                               # noqa: E402
from pie_lab.sources import ListSource                            # noqa: E402

import widgets                                                    # noqa: E402
from widgets import Dashboard, Refresher                          # noqa: E402
from widgets import charts as C                                   # noqa: E402


def wait_for(pred, timeout=15.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def fields(spec) -> set[str]:
    """Every encoding field named anywhere in a Vega-Lite spec."""
    out = set()
    if isinstance(spec, dict):
        if "field" in spec and isinstance(spec["field"], str):
            out.add(spec["field"])
        for k, v in spec.items():
            if k != "datasets":
                out |= fields(v)
    elif isinstance(spec, list):
        for v in spec:
            out |= fields(v)
    return out


@pytest.fixture(scope="module")
def dash():
    d = Dashboard.launch(model="opt-tiny", executor="cpu", request_rate=30.0, refresh_hz=4)
    assert wait_for(lambda: d.history.last is not None and d.timeline.updates > 0, 30), d.errors.text
    yield d
    d.close()


def test_public_api():
    for name in ("Dashboard", "ControlPanel", "OverlapTimeline", "LatencyPanel", "MemoryPanel", "ErrorArea",
                 "Refresher", "WorkloadSource"):
        assert hasattr(widgets, name)


def test_slider_change_reaches_engine(dash):
    eng = dash.engine
    target = 24 if eng.config.swap_budget_blocks != 24 else 20
    dash.controls.swap_budget.value = target                       # what a browser slider does
    assert wait_for(lambda: eng.config.swap_budget_blocks == target), eng.config.swap_budget_blocks
    ev = eng.metrics.events_df()
    knobs = ev[ev["kind"] == "knob"]
    assert not knobs.empty and (knobs["swap_budget_blocks"] == target).any()
    assert wait_for(lambda: f"{target} blocks" in dash.budget_label.value, 5), dash.budget_label.value
    assert wait_for(lambda: f"swap_budget_blocks={target}" in dash.knob_label.value, 5), dash.knob_label.value


def test_other_knobs_reach_engine(dash):
    eng = dash.engine
    dash.controls.prefetch_depth.value = 3
    dash.controls.max_num_seqs.value = 16
    dash.controls.link_bandwidth.value = 2.0
    dash.controls.num_gpu_blocks.value = 48
    assert wait_for(lambda: (eng.config.prefetch_depth, eng.config.max_num_seqs, eng.config.num_gpu_blocks)
                    == (3, 16, 48)), eng.config
    assert abs(eng.config.link_bandwidth_gbps - 2.0) < 1e-6
    dash.controls.controller_target.value = 5.0
    dash.controls.controller_enabled.value = True
    assert wait_for(lambda: eng.config.controller.enabled and abs(eng.config.controller.target_overhead - 0.05) < 1e-9)
    dash.controls.controller_enabled.value = False
    assert wait_for(lambda: not eng.config.controller.enabled)
    dash.controls.request_rate.value = 10.0
    assert dash.runner.source.rate == pytest.approx(10.0, rel=1e-3)
    dash.controls.workload.value = "short"
    assert dash.runner.source.name == "short"


def test_offload_toggle_reaches_engine(dash):
    eng = dash.engine
    assert dash.controls.offload.value == eng.config.offload == "eager"      # the cpu dashboard streams
    assert all(mode in tip for mode, tip in zip(dash.controls.offload.options, dash.controls.offload.tooltips))
    dash.controls.offload.value = "on-demand"                               # what a click does
    assert wait_for(lambda: eng.config.offload == "on-demand"), eng.config.offload
    ev = eng.metrics.events_df()
    assert (ev[ev["kind"] == "knob"]["offload"] == "on-demand").any()
    assert wait_for(lambda: "offload on-demand" in dash.budget_label.value, 5), dash.budget_label.value
    dash.controls.offload.value = "eager"
    assert wait_for(lambda: eng.config.offload == "eager"), eng.config.offload
    assert dash.runner.state == "running" and "offload" not in dash.errors.text, dash.errors.text
    dash.controls.command.value = "offload=lazy"                            # the free-form box: refused, named
    assert "offload='lazy' is not supported; choose 'on-demand'" in dash.errors.text, dash.errors.text
    assert eng.config.offload == "eager"


def test_invalid_values_show_in_error_area(dash):
    dash.errors.clear()
    dash.controls.command.value = "prefetch_depth=0"
    assert "prefetch_depth" in dash.errors.text and "rejected" in dash.errors.text
    assert "prefetch_depth" in dash.errors.widget.value
    assert dash.engine.config.prefetch_depth != 0
    dash.errors.clear()
    assert not dash.controls.apply(swap_budget_blocks=10**9)
    assert "swap_budget_blocks" in dash.errors.text
    dash.controls.command.value = "no_such_knob=3"
    assert "no_such_knob" in dash.errors.text
    dash.controls.command.value = "garbage"
    assert "knob=value" in dash.errors.text
    assert dash.runner.state == "running"


def test_chart_specs_have_expected_fields(dash):
    dash.refresh()
    tl = dash.timeline.spec
    assert {"start_ms", "end_ms", "kind", "layer"} <= fields(tl)
    assert tl["datasets"]["timeline"], "the timeline has no rows"
    assert {r["kind"] for r in tl["datasets"]["timeline"]} >= {"compute"}
    lat = dash.latency.spec
    assert {"t", "swap_budget", "tokens_per_s", "ms", "metric", "label"} <= fields(lat)
    assert len(lat["datasets"]["history"]) >= 1
    # the emulated link's own cost (cpu executor, pie streams by default here) is drawn and counted
    assert "link_cpu_ms" in lat["datasets"]["history"][-1]
    assert wait_for(lambda: dash.refresh() or dash.history.last["link_cpu_ms"] > 0, 10)
    mem = dash.memory.spec
    assert {"blocks", "series", "tier", "part"} <= fields(mem)
    # the data stays small (windowed)
    assert len(tl["datasets"]["timeline"]) <= 3 * dash.engine.spec.num_layers * 3
    assert len(lat["datasets"]["history"]) <= dash.history.points.maxlen
    # the panels' charts also work as regular, valid Altair charts
    for panel in (dash.timeline, dash.latency, dash.memory):
        panel.chart.to_dict()


def test_refresher_runs(dash):
    n0, u0 = dash.refresher.count, dash.latency.updates
    assert wait_for(lambda: dash.refresher.count >= n0 + 2 and dash.latency.updates > u0, 10)
    assert dash.refresher.running
    assert dash.refresher.busy_s / dash.refresher.count < 0.25      # a refresh is cheap


def test_controller_budget_shown_without_echo():
    eng = create_engine("opt-tiny", "sim", policy="pie", num_gpu_blocks=32, num_host_blocks=64, swap_budget_blocks=4)
    runner = LiveRunner(eng, None)
    d = Dashboard(runner, start=False)
    calls = []
    runner.set = lambda **k: calls.append(k)                          # record what the UI sends
    d.controls.sync(eng.config.replace(swap_budget_blocks=12))        # the controller moved the budget
    assert d.controls.swap_budget.value == 12 and calls == []
    d.controls.swap_budget.value = 7                                  # the user moves it
    assert calls == [{"swap_budget_blocks": 7}]
    d.controls.sync(eng.config.replace(swap_budget_blocks=12))        # unchanged in the engine: no pull-back
    assert d.controls.swap_budget.value == 7
    assert d.controls.offload.value == "on-demand" and not d.controls.offload.disabled
    d.controls.sync(eng.config.replace(offload="eager"))              # set elsewhere (runner.set, a notebook cell)
    assert d.controls.offload.value == "eager" and calls[1:] == []
    d.controls.offload.value = "on-demand"
    assert calls[1:] == [{"offload": "on-demand"}]


def test_offload_toggle_is_off_where_nothing_streams():
    eng = create_engine("opt-tiny", "sim", policy="vllm-swap", num_gpu_blocks=32, num_host_blocks=64)
    d = Dashboard(LiveRunner(eng, None), start=False)
    assert d.controls.offload.disabled
    assert "policy vllm-swap" in d.budget_label.value and "offload" not in d.budget_label.value


def test_rate_without_rate_source_is_rejected():
    eng = create_engine("opt-tiny", "sim", policy="pie", num_gpu_blocks=32, num_host_blocks=64)
    runner = LiveRunner(eng, ListSource([]))
    d = Dashboard(runner, start=False)
    assert d.controls.request_rate.disabled
    assert not d.controls.apply(request_rate=5.0)
    assert "request_rate" in d.errors.text


class _Boom:
    def due(self, now):
        raise RuntimeError("source exploded")

    def next_arrival(self):
        return 0.0


def test_engine_thread_error_shows_in_error_area():
    eng = create_engine("opt-tiny", "sim", policy="pie", num_gpu_blocks=32, num_host_blocks=64)

    def broken(sched):
        raise RuntimeError("scheduler exploded")
    eng.scheduler.schedule = broken
    runner = LiveRunner(eng, ListSource([]))
    d = Dashboard(runner, refresh_hz=10)
    try:
        runner.submit([5, 6, 7])
        assert wait_for(lambda: runner.state == "failed")
        assert wait_for(lambda: "scheduler exploded" in d.errors.text, 5), d.errors.text
        assert "scheduler exploded" in d.errors.widget.value
        d.controls.swap_budget.value = 3                   # a knob on a failed engine: reported, not raised
        assert d.errors.text.count("scheduler exploded") >= 1
    finally:
        d.refresher.stop()


def test_a_source_fault_shows_once_and_the_run_goes_on():
    eng = create_engine("opt-tiny", "sim", policy="pie", num_gpu_blocks=32, num_host_blocks=64)
    runner = LiveRunner(eng, _Boom())
    d = Dashboard(runner, refresh_hz=20)
    try:
        assert wait_for(lambda: "source exploded" in d.errors.text, 5), d.errors.text
        d.errors.clear()
        time.sleep(0.3)
        assert "source exploded" not in d.errors.text and runner.state == "running"
    finally:
        d.close()


def test_cancel_queue_button_and_stall_shown():
    eng = create_engine("opt-13b", "sim", num_gpu_blocks=400, max_num_seqs=2, dtype="float16")
    eng.step_run = lambda *args, **kw: eng.step()     # one step at a time, each through the scheduler
    runner = LiveRunner(eng, ListSource([]), stall_steps=10)
    d = Dashboard(runner, refresh_hz=20)
    try:
        runner.pause()
        for _ in range(6):
            runner.submit(list(range(3, 40)), SamplingParams(max_tokens=1500, ignore_eos=True))
        runner.resume()
        assert wait_for(lambda: eng.metrics.totals["iterations"] > 2)
        d.controls.cancel_button.click()
        assert wait_for(lambda: sum(o.finish_reason == "abort" for o in runner.outputs) == 4), d.errors.text
        assert "cancelled 4 waiting" in d.errors.text
        eng.scheduler.schedule = lambda sched: sched  # a scheduler that picks nothing: no progress
        assert wait_for(lambda: "stalled: no token for" in d.errors.text, 30), d.errors.text
        assert wait_for(lambda: "stalled" in d.state_label.value)
    finally:
        d.close()


def test_sim_dashboard_and_restart():
    d = Dashboard.launch(model="opt-13b", executor="sim", request_rate=5.0, refresh_hz=10, workload="sharegpt_like")
    try:
        assert wait_for(lambda: d.history.last is not None, 20), d.errors.text
        assert d.engine.spec.num_layers == 40
        d.controls.model.value = "opt-30b"
        d.controls.restart_button.click()
        assert d.engine.spec.name == "opt-30b" and d.runner.state == "running", d.errors.text
        assert d.runner.source.name == "sharegpt_like" and d.runner.source.rate == pytest.approx(5.0)
        assert wait_for(lambda: d.history.last is not None, 20), d.errors.text
        d.controls.executor.value = "cpu"                      # opt-30b on the cpu executor: refused
        d.controls.restart_button.click()
        assert "too big for the cpu executor" in d.errors.text
        assert d.engine.spec.name == "opt-30b" and d.runner.state == "running"
    finally:
        d.close()


def test_duration_stops_the_run():
    d = Dashboard.launch(model="opt-tiny", executor="sim", request_rate=50.0, refresh_hz=20, duration_s=0.3,
                         num_gpu_blocks=32, num_host_blocks=64)
    try:
        assert wait_for(lambda: d.runner.state == "stopped", 10)
        assert wait_for(lambda: "duration_s" in d.errors.text, 5), d.errors.text   # shown at the next refresh
    finally:
        d.close()


def test_refresher_reports_callback_errors():
    errors = []
    r = Refresher(lambda: 1 / 0, hz=20, on_error=errors.append).start()
    try:
        assert wait_for(lambda: r.count >= 2, 5)
    finally:
        r.stop()
    assert errors and "ZeroDivisionError" in errors[0]
    with pytest.raises(ValueError):
        Refresher(lambda: None, hz=0)


def test_static_builders():
    import pandas as pd
    layers = pd.DataFrame(dict(step=[0, 0, 1, 1], step_start=[0.0, 0.0, 0.01, 0.01], layer=[0, 1, 0, 1],
                               compute_start=[0.001, 0.003, 0.001, 0.003], compute_end=[0.003, 0.005, 0.003, 0.005],
                               copy_issue=[0.0, 0.0, 0.0, float("nan")], copy_start=[0.0, 0.001, 0.0, float("nan")],
                               copy_end=[0.0015, 0.0035, 0.001, float("nan")], wait=[0.0, 0.0005, 0.0, 0.0],
                               bytes=[1000, 1000, 1000, 0]))
    f = C.timeline_frame(layers)
    assert set(f["kind"]) == {"compute", "copy", "stall"}
    stall = f[f["kind"] == "stall"].iloc[0]
    assert stall["end_ms"] == pytest.approx(3.0 + 0.0) and stall["dur_ms"] == pytest.approx(0.5)
    tr = C.transparency_frame(layers, link_bandwidth_gbps=1.0)
    assert list(tr["layer"]) == [0, 1] and tr.loc[1, "transparent"] == False  # noqa: E712
    assert tr.loc[0, "predicted_copy_ms"] == pytest.approx(1000 / 1e9 * 1e3)
    C.timeline_chart(f).to_dict()
    C.transparency_chart(tr).to_dict()
    with pytest.raises(ConfigError):
        widgets.parse_assignments("a")
    assert widgets.parse_assignments("a=1, b=2.5; c=True") == {"a": 1, "b": 2.5, "c": True}
    assert widgets.parse_assignments("offload=on-demand, d='x y'") == {"offload": "on-demand", "d": "x y"}
    with pytest.raises(ConfigError, match="'1..2' is not a number"):
        widgets.parse_assignments("a=1..2")


def test_refresher_marshals_onto_an_event_loop():
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, daemon=True)
    t.start()
    applied = []
    r = Refresher(lambda: threading.get_ident(), hz=20,
                  apply=lambda v: applied.append((v, threading.get_ident())), loop=loop).start()
    try:
        assert wait_for(lambda: len(applied) >= 2, 5)
    finally:
        r.stop()
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
    produced, applied_on = applied[0]
    assert produced != applied_on == t.ident           # collected on the refresher, applied on the loop


def test_stop_and_start_again():
    d = Dashboard.launch(model="opt-tiny", executor="sim", request_rate=50.0, refresh_hz=20,
                         num_gpu_blocks=32, num_host_blocks=64)
    try:
        assert wait_for(lambda: d.history.last is not None, 10)
        d.stop()
        assert d.runner.state == "stopped" and not d.refresher.running
        step = d.engine.metrics.totals["iterations"]
        d.start()
        assert wait_for(lambda: d.engine.metrics.totals["iterations"] > step + 5, 10), "no arrivals after a restart"
    finally:
        d.close()


def test_decision_markers_show_changes_rule_switches_and_folded_holds():
    from pie_lab.core.metrics import Metrics
    from widgets.charts import event_rows
    m = Metrics()
    m.add_event(1.0, "controller", run=("c", None), step=1, old_budget=0, new_budget=8, rule="grow: headroom")
    for i in range(5):
        m.add_event(2.0 + i, "controller", run=("c", ("hold", 8)), step=2 + i, old_budget=8, new_budget=8, rule="hold: x")
    m.add_event(3.5, "knob", step=3, prefetch_depth=3)
    rows = event_rows(m.events_df(), origin=0.0)
    assert [r["kind"] for r in rows] == ["controller", "controller", "knob"]
    assert rows[0]["label"] == "controller grow: headroom: budget 0 -> 8"
    assert rows[1]["label"] == "controller hold: x at budget 8 (x5 over 4.0 s)"
    assert rows[2]["label"] == "knob prefetch_depth=3"
