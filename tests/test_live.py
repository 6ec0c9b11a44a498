"""Live control: knob fuzzing from another thread, error reporting, bounded metrics, trace export."""
import json
import random
import time

import pytest

from pie_lab import ConfigError, create_engine, EngineError, LLM, SamplingParams
from pie_lab.core.trace import chrome_trace, export_chrome_trace
from pie_lab.live import LiveRunner
from pie_lab.sources import ListSource, RateSource
from pie_lab.workloads import Request


def prompts(n, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(3, 500) for _ in range(rng.randint(4, 60))] for _ in range(n)]


OPTIONS = dict(block_size=4, num_gpu_blocks=120, num_host_blocks=400, max_num_seqs=8, policy="pie",
               swap_budget_blocks=20, offload="eager", link_bandwidth_gbps=2.0)   # eager: the knobs hit live streams


def test_knob_fuzzing_from_another_thread_changes_nothing_but_timing():
    ps = prompts(48)
    sp = SamplingParams(max_tokens=48, ignore_eos=True)
    reference = [o.token_ids for o in LLM("opt-tiny", "cpu", **OPTIONS).generate(ps, sp)]

    engine = create_engine("opt-tiny", "cpu", **OPTIONS)
    # arrivals spread over ~2.4 s: the fuzz gets hundreds of tries however fast the machine runs the batch
    runner = LiveRunner(engine, ListSource([Request(i, tuple(p), 48, 0.05 * i) for i, p in enumerate(ps)])).start()
    rng = random.Random(1)
    accepted = rejected = 0
    deadline = time.monotonic() + 60
    while not runner.wait_idle(timeout=0.002):
        assert time.monotonic() < deadline, "the run did not finish: deadlock?"
        knob, value = rng.choice([
            ("swap_budget_blocks", rng.randint(0, 120)), ("swap_budget_blocks", rng.choice([-1, 10**6, 2.5])),
            ("prefetch_depth", rng.randint(1, 4)), ("prefetch_depth", rng.choice([0, -3, "2"])),
            ("max_num_seqs", rng.randint(1, 8)), ("max_num_seqs", 0),
            ("num_gpu_blocks", rng.randint(60, 120)), ("num_gpu_blocks", 121),
            ("link_bandwidth_gbps", rng.uniform(0.05, 2)), ("link_bandwidth_gbps", 0.0),
            ("max_num_batched_tokens", rng.randint(64, 512)), ("block_size", 8),
            ("offload", rng.choice(["eager", "on-demand", "lazy"])),
        ])
        try:
            runner.set(**{knob: value})
            accepted += 1
        except ConfigError as exc:
            assert knob in str(exc)
            rejected += 1
    runner.stop()
    outs = {o.request_id: o.token_ids for o in runner.outputs}
    assert [outs[i] for i in range(len(ps))] == reference
    assert accepted > 50 and rejected > 50, (accepted, rejected)
    engine.check_blocks()
    assert engine.blocks.gpu.num_used == 0 and engine.blocks.host.num_used == 0
    knobs = engine.metrics.events_df().query("kind == 'knob'")
    assert len(knobs) > 5                                   # applied changes are in the trace


def test_switching_offload_mid_run_keeps_tokens_and_host_blocks():
    """offload is live: eager -> on-demand streams the blocks already on the host (none comes back
    to the GPU); on-demand -> eager fills the budget at the next step; greedy tokens never change."""
    ps = prompts(12, seed=2)
    sp = SamplingParams(max_tokens=40, ignore_eos=True)
    reference = [o.token_ids for o in LLM("opt-tiny", "cpu", block_size=4, num_gpu_blocks=240,
                                          max_num_seqs=8).generate(ps, sp)]
    # 240 GPU blocks hold the whole batch: on demand moves nothing, eager streams the budget
    engine = create_engine("opt-tiny", "cpu", **{**OPTIONS, "num_gpu_blocks": 240, "offload": "on-demand"})
    for i, p in enumerate(ps):
        engine.add_request(p, sp, request_id=i)
    outs, step, host_before = {}, 0, []
    switches = {4: "eager", 12: "on-demand", 20: "eager", 23: "on-demand", 30: "eager"}
    while engine.has_unfinished():
        if step in switches:
            engine.update(offload=switches[step])
        host_before.append(engine.blocks.host.num_used)
        for o in engine.step():
            outs[o.request_id] = o.token_ids
        engine.check_blocks()
        step += 1
        assert step < 2000
    assert [outs[i] for i in range(len(ps))] == reference
    it = engine.metrics.iterations_df().set_index("step")
    assert it.loc[:3, "host_blocks_used"].max() == 0               # on demand, GPU room: nothing moves
    assert it.loc[4, "host_blocks_used"] > 0                        # eager: the budget fills at once
    assert it.loc[12:19, "swapped_in"].sum() == 0 if "swapped_in" in it else True
    assert min(it.loc[12:19, "streamed_blocks"]) > 0                # on demand keeps streaming what is there
    assert it.loc[12:19, "offload_blocks"].sum() == 0 if "offload_blocks" in it else True
    knobs = engine.metrics.events_df().query("kind == 'knob'")
    assert list(knobs["offload"].dropna()) == list(switches.values())
    assert engine.blocks.gpu.num_used == 0 and engine.blocks.host.num_used == 0


