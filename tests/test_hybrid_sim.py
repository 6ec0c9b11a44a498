"""Policy hybrid on the sim executor: the host share's cost (queries out, host attention, partials
back, overlapped with the device's attention), the controller sizing it, and the bound."""
import math
import random

import pytest

from pie_lab import ControllerConfig, SamplingParams, create_engine, named_spec
from pie_lab.core.plan import SeqWork, StepPlan
from pie_lab.sim.cost_model import CostModel, StepShape
from pie_lab.sim.hardware import load_preset
from pie_lab.sim.host_cost import hybrid_bound

BS = 16


def decode_plan(batch, ctx_blocks, host_computed, host_seqs=None):
    """`batch` decoding sequences of ctx_blocks full blocks; the first `host_seqs` (default all) have
    `host_computed` of them attended on the host."""
    hc = [host_computed if i < (batch if host_seqs is None else host_seqs) else 0 for i in range(batch)]
    seqs = tuple(SeqWork(i, (5,), ctx_blocks * BS, tuple([~(i * ctx_blocks + j) for j in range(hc[i])])
                         + tuple(range(i * ctx_blocks + hc[i], (i + 1) * ctx_blocks + 1)), True,
                         SamplingParams(), 1, hc[i]) for i in range(batch))
    return StepPlan(0, seqs)


@pytest.mark.parametrize("preset, model", [("A10G", "llama-3.1-8b"), ("GH200", "opt-30b")])
def test_host_share_moves_attention_off_the_device_and_waits_only_past_its_window(preset, model):
    cm = CostModel(named_spec(model), load_preset(preset), "float16", BS)
    base = cm.step_timing(decode_plan(32, 24, 0))
    small = cm.step_timing(decode_plan(32, 24, 2, host_seqs=4))
    big = cm.step_timing(decode_plan(32, 24, 20))
    l0, l1, l2 = base.layers[0], small.layers[0], big.layers[0]
    assert math.isnan(l0.host_start) and l0.host_bytes == 0
    # the device attends fewer keys: its attention window shrinks with the host share
    assert l2.host_window < l1.host_window < cm.layer_parts(StepShape.decode(32, 24 * BS + 1))[1]
    assert l1.host_bytes == 4 * 2 * cm.block_bytes_per_layer and l2.host_bytes == 80 * l1.host_bytes
    for l in (l1, l2):            # the wait is exactly the host path past the device's window
        assert l.host_wait == pytest.approx(max(0.0, l.host_time - l.host_window))
        assert l.host_start > l.compute_start
    assert l1.host_wait == 0.0 and l2.host_wait > 0.0
    assert small.duration < base.duration                     # a small share costs nothing and saves HBM reads
    assert big.host_wait == pytest.approx(sum(l.host_wait for l in big.layers))


def test_host_attention_shares_dram_with_the_link():
    cm = CostModel(named_spec("opt-30b"), load_preset("GH200"), "float16", BS)
    alone = cm.host.attention_time(10**8)
    assert alone == pytest.approx(10**8 / cm.host.rate)
    assert cm.host.attention_time(10**8, streamed_bytes_per_s=400e9) > 3 * alone
    assert CostModel(named_spec("opt-30b"), load_preset("GH200"), "float16", BS,
                     host_attention_gbps=10.0).host.rate == 10e9


def hybrid_engine(preset="A10G", model="llama-3.1-8b", requests=300, controller=True, **kw):
    eng = create_engine(model, "sim", hardware=preset, policy="hybrid", dtype="float16", max_num_seqs=256,
                        max_num_batched_tokens=8192, controller=ControllerConfig(enabled=controller), **kw)
    rng = random.Random(0)
    for _ in range(requests):
        eng.add_request([rng.randrange(3, 30000) for _ in range(400)], SamplingParams(max_tokens=600, ignore_eos=True))
    return eng


def test_controller_grows_the_host_share_to_the_device_window_and_records_each_decision():
    eng = hybrid_engine()
    for _ in range(120):
        eng.step()
    it = eng.metrics.iterations_df()
    late = it.iloc[60:120]
    assert late["host_computed_blocks"].mean() > 50                  # a real share on a PCIe gen4 card
    assert late["host_wait"].sum() / late["duration"].sum() < 0.03    # under the stall target
    ev = eng.metrics.events_df().query("kind == 'controller'")
    host = ev[ev.share == "host"]
    assert {"stream", "host"} == set(ev.share)
    assert {"rule", "overhead", "target", "predicted", "layer_time_limit", "old_budget", "new_budget"} <= set(host.columns)
    assert host.rule.str.startswith("grow").any()
    assert eng.config.host_compute_blocks == host.new_budget.iloc[-1]
    from pie_lab.core.trace import chrome_trace
    names = {e.get("name", "") for e in chrome_trace(eng.metrics)["traceEvents"]}
    assert any(n.startswith("host attention layer") for n in names)        # the host lane is in the trace


