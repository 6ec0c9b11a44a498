"""The benchmark harness: the same workload through several policies, end to end."""
import json

import pandas as pd
import pytest

from pie_lab import ConfigError
from pie_lab.bench import BenchResult, policy_cases, run_benchmark
import pie_lab.engine_factory
from pie_lab.workloads import Request, alpaca_like

TINY = dict(block_size=4, num_gpu_blocks=24, num_host_blocks=48, max_num_seqs=4)


def requests(n=4, prompt=9, max_tokens=8, gap=0.0):
    return [Request(i, tuple(range(5 + i, 5 + i + prompt)), max_tokens, i * gap) for i in range(n)]


def test_cpu_end_to_end(tmp_path):
    reqs = requests()
    res = run_benchmark("opt-tiny", "cpu", ["none", {"policy": "pie", "swap_budget_blocks": 4, "offload": "eager", "label": "pie4"}],
                        reqs, TINY, progress=False)
    df = res.df
    assert list(df["policy"]) == ["none", "pie4"]
    assert (df["requests"] == 4).all() and (df["generated_tokens"] == 4 * 8).all()
    for m in ("ttft", "tpot", "e2e"):
        assert (df[f"{m}_p50_s"] <= df[f"{m}_p90_s"]).all() and (df[f"{m}_p90_s"] <= df[f"{m}_p99_s"]).all()
        assert (df[f"{m}_p50_s"] > 0).all()
    assert (df["tokens_per_s"] > 0).all() and (df["requests_per_s"] > 0).all()
    pie = df.set_index("policy").loc["pie4"]
    assert pie["peak_host_blocks"] > 0 and pie["peak_host_bytes"] > 0 and pie["stream_bytes"] > 0
    assert df.set_index("policy").loc["none", "peak_host_blocks"] == 0
    assert ((df["stall_share"] >= 0) & (df["stall_share"] <= 1)).all()
    assert (df["clock"] == "wall").all() and df["emulated_link"].all()
    assert set(res.requests["policy"]) == {"none", "pie4"} and len(res.requests) == 8
    assert set(res.iterations["policy"]) == {"none", "pie4"}

    back = pd.read_csv(res.to_csv(tmp_path / "r.csv"))
    assert list(back["policy"]) == ["none", "pie4"]
    assert [r["policy"] for r in json.loads(res.to_json(tmp_path / "r.json").read_text())] == ["none", "pie4"]
    spec = res.chart().to_dict()
    assert "hconcat" in spec


def test_preemptions_are_counted_under_memory_pressure():
    reqs = requests(n=4, prompt=12, max_tokens=20)
    res = run_benchmark("opt-tiny", "sim", ["recompute", "vllm-swap"], reqs,
                        dict(TINY, num_gpu_blocks=14, num_host_blocks=64), progress=False)
    assert (res.df["preemptions"] > 0).all()
    assert (res.df["requests"] == 4).all()


def test_arrivals_follow_the_virtual_clock():
    reqs = requests(n=3, gap=5.0)
    res = run_benchmark("opt-tiny", "sim", ["none"], reqs, TINY, progress=False)
    r = res.requests.sort_values("request_id")
    t0 = r["arrival"].iloc[0]
    assert list(r["arrival"] - t0) == pytest.approx([0.0, 5.0, 10.0])
    assert (r["first_scheduled"] >= r["arrival"]).all()
    assert res.df["duration_s"].iloc[0] >= 10.0 and res.df["clock"].iloc[0] == "virtual"


def test_generated_workload_on_sim():
    w = alpaca_like(16, seed=3, rate=50.0, vocab_size=512, max_model_len=512)
    res = run_benchmark("opt-tiny", "sim", ["none", "pie"], w, dict(block_size=8, num_gpu_blocks=80,
                                                                   num_host_blocks=160, swap_budget_blocks=16),
                        progress=False)
    assert list(res.df["requests"]) == [16, 16]
    assert res.df["generated_tokens"].iloc[0] == sum(r.max_tokens for r in w)


def test_every_config_is_checked_before_anything_runs(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("ran before checking every policy")
    monkeypatch.setattr(pie_lab.engine_factory, "create_executor", fail)
    with pytest.raises(ConfigError, match=r"policies\[1\].*swap_budget_blocks"):
        run_benchmark("opt-tiny", "cpu", ["none", {"policy": "pie", "swap_budget_blocks": -1}], requests(), TINY)
    with pytest.raises(ConfigError, match="choose one of"):
        run_benchmark("opt-tiny", "cpu", ["none", "turbo"], requests(), TINY)
    with pytest.raises(ConfigError, match="unknown engine option"):
        run_benchmark("opt-tiny", "cpu", ["none"], requests(), dict(TINY, blocksize=3))
    with pytest.raises(ConfigError, match="used twice"):
        run_benchmark("opt-tiny", "cpu", ["pie", "pie"], requests(), TINY)
    with pytest.raises(ConfigError, match="non-empty list"):
        run_benchmark("opt-tiny", "cpu", "pie", requests(), TINY)


def test_workload_checks():
    with pytest.raises(ConfigError, match="empty"):
        run_benchmark("opt-tiny", "sim", ["none"], [], TINY)
    with pytest.raises(ConfigError, match="lacks .*arrival_time"):
        run_benchmark("opt-tiny", "sim", ["none"], [object()], TINY)
    with pytest.raises(ConfigError, match="duplicate"):
        run_benchmark("opt-tiny", "sim", ["none"], requests(2) + requests(1), TINY)


def test_labels():
    cases = policy_cases(["none", {"policy": "pie", "swap_budget_blocks": 8}], {"num_gpu_blocks": 8})
    assert [c.label for c in cases] == ["none", "pie(swap_budget_blocks=8)"]
    assert cases[1].config.num_gpu_blocks == 8 and cases[1].config.swap_budget_blocks == 8
    assert isinstance(BenchResult(pd.DataFrame(), pd.DataFrame(), pd.DataFrame()).meta, dict)


def test_flexgen_gets_its_fraction_from_the_offline_search():
    from pie_lab.workloads import alpaca_like
    wl = alpaca_like(40, seed=0, rate=50, vocab_size=50272, max_model_len=2048)
    res = run_benchmark("opt-13b", "sim", ["flexgen", {"policy": "flexgen", "flexgen_fraction": 0.25, "label": "fixed"}],
                        wl, dict(dtype="float16", hardware="GH200", num_gpu_blocks=60), progress=False)
    searched, fixed = res.df["flexgen_fraction"].tolist()
    assert searched > 0 and fixed == 0.25