def test_an_engine_thread_error_reaches_the_caller():
    engine = create_engine("opt-tiny", "cpu", block_size=4, num_gpu_blocks=64)

    def broken(sched):          # outside the executor: not a contained fault (see test_reliability)
        raise RuntimeError("kernel exploded")

    engine.scheduler.schedule = broken
    runner = LiveRunner(engine).start()
    runner.submit([5, 6, 7], SamplingParams(max_tokens=4))
    deadline = time.monotonic() + 10
    while runner.state != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(EngineError, match="kernel exploded"):
        runner.set(max_num_seqs=4)
    assert isinstance(runner.error, RuntimeError)


def test_pause_resume_stop_and_rate_changes():
    engine = create_engine("opt-tiny", "cpu", block_size=4, num_gpu_blocks=200)
    make = lambda rng, i, t: Request(i, tuple(rng.randrange(3, 500) for _ in range(8)), 4, t)  # noqa: E731
    runner = LiveRunner(engine, RateSource(make, rate=50.0, seed=0)).start()
    time.sleep(0.3)
    runner.pause()
    assert runner.state == "paused"
    done = engine.metrics.totals["requests"]
    time.sleep(0.2)
    assert engine.metrics.totals["requests"] == done
    runner.resume()
    time.sleep(0.3)
    runner.set(request_rate=0.0)
    with pytest.raises(ConfigError, match="request_rate"):
        runner.set(request_rate=-1)
    assert runner.wait_idle(timeout=10)
    snap = runner.snapshot()
    assert snap.state == "running" and not snap.iterations.empty and snap.error is None
    runner.stop()
    assert runner.state == "stopped" and engine.metrics.totals["requests"] > done


def test_pause_returns_after_the_step_in_progress():
    engine = create_engine("opt-tiny", "cpu", block_size=4, num_gpu_blocks=200)
    step, in_step = engine.step, []

    def slow_step():
        in_step.append(True)
        time.sleep(0.2)                      # pause() lands in the middle of this
        out = step()
        in_step.pop()
        return out
    engine.step = slow_step
    runner = LiveRunner(engine, ListSource([Request(i, (5, 6, 7, 8), 50, 0.0) for i in range(4)])).start()
    deadline = time.monotonic() + 10
    while not in_step:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    assert runner.pause() is True
    assert not in_step, "pause() returned while a step was still running"
    iterations = engine.metrics.totals["iterations"]
    time.sleep(0.3)
    assert engine.metrics.totals["iterations"] == iterations and runner.state == "paused"
    runner.resume()
    assert runner.wait_idle(timeout=30)
    runner.stop()


def test_metrics_memory_stays_bounded_on_a_long_run():
    engine = create_engine("opt-13b", "sim", hardware="H200", policy="pie", swap_budget_blocks=64,
                           num_gpu_blocks=400, dtype="float16")
    engine.metrics.__init__(max_iterations=500, max_layer_rows=2000, max_requests=100, max_events=50)
    rng = random.Random(0)
    for i in range(3000):
        engine.add_request([rng.randrange(3, 5000) for _ in range(rng.randint(8, 64))],
                           SamplingParams(max_tokens=rng.randint(4, 32), ignore_eos=True))
    steps = 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    m = engine.metrics
    assert steps > 500 and m.totals["requests"] == 3000
    assert len(m.iterations) == 500 and m.num_layer_rows == 2000 and len(m.layers_df()) == 2000 and len(m.requests) == 100
    assert len(m.iterations_df()) == 500


def test_trace_exports_valid_chrome_json(tmp_path):
    engine = create_engine("opt-tiny", "cpu", policy="pie", block_size=4, num_gpu_blocks=100,
                           swap_budget_blocks=30, link_bandwidth_gbps=0.5,
                           controller=dict(enabled=True, warmup_iterations=1, window=2))
    for p in prompts(8):
        engine.add_request(p, SamplingParams(max_tokens=20, ignore_eos=True))
    engine.update(prefetch_depth=3)
    while engine.has_unfinished():
        engine.step()
    path = export_chrome_trace(engine.metrics, tmp_path / "trace.json")
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"iterations", "compute", "copy stream", "stall", "controller", "knobs"} <= names
    for e in events:
        assert e["ph"] in {"M", "X", "i", "C"} and isinstance(e["pid"], int)
        if e["ph"] == "X":
            assert e["dur"] >= 0 and isinstance(e["ts"], float | int) and "tid" in e
    cats = {e.get("cat") for e in events}
    assert {"compute", "copy", "iteration", "controller", "knob"} <= cats
    json.dumps(chrome_trace(engine.metrics), allow_nan=False)     # strict JSON: no NaN anywhere


