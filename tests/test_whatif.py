"""The what-if explorer's steady-state measure: its window, requests that cannot fit, the quick
estimate refined, and a ratio that does not depend on how many requests are simulated."""
from dataclasses import replace

import pandas as pd
import pytest

from pie_lab.bench import DEFAULT_REQUESTS, POLICIES, WhatIfPoint, run_point
from pie_lab.bench.steady import WORK_END, common_tokens, steady_row, steady_window
from pie_lab.sim.hardware import load_preset


def iterations(phases):
    """Iteration records from (steps, waiting, gpu used of 100, decode tokens) phases, 0.1 s a step."""
    rows, t = [], 0.0
    for steps, waiting, used, tokens in phases:
        for _ in range(steps):
            rows.append(dict(start=t, end=t + 0.1, waiting=waiting, gpu_blocks_used=used, staging_blocks=0,
                             gpu_blocks_limit=100, decode_tokens=tokens))
            t += 0.1
    return pd.DataFrame(rows)


def test_window_leaves_out_warm_up_and_drain():
    its = iterations([(10, 5, 40, 4), (50, 5, 98, 20), (40, 0, 60, 3)])      # filling, queued and full, drain
    t0, t1, steady = steady_window(its)
    assert steady and t0 == pytest.approx(1.0) and t1 == pytest.approx(6.0)
    reqs = pd.DataFrame({"arrival": [0.0, 0.5, 1.0, 2.0], "first_token": [0.5, 2.0, 3.0, 7.0], "ttft": [1, 2, 4, 8],
                         "tpot": [1] * 4, "e2e": [1] * 4})
    row = steady_row(reqs, its)
    assert row["steady_tokens_per_s"] == pytest.approx(200.0) and row["window_requests"] == 2
    assert row["first_half_tokens_per_s"] == pytest.approx(200.0) and row["steady_ttft_p50_s"] == 3.0
    assert row["drain_share"] == pytest.approx(0.8)
    idle = iterations([(30, 0, 50, 5)])                       # never queued: the whole run, arrival-bound
    assert steady_window(idle) == (0.0, pytest.approx(3.0), False)


def test_policies_are_timed_over_the_same_tokens():
    fast = iterations([(10, 5, 40, 4), (50, 5, 98, 20), (10, 0, 60, 3)])      # 1070 tokens
    slow = iterations([(20, 5, 95, 2), (70, 5, 98, 14), (10, 0, 60, 5)])      # full from the start, 1070 tokens
    k0, k1 = common_tokens([fast, slow])
    assert k0 == 40 and k1 == pytest.approx(WORK_END * 1070)                 # fast's window begins after 40 tokens
    reqs = pd.DataFrame({"arrival": [0.0], "first_token": [3.0], "ttft": [1.0], "tpot": [1.0], "e2e": [1.0]})
    a, b = steady_row(reqs, fast, (k0, k1)), steady_row(reqs, slow, (k0, k1))
    assert a["steady_tokens_per_s"] == pytest.approx(200.0) and b["steady_tokens_per_s"] == pytest.approx(140.0)
    assert b["window_start_s"] == pytest.approx(2.0) and b["window_end_s"] > a["window_end_s"]
    assert common_tokens([fast, iterations([(30, 0, 50, 5)])]) is None      # one never queued: no common window


def test_a_run_too_short_for_a_steady_state_is_flagged():
    short = run_point(WhatIfPoint(num_requests=16, rate=50.0, kv_gib=4.0))      # ends before memory fills
    assert not short.meta["settled"] and not short.df["steady"].all()


def test_requests_that_cannot_fit_are_counted_and_the_rest_run():
    p = WhatIfPoint(num_requests=24, rate=50.0, kv_gib=0.7)
    res = run_point(p)
    unfit = res.meta["unfit"]
    room = int(unfit["reason"].split("engine holds ")[1].split(";")[0]) * 16
    from pie_lab.bench.sweep import WorkloadSpec
    from pie_lab.model_spec import named_spec
    def lengths(point):                                   # the point's own workload, built as run_point builds it
        reqs = WorkloadSpec(point.workload, point.num_requests, point.rate, point.seed).build(named_spec(point.model))
        return [len(r.prompt_token_ids) + r.max_tokens for r in reqs]
    assert 0 < unfit["count"] == sum(n > room for n in lengths(p)) < 24 and unfit["of"] == 24
    assert (res.df["requests"] == 24 - unfit["count"]).all()
    tiny = replace(p, kv_gib=0.03, seed=1)                # one 16-token block; seed 1's shortest request is longer
    assert tiny.num_gpu_blocks == 1 and min(lengths(tiny)) > 16
    with pytest.raises(Exception, match="none of the 24 requests fits"):
        run_point(tiny)


def test_explorer_shows_a_quick_estimate_then_the_full_run_and_unfit_requests():
    pytest.importorskip("ipywidgets")
    from widgets.whatif import WhatIfExplorer
    ex = WhatIfExplorer(WhatIfPoint(num_requests=12, rate=50.0, kv_gib=2.0), quick_requests=6)
    assert ex.stages == [6, 12] and "pie-whatif-requests'>12<" in ex.status.value and "measured window" in ex.status.value
    assert len(ex.explored) == len(ex.policies) - 1          # the estimate is not kept in the history
    ex.set(num_requests=12)                                   # cached: no estimate first
    assert ex.stages == [12]
    ex.set(kv_gib=0.7, num_requests=24)
    assert "cannot fit and are left out" in ex.status.value and "engine holds" in ex.status.value
    ex.set(kv_gib=4.0, num_requests=16)
    assert "not a steady state" in ex.status.value


H200 = load_preset("H200")
POINTS = {"memory-bound GH200": WhatIfPoint(),
          "PCIe (H200)": WhatIfPoint(base_hardware="H200", link_gbps=H200.h2d_gbps, hbm_gbps=H200.hbm_gbps,
                                     host_gbps=H200.host_attention_gbps),
          "no pressure": WhatIfPoint(rate=1.0)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(POINTS))
def test_ratio_barely_moves_from_the_default_request_count_to_four_times_it(name):
    p = POINTS[name]
    assert p.num_requests == DEFAULT_REQUESTS
    two = {k: POLICIES[k] for k in ("vllm-swap", "pie")}
    res = run_point(p, two)
    assert res.meta["settled"] and res.meta["unfit"]["count"] == 0
    base = res.df.set_index("policy")["throughput_ratio"]
    longer = run_point(replace(p, num_requests=4 * DEFAULT_REQUESTS), two).df.set_index("policy")["throughput_ratio"]
    # pie over vllm-swap, the explorer's headline; measured: GH200 1.722 -> 1.671, PCIe 1.070 -> 1.096, no pressure 1.00
    assert abs(longer["pie"] / base["pie"] - 1) <= 0.05, pd.DataFrame({"default": base, "4x": longer})
