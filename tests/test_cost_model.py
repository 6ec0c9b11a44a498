from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pie_lab.sim.overlap import schedule_layers
from pie_lab.core.plan import SeqWork, StepPlan, StreamPlan
from pie_lab.errors import ConfigError
from pie_lab.model_spec import named_spec
from pie_lab.sampling import SamplingParams
from pie_lab.sim import CostModel, Hardware, StepShape, flexgen_search, list_presets, load_preset

SP = SamplingParams(max_tokens=8)


def decode_plan(batch, ctx, step_id=0, stream=None, block_size=16):
    seqs = tuple(SeqWork(i, (7,), ctx - 1, tuple(range(-(-ctx // block_size))), True, SP, 1) for i in range(batch))
    return StepPlan(step_id, seqs, stream=stream)


def model(name="opt-13b", hw="H200", **kw):
    return CostModel(named_spec(name), load_preset(hw), kw.pop("dtype", "float16"), **kw)


def test_every_preset_loads_with_a_source_per_figure(tmp_path):
    names = list_presets()
    for required in ("H100-SXM", "H100-PCIe", "H200", "GH200", "A100-80GB", "L4"):
        assert required in names
    for name in names:
        hw = load_preset(name)
        assert set(hw.sources) == set(Hardware.figure_names())
        assert all(len(s) > 10 for s in hw.sources.values())
        hw.to_yaml(tmp_path / f"{name}.yaml")
        assert Hardware.from_yaml(tmp_path / f"{name}.yaml") == hw
        assert load_preset(str(tmp_path / f"{name}.yaml")) == hw
    h200 = load_preset("h200")
    assert (h200.h2d_gbps, h200.tflops_16bit) == (55.5, 764.0)
    assert "measured" in h200.sources["h2d_gbps"]
    gh = load_preset("GH200")               # measured C2C rates, the 450 GB/s spec kept in the source text
    assert (gh.h2d_gbps, gh.d2h_gbps) == (346.0, 297.0) and "measured" in gh.sources["h2d_gbps"]
    assert "450" in gh.sources["h2d_gbps"] and "measured" in gh.sources["d2h_gbps"]


def test_preset_validation_names_the_problem():
    d = load_preset("H200").to_dict()
    with pytest.raises(ConfigError, match="no source for: hbm_gbps"):
        Hardware.from_dict({**d, "sources": {k: v for k, v in d["sources"].items() if k != "hbm_gbps"}})
    with pytest.raises(ConfigError, match="hbm_gbps=9000.0 exceeds"):
        Hardware.from_dict({**d, "hbm_gbps": 9000.0})
    with pytest.raises(ConfigError, match="h2d_gbps"):
        Hardware.from_dict({**d, "h2d_gbps": -1})
    with pytest.raises(ConfigError, match="unknown hardware preset 'TPU'"):
        load_preset("TPU")


def test_large_decode_step_is_memory_bound():
    """OPT-13B, batch 32, ctx 1024 on H200, uncalibrated: time ~ (weights + KV) / HBM (pie-design.md
    section 4); the calibrated preset (measured kernels) is slower than that roofline, not faster."""
    cm = CostModel(named_spec("opt-13b"), replace(load_preset("H200"), calibration=None), "float16")
    spec = cm.spec
    plan = decode_plan(32, 1024)
    t = sum(cm.layer_compute_times(plan)) + cm.head_time(StepShape.of(plan))
    kv = 32 * 1024 * spec.kv_bytes_per_token_per_layer("float16") * spec.num_layers
    roofline = (cm.weight_bytes + kv) / (cm.hardware.hbm_gbps * 1e9)
    assert t == pytest.approx(roofline, rel=0.2)
    calibrated = model()
    t_cal = sum(calibrated.layer_compute_times(plan)) + calibrated.head_time(StepShape.of(plan))
    assert roofline < t_cal < 1.6 * roofline
    assert 0.010 < roofline < 0.015


def test_prefill_is_compute_bound():
    cm = model()
    shape = StepShape.prefill(8, 1024)
    flops = 2 * cm.layer_params * shape.tokens
    assert cm.layer_time(shape) >= flops / (cm.hardware.tflops_16bit * 1e12)
    assert cm.layer_time(shape) > 10 * cm.layer_time(StepShape.decode(8, 1024))


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 256), ctx=st.integers(1, 4096), extra=st.integers(1, 512))
def test_monotonic_in_batch_and_context(batch, ctx, extra):
    cm = model("opt-30b", "GH200")
    t = cm.layer_time(StepShape.decode(batch, ctx))
    assert cm.layer_time(StepShape.decode(batch + extra, ctx)) >= t
    assert cm.layer_time(StepShape.decode(batch, ctx + extra)) >= t
    assert cm.layer_time(StepShape.prefill(1, ctx + extra)) >= cm.layer_time(StepShape.prefill(1, ctx))


def test_link_time_is_latency_plus_bytes_over_bandwidth():
    cm = model(link_bandwidth_gbps=10.0, link_latency_us=20.0)
    assert cm.copy_time(0) == 0.0
    assert cm.copy_time(10**9) == pytest.approx(20e-6 + 0.1)
    assert cm.copy_time(10**9, calls=4) == pytest.approx(80e-6 + 0.1)
    preset = model()
    assert preset.copy_time(55_500_000) == pytest.approx(5e-6 + 1e-3)       # H200 preset: 55.5 GB/s, 5 us
    assert preset.copy_time(55_300_000, direction="d2h") == pytest.approx(5e-6 + 1e-3)


def test_step_timing_uses_schedule_layers_and_blocking_copies():
    cm = model(block_size=16)
    stream = StreamPlan.build(2, list(range(40)))
    plan = decode_plan(16, 512, stream=stream)
    timing = cm.step_timing(plan, prestaged_layers=0)
    compute, copy = cm.layer_compute_times(plan), cm.stream_copy_time(plan)
    start = timing.layers[0].compute_start - timing.layers[0].wait
    expect = schedule_layers(compute, [copy] * len(compute), 2, [cm.stream_layer_bytes(plan)] * len(compute),
                             start=start)
    assert list(timing.layers) == expect
    assert timing.stream_bytes == 40 * cm.block_bytes_per_layer * cm.spec.num_layers
    assert copy == pytest.approx(5e-6 + 40 * cm.block_bytes_per_layer / 55.5e9)
    assert timing.duration > timing.layers[-1].compute_end and timing.emulated_link

    swap = StepPlan(1, plan.seqs, swap_out=((3, 9),), swap_in=((0, 100), (1, 101), (5, 102)))
    t2 = cm.step_timing(swap)
    block = cm.block_bytes_per_layer * cm.spec.num_layers
    assert t2.blocking_copy_bytes == 4 * block
    assert t2.blocking_copy_time == pytest.approx(cm.copy_time(3 * block, calls=2)
                                                  + cm.copy_time(block, direction="d2h"))
    assert t2.layers[0].compute_start >= t2.blocking_copy_time


def test_offload_is_async_but_lands_by_the_steps_end():
    cm = model(link_bandwidth_gbps=1.0, link_latency_us=0.0)
    plan = decode_plan(4, 64)
    base = cm.step_timing(plan)
    block = cm.block_bytes_per_layer * cm.spec.num_layers
    small = cm.step_timing(StepPlan(0, plan.seqs, offload=((3, 9),)))
    assert small.async_copy_bytes == block and small.blocking_copy_bytes == 0
    assert small.duration == pytest.approx(max(base.duration, 300e-6 + block / 1e9))
    many = cm.step_timing(StepPlan(0, plan.seqs, offload=tuple((i, i) for i in range(200))))
    assert many.duration == pytest.approx(300e-6 + 200 * block / 1e9)      # latency 0, one range
    assert many.layers == base.layers        # the forward itself is not delayed


def test_flexgen_search_prefers_host_kv_only_when_it_pays():
    spec, hw = named_spec("opt-30b"), load_preset("GH200")
    best = flexgen_search(spec, hw, prompt_len=161.31, output_len=337.99)
    assert len(best.table) == 21 * 20
    feasible = [r for r in best.table if r["feasible"]]
    assert best.tokens_per_s == max(r["tokens_per_s"] for r in feasible)
    assert best.to_config_options()["policy"] == "flexgen"
    # KV memory so tight that a batch of 8 only fits with most of its KV on the host
    tight = flexgen_search(spec, hw, prompt_len=512, output_len=512, gpu_kv_limit_gb=2.0, batch_sizes=(8,))
    assert tight.fraction > 0.5
    for r in tight.table:      # streaming is on the critical path: more host KV, slower steps
        if r["fraction"] > 0:
            assert r["stream_s_per_step"] > 0
    steps = [r["decode_step_s"] for r in tight.table]
    assert steps == sorted(steps)
    with pytest.raises(ConfigError, match="no grid point fits"):
        flexgen_search(spec, hw, prompt_len=512, output_len=512, gpu_kv_limit_gb=0.01, batch_sizes=(64,))
    with pytest.raises(ConfigError, match="leave no GPU memory"):
        flexgen_search(named_spec("opt-66b"), load_preset("L4"), prompt_len=10, output_len=10)


@settings(max_examples=300, deadline=None)
@given(ids=st.sets(st.integers(0, 40), max_size=25),
       pairs=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=12))
def test_runs_and_coalesce_give_maximal_runs(ids, pairs):
    from pie_lab.core.plan import _runs, coalesce
    ids = sorted(ids)
    runs = _runs(np.array(ids, dtype=np.int64))
    assert [b for r in runs for b in range(r.src, r.src + r.count)] == ids
    assert all(r.src == r.dst for r in runs)
    assert all(a.src + a.count < b.src for a, b in zip(runs, runs[1:]))       # maximal: a gap between runs
    merged = coalesce(pairs)
    assert [(r.src + k, r.dst + k) for r in merged for k in range(r.count)] == sorted(pairs)
    assert not any(a.src + a.count == b.src and a.dst + a.count == b.dst for a, b in zip(merged, merged[1:]))


@settings(max_examples=200, deadline=None)
@given(host=st.lists(st.integers(0, 60), unique=True, max_size=40), cuts=st.lists(st.integers(0, 40), max_size=5),
       offloaded=st.integers(0, 3), depth=st.integers(1, 10))
def test_stream_stages_the_batch_host_blocks_as_build_does(host, cuts, offloaded, depth):
    from pie_lab import EngineConfig, SamplingParams
    from pie_lab.core.block_manager import BlockManager
    from pie_lab.core.plan import StreamPlan
    from pie_lab.core.scheduler import Schedule
    from pie_lab.core.sequence import Sequence
    from pie_lab.core.swap_planner import SwapPlanner
    bounds = [0, *sorted(c for c in cuts if c <= len(host)), len(host)]
    sched = Schedule()
    for i, (a, b) in enumerate(zip(bounds, bounds[1:])):
        seq = Sequence(i, [1] * 16, SamplingParams(), 0.0)
        seq.block_table = [~h for h in host[a:b]] + [100 + i]       # host blocks first, in any id order
        seq.host_count = b - a
        sched.work.append((seq, 1))
    fresh = host[-offloaded:] if offloaded else []                  # offloaded this step: read from the GPU
    planner = SwapPlanner(BlockManager(16, 200, 100), 8, lambda: EngineConfig(policy="pie", prefetch_depth=depth))
    got = planner.stream(sched, [(0, h) for h in fresh])
    staged = sorted(set(host) - set(fresh))
    assert got == (StreamPlan.build(min(depth, 8), staged) if staged else None)