def test_a_request_that_cannot_fit_is_rejected_not_fatal():
    engine = create_engine("opt-tiny", "cpu", block_size=4, num_gpu_blocks=64, max_model_len=64)
    reqs = [Request(0, tuple(range(3, 100)), 4, 0.0), Request(1, (5, 6, 7), 4, 0.0)]
    runner = LiveRunner(engine, ListSource(reqs)).start()
    assert runner.wait_idle(timeout=10)
    runner.stop()
    assert runner.rejected == 1 and [o.request_id for o in runner.outputs] == [1]
    rejected = engine.metrics.events_df().query("kind == 'rejected'")
    assert rejected["request_id"].tolist() == [0] and "context window" in rejected["reason"].iloc[0]


def test_paused_time_does_not_count_on_the_run_clock():
    engine = create_engine("opt-tiny", "cpu", block_size=4, num_gpu_blocks=200)
    make = lambda rng, i, t: Request(i, (5, 6, 7), 2, t)  # noqa: E731
    source = RateSource(make, rate=20.0, seed=0)
    runner = LiveRunner(engine, source).start()
    time.sleep(0.3)
    runner.pause()
    time.sleep(0.3)
    before = source._count
    time.sleep(0.6)
    runner.resume()
    time.sleep(0.05)
    assert source._count - before <= 4          # no burst for the paused 0.9 s (20 req/s would be ~18)
    runner.stop()


def test_metrics_buffers_are_bounded_by_bytes_not_rows():
    from pie_lab.core.metrics import BUFFER_SHARES, Metrics
    m = Metrics(max_bytes=2**20)
    small = dict(request_id=0, e2e=1.0)
    large = dict(small, **{f"f{i}": float(i) for i in range(40)})
    for i in range(20_000):
        m.add_request(dict(small, request_id=i))
    n_small = len(m.requests)
    for i in range(20_000):
        m.add_request(dict(large, request_id=i))
    n_large = len(m.requests)
    cap = BUFFER_SHARES["requests"] * 2**20
    assert 0 < n_large < n_small < 20_000 and m.nbytes["requests"] <= cap
    assert n_large * m.requests.row_bytes > 0.9 * cap           # full, by bytes
    assert m.totals["requests"] == 40_000


def test_a_knob_change_outlives_ten_seconds_of_controller_holds():
    """The sim's virtual clock: 10 s of a controller that holds (on demand, the GPU has room) after
    set(); its holds fold into a few events, and the knob change stays in the snapshot."""
    engine = create_engine("opt-13b", "sim", num_gpu_blocks=1500, num_host_blocks=400, max_num_seqs=8, policy="pie",
                           offload="on-demand", controller=dict(enabled=True, window=1, warmup_iterations=1))
    source = RateSource(lambda rng, i, t: Request(i, tuple(range(3, 3 + rng.randint(20, 200))), 64, t), rate=8.0)
    runner = LiveRunner(engine, source).start()
    runner.set(prefetch_depth=3, max_num_seqs=16)
    start, deadline = engine.clock.now(), time.monotonic() + 60
    while engine.clock.now() < start + 10.0:
        assert time.monotonic() < deadline, "10 s of virtual time took over a minute"
        time.sleep(0.01)
    snap = runner.snapshot()
    runner.stop()
    knobs = snap.events.query("kind == 'knob'")
    assert (knobs["prefetch_depth"] == 3).any() and (knobs["max_num_seqs"] == 16).any()
    ctl = snap.events.query("kind == 'controller'")
    assert ctl["count"].sum() > 300 > 10 * len(ctl)        # more decisions than the snapshot's 200 rows, in a few events
    holds = ctl[ctl["rule"] == "hold: on-demand offload leaves the budget unused"]
    assert holds["count"].sum() > 0.9 * ctl["count"].sum() and (holds["until"] > holds["time"]).all()


def test_decisions_never_push_out_knob_changes():
    from pie_lab.core.metrics import Metrics
    m = Metrics(max_events=50)
    m.add_event(0.0, "knob", step=0, prefetch_depth=3)
    for i in range(1, 500):                  # every decision distinct: nothing folds
        m.add_event(float(i), "controller", run=("controller", None), step=i, old_budget=i, new_budget=i + 1,
                    rule="grow")
    ev = m.events_df(last=200)
    assert ev.iloc[0]["kind"] == "knob" and (ev["kind"] == "controller").sum() == 50
    assert list(ev["time"]) == sorted(ev["time"])
    for i in range(3):                       # identical holds fold into one event with a count and a span
        m.add_event(600.0 + i, "controller", run=("controller", ("hold", 500)), step=600 + i, old_budget=500,
                    new_budget=500, rule="hold")
    last = m.events_df().iloc[-1]
    assert (last["count"], last["time"], last["until"], last["step"], last["last_step"]) == (3, 600.0, 602.0, 600, 602)