def test_host_share_gives_capacity_where_pie_cannot():
    """A10G-class card: the PCIe gen4 link hides little, the host's cores attend more. At a fixed
    total host budget sized for the batch, hybrid's steps are shorter than pie's (no stall)."""
    runs = {}
    for policy, opts in (("pie", dict(swap_budget_blocks=600)),
                         ("hybrid", dict(swap_budget_blocks=100, host_compute_blocks=500))):
        eng = create_engine("llama-3.1-8b", "sim", hardware="A10G", policy=policy, dtype="float16",
                            max_num_seqs=256, max_num_batched_tokens=8192, num_host_blocks=4000, **opts)
        rng = random.Random(1)
        for _ in range(200):
            eng.add_request([rng.randrange(3, 30000) for _ in range(400)], SamplingParams(max_tokens=300, ignore_eos=True))
        for _ in range(80):
            eng.step()
        it = eng.metrics.iterations_df().iloc[40:80]
        runs[policy] = it["decode_tokens"].sum() / it["duration"].sum()
    assert runs["hybrid"] > 1.05 * runs["pie"], runs


def test_bound_names_what_limits_each_setup():
    def bound(preset, model):
        return hybrid_bound(CostModel(named_spec(model), load_preset(preset), "float16", BS), 80, 408)
    gh, h2, a10 = bound("GH200", "opt-30b"), bound("H200", "opt-30b"), bound("A10G", "llama-3.1-8b")
    # GH200: the link and the host's attention together would read more than LPDDR5X sustains
    assert gh["limit"] == "host memory bandwidth" and gh["pie_gb"] < gh["hybrid_gb"] == gh["dram_gb"]
    assert h2["limit"] == "link" and h2["hybrid_gb"] > h2["pie_gb"]
    assert a10["limit"] == "host attention (cores)" and a10["hybrid_gb"] > 2 * a10["pie_gb"]
    for b in (gh, h2, a10):
        assert b["hybrid_gb"] <= b["dram_gb"] + 1e-9 and b["hybrid_gb"] >= b["pie_gb"]


def split_timings(plan, preset="A10G", model="llama-3.1-8b"):
    return {mode: CostModel(named_spec(model), load_preset(preset), "float16", BS, host_split=mode).step_timing(plan)
            for mode in ("off", "on", "auto")}


def test_split_never_pays_when_the_h_rows_linears_are_memory_bound():
    """32 rows on an A10G: a second post-attention pass re-reads the weights, more than the wait it hides."""
    t = split_timings(decode_plan(32, 24, 20, host_seqs=16))
    off, on = t["off"].layers[0], t["on"].layers[0]
    assert off.host_wait > 0 and on.host_time < on.host_window       # the split hides the wait ...
    assert t["on"].duration > t["off"].duration                       # ... at a weight read's cost
    assert t["auto"].duration == t["off"].duration and t["auto"].layers[0].host_window == off.host_window


def test_split_pays_when_both_sub_batches_are_compute_bound():
    """400 rows, 200 of them with a host share: the post-attention linears cost per row, so the
    second pass costs little and D's pass widens the host's window past its path."""
    plan = decode_plan(400, 6, 5, host_seqs=200)
    t = split_timings(plan)
    cm = CostModel(named_spec("llama-3.1-8b"), load_preset("A10G"), "float16", BS)
    off, auto = t["off"].layers[0], t["auto"].layers[0]
    assert auto.host_window == pytest.approx(off.host_window + cm.post_attention_time(200))
    assert auto.host_time < auto.host_window                          # no wait at the merge ...
    extra = cm.post_attention_time(200) * 2 - cm.post_attention_time(400)
    assert auto.host_wait == pytest.approx(extra) and extra < off.host_wait   # ... the second pass is its cost
    assert t["auto"].duration == t["on"].duration < t["off"].duration
    assert auto.compute_end - auto.compute_start == pytest.approx(
        off.compute_end - off.compute_start - off.host_wait + extra)


def test_bound_draws_the_pipelined_schedules_next_to_the_unsplit_one():
    """At the benchmarks' batches the linears are memory-bound: both pipelines widen the host's
    window and serve more host KV per step, but the second pass costs more time than it buys."""
    for preset, model in (("A10G", "llama-3.1-8b"), ("GH200", "opt-30b"), ("H200", "opt-30b")):
        b = hybrid_bound(CostModel(named_spec(model), load_preset(preset), "float16", BS), 80, 408)
        assert b["split_window_ms"] > b["attention_ms"] and b["split_gb"] >= b["hybrid_gb"]
        assert b["split_layer_ms"] > b["layer_ms"] and b["split_ratio"] < 1.0 and b["pipeline_ratio"] < 1.0
    big = hybrid_bound(CostModel(named_spec("llama-3.1-8b"), load_preset("A10G"), "float16", BS), 1000, 100)
    assert big["split_ratio"] > 1.0                    # compute-bound linears: the split pays
