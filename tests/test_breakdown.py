"""Where the time goes per policy (pie_lab.bench.breakdown) and its chart."""
import pytest

from pie_lab import named_spec
from pie_lab.bench.breakdown import compare_breakdown
from pie_lab.bench.harness import as_requests
from pie_lab.workloads import alpaca_like
from widgets import charts


@pytest.fixture(scope="module")
def pressure():
    reqs = as_requests(alpaca_like(32, seed=0, arrival="offline", vocab_size=named_spec("opt-tiny").vocab_size,
                                   max_model_len=2048))
    policies = {"none": dict(policy="none"), "vllm-swap": dict(policy="vllm-swap"),
                "pie": dict(policy="pie", swap_budget_blocks=64, offload="eager")}
    return compare_breakdown("opt-tiny", "cpu", policies, reqs, dict(num_gpu_blocks=24, num_host_blocks=64))


def test_each_policy_shows_its_own_costs(pressure):
    rows = pressure.set_index("policy")
    assert list(rows.index) == ["none", "vllm-swap", "pie"]
    assert rows.loc["none", "vs_none"] == 0.0
    assert rows.loc["none", "stream_mb"] == 0 and rows.loc["none", "link_cpu_s"] == 0
    assert rows.loc["vllm-swap", "blocking_s"] > 0 and rows.loc["vllm-swap", "stream_mb"] == 0
    assert rows.loc["pie", "stream_mb"] > 0 and rows.loc["pie", "link_cpu_s"] > 0
    assert rows.loc["pie", "batch"] > rows.loc["none", "batch"]      # the host tier holds more sequences
    for part in ("compute_s", "stall_s", "blocking_s", "rest_s"):
        assert (pressure[part] >= 0).all(), part
    assert (pressure["compute_s"] > 0).all() and (pressure["tok_s"] > 0).all()


def test_chart_stacks_the_parts_per_policy(pressure):
    spec = charts.breakdown_chart(pressure).to_dict()
    data = [r for d in spec["datasets"].values() for r in d]
    assert {r["policy"] for r in data} == {"none", "vllm-swap", "pie"}
    assert {r["part"] for r in data if "part" in r} == {"layer compute", "stall", "blocking copies", "rest of the step"}


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="repeats=0"):
        compare_breakdown("opt-tiny", "cpu", {"none": dict(policy="none")}, [], repeats=0)
