import json
import time

import pytest

from pie_lab.config import EngineConfig
from pie_lab.sim.overlap import schedule_layers
from pie_lab.core.plan import CopyRange, SeqWork, StepOutput, StepPlan, StepTiming, StreamPlan
from pie_lab.errors import ConfigError, EngineError
from pie_lab.executors.base import Executor, create_executor
from pie_lab.executors.sim import SimExecutor
from pie_lab.model_spec import named_spec
from pie_lab.sampling import SamplingParams
from pie_lab.sim import load_preset

SP = SamplingParams(max_tokens=8)
CFG = EngineConfig(hardware="H200", dtype="float16", block_size=16)


def sim(model="opt-13b", config=CFG, **kw):
    ex = SimExecutor(model, config, **kw)
    ex.initialize(1000, 1000)
    return ex


def decode_plan(step_id, batch=16, ctx=512, stream=None, sampling=SP):
    seqs = tuple(SeqWork(i, (11,), ctx - 1, tuple(range(i * 40, i * 40 + ctx // 16 + 1)), True, sampling, 3)
                 for i in range(batch))
    return StepPlan(step_id, seqs, stream=stream)


def test_protocol_and_tokens_for_every_sampled_sequence():
    ex = sim()
    assert isinstance(ex, Executor) and ex.name == "sim" and ex.emulated_link
    assert isinstance(create_executor("sim", "opt-tiny", CFG), SimExecutor)
    chunk = SeqWork(100, tuple(range(3, 67)), 0, (5, 6, 7, 8), False, SP, 0)     # prefill chunk, no sample
    last = SeqWork(101, tuple(range(3, 35)), 0, (9, 10), True, SP, 0)
    plan = StepPlan(0, (chunk, last) + decode_plan(0, batch=4).seqs)
    out = ex.execute(plan)
    assert set(out.token_ids) == {101, 0, 1, 2, 3}
    eos = ex.spec.hf_config["eos_token_id"]
    assert all(3 <= t < ex.spec.vocab_size and t != eos for t in out.token_ids.values())
    again = sim().execute(plan)
    assert again.token_ids == out.token_ids                     # deterministic
    assert len(set(out.token_ids.values())) > 1
    assert out.token_ids[0] == ex.token_for(0, 512)


def test_tokens_never_eos_or_stop_ids_even_in_a_tiny_vocab():
    ex = sim("opt-tiny")
    seen = set()
    stop = SamplingParams(max_tokens=8, stop_token_ids=tuple(range(3, 300)))
    for step in range(200):
        out = ex.execute(decode_plan(step, batch=8, ctx=32 + step, sampling=stop))
        seen |= set(out.token_ids.values())
    assert seen and min(seen) >= 300 and max(seen) < 512 and 2 not in seen


def test_clock_advances_by_each_duration():
    ex = sim()
    t = 0.0
    for step in range(3):
        out = ex.execute(decode_plan(step, batch=8 * (step + 1)))
        t += out.timing.duration
        assert ex.clock.now() == pytest.approx(t)
        assert out.timing.duration > 0 and out.timing.emulated_link
    ex.clock.sleep_until(ex.clock.now() + 5)
    assert ex.clock.now() == pytest.approx(t + 5)


def _stream_run(bandwidth_gbps, depth=2, blocks=64):
    ex = sim(config=CFG.replace(link_bandwidth_gbps=bandwidth_gbps, link_latency_us=0.0))
    stream = StreamPlan.build(depth, list(range(blocks)))
    first = ex.execute(decode_plan(0, stream=stream))
    second = ex.execute(decode_plan(1, stream=stream))
    return ex, first.timing, second.timing


def test_timings_match_schedule_layers_when_prestaged():
    ex, first, second = _stream_run(55.5)
    cm = ex.cost_model
    plan = decode_plan(1, stream=StreamPlan.build(2, list(range(64))))
    n = cm.spec.num_layers
    compute, copy = cm.layer_compute_times(plan), cm.stream_copy_time(plan)
    start = second.layers[0].compute_start
    expect = schedule_layers(compute, [copy] * n, 2, [cm.stream_layer_bytes(plan)] * n, prestaged=2, start=start)
    assert list(second.layers[2:]) == expect[2:]
    for got, want in zip(second.layers[:2], expect[:2]):
        assert (got.compute_start, got.compute_end, got.wait, got.bytes) == (want.compute_start, want.compute_end,
                                                                             want.wait, want.bytes)
        # prefetched: issued in the previous step's tail, landed in time
        assert got.copy_issue < 0 and got.copy_end <= got.compute_start
        assert got.copy_time == pytest.approx(copy)
    assert all(l.copy_start >= 0 for l in first.layers)         # nothing prefetched before the first step
    assert first.layers[0].wait > 0


def test_new_blocks_are_copied_at_the_start_of_a_prefetched_step():
    ex, first, second = _stream_run(55.5, blocks=16)
    previous = StreamPlan.build(2, list(range(16)))
    grown = StreamPlan.build(2, list(range(1, 16)) + [40, 41, 42, 50])      # one left, four new
    assert grown.new_since(previous) == (CopyRange(40, 40, 3), CopyRange(50, 50, 1))
    third = ex.execute(decode_plan(2, stream=grown)).timing
    cm = ex.cost_model
    tail = cm.copy_time(4 * cm.block_bytes_per_layer, calls=2)
    l0 = third.layers[0]
    assert l0.copy_start < 0 and l0.copy_time == pytest.approx(cm.copy_time(16 * cm.block_bytes_per_layer) + tail)
    assert l0.bytes == 19 * cm.block_bytes_per_layer
    # after a change of depth nothing staged is reusable: copied whole, from the step's start
    fourth = ex.execute(decode_plan(3, stream=StreamPlan.build(3, list(range(1, 21))))).timing
    assert fourth.layers[0].copy_start >= 0 and fourth.stall > 0


def test_no_stall_when_copy_is_below_compute_and_prestaged():
    ex, first, second = _stream_run(55.5, blocks=16)
    cm = ex.cost_model
    plan = decode_plan(1, stream=StreamPlan.build(2, list(range(16))))
    assert cm.stream_copy_time(plan) < cm.layer_compute_times(plan)[0]
    assert first.stall > 0                                      # layer 0 waited for its first copy
    assert second.stall == 0.0
    assert second.duration < first.duration


def test_stall_when_copy_is_above_compute():
    ex, first, second = _stream_run(2.0)
    plan = decode_plan(1, stream=StreamPlan.build(2, list(range(64))))
    per_layer = ex.cost_model.stream_copy_time(plan) - ex.cost_model.layer_compute_times(plan)[0]
    assert per_layer > 0
    assert second.stall > 0.5 * per_layer * ex.spec.num_layers
    # a changed staged set is not prefetched
    third = ex.execute(decode_plan(2, stream=StreamPlan.build(2, list(range(1, 65))))).timing
    assert third.layers[0].copy_time > 0


def test_late_tail_prefetch_is_a_stall_of_layer_zero():
    ex, first, second = _stream_run(2.0, depth=4)
    assert second.layers[0].wait > 0 and second.layers[0].copy_start < 0
    assert all(l.wait == 0 for l in second.layers[1:4])
    assert second.layers[3].compute_start >= second.layers[3].copy_end


def test_set_link_changes_copy_time():
    ex = sim()
    plan = decode_plan(0, stream=StreamPlan.build(2, list(range(64))))
    slow = ex.cost_model.stream_copy_time(plan)
    bandwidth, latency = ex.link                   # the H200 preset's unless the config sets one
    assert bandwidth == ex.hardware.h2d_gbps
    ex.set_link(10 * bandwidth, latency)
    lat = latency * 1e-6 * len(plan.stream.ranges)
    assert ex.cost_model.stream_copy_time(plan) == pytest.approx(lat + (slow - lat) / 10)
    assert ex.link == (10 * bandwidth, latency)
    with pytest.raises(ConfigError, match="link_bandwidth_gbps"):
        ex.set_link(0.0, 1.0)


def test_replay_reproduces_tokens_and_durations():
    timing = StepTiming(0.25, blocking_copy_time=0.01)
    recorded = [StepOutput({0: 42, 1: 43}, timing), StepOutput({0: 44, 1: 45}, StepTiming(0.5))]
    ex = sim(replay=recorded)
    plans = [decode_plan(0, batch=2), decode_plan(1, batch=2)]
    assert ex.execute(plans[0]).token_ids == {0: 42, 1: 43}
    assert ex.execute(plans[1]).timing.duration == 0.5
    assert ex.clock.now() == pytest.approx(0.75)
    with pytest.raises(EngineError, match="no step 2"):
        ex.execute(decode_plan(2, batch=2))
    with pytest.raises(EngineError, match="no token for sequence"):
        sim(replay=recorded).execute(decode_plan(0, batch=3))


def test_capabilities_are_declared():
    """The sim takes summarised plans and runs decode runs, but not while replaying a recorded
    run; an executor on ExecutorBase does neither, and says so when asked."""
    assert sim().summarised_plans and sim().decode_runs
    replaying = sim(replay=[StepOutput({}, StepTiming(0.1))])
    assert not replaying.summarised_plans and not replaying.decode_runs
    from fake_executor import FakeExecutor, make_engine
    fake = FakeExecutor("opt-tiny", CFG)
    assert isinstance(fake, Executor) and not fake.summarised_plans and not fake.decode_runs
    with pytest.raises(EngineError, match="decode_runs is False"):
        fake.time_decode_step(StepPlan(0, ()))
    fake.recover()                               # a no-op by default
    engine = make_engine(EngineConfig(block_size=4))
    engine.add_request([5, 6, 7], SamplingParams(max_tokens=2))
    assert engine.step_run() == [] and engine.metrics.totals["iterations"] == 1     # step() on it
    closed = sim()
    closed.close()
    with pytest.raises(EngineError, match="closed"):
        closed.time_decode_step(StepPlan(0, ()))


def test_sizing_and_model_sources(tmp_path):
    ex = SimExecutor("opt-13b", CFG)
    cm = ex.cost_model
    hw = load_preset("H200")
    expect = int((hw.gpu_memory_gib * 2**30 * 0.9 - cm.weight_bytes) // named_spec("opt-13b").kv_block_bytes(16, "float16"))
    assert ex.default_num_gpu_blocks(CFG) == expect
    assert ex.default_num_gpu_blocks(CFG.replace(hardware="GH200")) < expect
    with pytest.raises(ConfigError, match="no room for KV"):
        SimExecutor("opt-66b", CFG.replace(hardware="L4")).default_num_gpu_blocks(CFG.replace(hardware="L4"))
    with pytest.raises(EngineError, match="initialize"):
        SimExecutor("opt-tiny", CFG).execute(decode_plan(0))
    folder = tmp_path / "my-llama"
    folder.mkdir()
    from pie_lab.model_spec import NAMED_SHAPES
    (folder / "config.json").write_text(json.dumps(NAMED_SHAPES["llama-2-7b"]))
    assert SimExecutor(folder, CFG).spec.num_layers == 32
    assert SimExecutor(named_spec("opt-1.3b"), CFG, hardware="GH200").hardware.name == "GH200"
    assert SimExecutor("opt-1.3b", CFG, hardware=load_preset("L4")).hardware.name == "L4"
    with pytest.raises(ConfigError, match="named shape"):
        SimExecutor(str(tmp_path / "missing"), CFG)


def test_execute_is_fast():
    ex = sim("opt-30b", CFG.replace(hardware="GH200"))
    stream = StreamPlan.build(2, list(range(200)))
    plans = [decode_plan(i, batch=256, ctx=400, stream=stream) for i in range(50)]
    t = time.perf_counter()
    for p in plans:
        ex.execute(p)
    assert (time.perf_counter() - t) / len(plans) < 0.005


@pytest.mark.parametrize("policy", ["none", "pie"])
def test_engine_runs_a_workload_on_the_sim_to_max_tokens(policy):
    from pie_lab import create_engine
    from pie_lab.workloads import alpaca_like
    cfg = EngineConfig(hardware="GH200", dtype="float16", policy=policy, max_num_seqs=16, num_gpu_blocks=96,
                       num_host_blocks=256, swap_budget_blocks=32 if policy == "pie" else 0)
    eng = create_engine("opt-tiny", executor="sim", config=cfg)
    work = alpaca_like(40, seed=3, vocab_size=512, max_model_len=512)
    for r in work:
        eng.add_request(r.prompt_token_ids, SamplingParams(max_tokens=r.max_tokens), request_id=r.request_id,
                        arrival_time=0.0)
    outs = {}
    while eng.has_unfinished():
        for o in eng.step():
            outs[o.request_id] = o
    assert len(outs) == 40
    assert all(o.finish_reason == "length" and len(o.token_ids) == work[o.request_id].max_tokens
               for o in outs.values())
    assert eng.clock.now() > 0
