"""Named scenarios (data/scenarios.yaml), `--scenario` on the CLI, and what-if points: each scenario
says what it claims (the host tier pays on the memory-bound GH200, not over PCIe, not without
pressure) and the explorer answers a change."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from pie_lab import ConfigError
from pie_lab.bench import LINK_MARKS, WhatIfPoint, bound_curve, compare, load_scenario, load_scenarios, run_point
from pie_lab.cli import main

N = 64          # requests per scenario run: enough for the squeeze to show, a few seconds of CPU


def test_scenarios_load_with_a_why_each():
    found = load_scenarios()
    assert {"memory-bound-gh200", "memory-bound-pcie", "no-pressure-gh200"} <= set(found)
    for sc in found.values():
        assert sc.why and "pie" in sc.policies and "vllm-swap" in sc.policies
    with pytest.raises(ConfigError, match="allowed: memory-bound-gh200"):
        load_scenario("nope")


def test_scenarios_show_where_the_host_tier_pays():
    df = compare(["memory-bound-gh200", "memory-bound-pcie"], num_requests=N).set_index(["scenario", "policy"])
    gh200, pcie = df.loc["memory-bound-gh200"], df.loc["memory-bound-pcie"]
    assert gh200.loc["vllm-swap", "preemptions"] > 0 and pcie.loc["vllm-swap", "preemptions"] > 0   # memory-bound
    assert gh200.loc["pie", "vs_vllm_swap"] > 1.2                 # the host tier raises throughput
    assert abs(pcie.loc["pie", "vs_vllm_swap"] - 1.0) < 0.1       # it cannot over PCIe
    assert gh200.loc["pie", "final_swap_budget"] > 4 * pcie.loc["pie", "final_swap_budget"]
    assert gh200["squeeze"].nunique() == 1 and gh200["squeeze"].iloc[0] > 1 and pcie["squeeze"].iloc[0] > 1


def test_cli_scenario_on_bench_and_run(capsys, tmp_path):
    assert main(["bench", "--scenario", "memory-bound-pcie", "--num-requests", "6", "--no-progress",
                 "--policies", "vllm-swap,pie", "--chart", str(tmp_path / "c.html"), "--out", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "scenario memory-bound-pcie" in out and "why:" in out and "kernels: calibrated (transferred)" in out and "6 sharegpt-v3 (real ShareGPT V3" in out
    assert "vllm-swap" in out and "recompute" not in out
    assert "squeeze " in out and "(KV the load wants / GPU KV): pie " in out
    same = load_scenario("memory-bound-pcie").run(6, labels=["vllm-swap", "pie"]).df   # the scenario's rate and all
    assert pd.read_json(tmp_path / "b.json")["tokens_per_s"].tolist() == pytest.approx(same["tokens_per_s"].tolist())
    html = (tmp_path / "c.html").read_text()
    assert "cdn.jsdelivr" not in html and len(html) > 100_000           # vega inline: opens offline
    assert main(["run", "--scenario", "memory-bound-gh200", "--num-requests", "4", "--no-progress",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert '"policy":"pie"' in (tmp_path / "r.json").read_text().replace(" ", "")
    assert main(["run", "--scenario", "nope"]) == 2
    assert "allowed: memory-bound-gh200" in capsys.readouterr().err
    assert main(["run", "--scenario", "memory-bound-gh200", "--config", "x.yaml"]) == 2


def test_whatif_point_ratios_and_bound():
    p = WhatIfPoint(num_requests=8, rate=50.0, kv_gib=2.0)
    df = run_point(p).df.set_index("policy")
    assert df.loc["vllm-swap", "throughput_ratio"] == 1.0
    assert math.isclose(df.loc["pie", "throughput_ratio"],
                        df.loc["pie", "steady_tokens_per_s"] / df.loc["vllm-swap", "steady_tokens_per_s"])
    assert (df["throughput_ratio_lo"] <= df["throughput_ratio"]).all() and (df["throughput_ratio"] <= df["throughput_ratio_hi"]).all()
    curve = bound_curve(p, batch=16, context=512, bandwidths=[50.0, 100.0])
    assert math.isclose(curve["hidden_blocks"][1], 2 * curve["hidden_blocks"][0])    # linear in the link
    faster = bound_curve(WhatIfPoint(hbm_gbps=2 * p.hbm_gbps), 16, 512, [50.0])["hidden_blocks"][0]
    assert faster < curve["hidden_blocks"][0]                     # faster HBM: less compute to hide behind
    assert [m.gbps for m in LINK_MARKS] == sorted(m.gbps for m in LINK_MARKS) and all(m.source for m in LINK_MARKS)
    with pytest.raises(ConfigError, match="link_gbps"):
        WhatIfPoint(link_gbps=0)


def test_explorer_answers_a_change():
    pytest.importorskip("ipywidgets")
    from widgets.whatif import WhatIfExplorer
    ex = WhatIfExplorer(WhatIfPoint(num_requests=6, rate=50.0, kv_gib=2.0))
    ex.knobs["link_gbps"].value = 55.5                            # what the slider does
    assert ex.point.link_gbps == 55.5 and len(ex.explored) == 2 * (len(ex.policies) - 1)
    assert "pie-whatif-squeeze'>squeeze " in ex.status.value
    assert "kernels: calibrated (transferred)" in ex.status.value     # GH200: the H100 fit carried over
    ex.knobs["host_gbps"].value = 20.0                            # the host-bandwidth slider (policy hybrid)
    assert ex.point.host_gbps == 20.0 and "hybrid" in set(ex.result.df["policy"])
    assert ex.bound_chart.chart.to_dict()["layer"]
    ex.set(kv_gib=-1.0)
    assert "refused" in ex.status.value and ex.point.kv_gib == 2.0
    ex.use_preset("H200")
    assert ex.point.base_hardware == "H200" and ex.knobs["link_gbps"].value == 55.5
    assert ex.knobs["host_gbps"].value == pytest.approx(65.6)
