"""Sweeps: grid cells, local process pool, Ray (skipped where Ray is missing), workload descriptions."""
import json
import socket

import pytest

from pie_lab import ConfigError
from pie_lab.bench.sweep import SweepSpec, WorkloadSpec, connect_ray, run_sweep
from pie_lab.cli import main
from pie_lab.model_spec import named_spec
from pie_lab.workloads import Request

OPTS = dict(block_size=8, num_gpu_blocks=64, num_host_blocks=128)


def spec(**kw):
    base = dict(model="opt-tiny", executor="sim", policies=("none", "pie"), budgets=(8, 32), rates=(None, 20.0),
                hardware=("H200",), workload=WorkloadSpec("alpaca", 8, seed=1), engine_options=OPTS)
    return SweepSpec(**{**base, **kw})


def test_cells_cover_the_grid_with_budgets_for_pie_only():
    cells = spec(hardware=("H200", "L4")).cells()
    assert len(cells) == 2 * 2 * (1 + 2)                 # hardware x rates x (none + pie per budget)
    assert {c.budget for c in cells if c.policy == "none"} == {None}
    assert {c.budget for c in cells if c.policy == "pie"} == {8, 32}
    assert {c.workload.rate for c in cells} == {None, 20.0}
    assert [c.index for c in cells] == list(range(len(cells)))
    opts = [c for c in cells if c.policy == "pie"][0].options()
    assert opts["swap_budget_blocks"] == 8 and opts["hardware"] == "H200" and opts["num_gpu_blocks"] == 64


@pytest.mark.parametrize("kw,match", [
    (dict(policies=("none", "warp")), "choose one of"),
    (dict(budgets=()), "budgets is empty"),
    (dict(budgets=(-1,)), "budgets"),
    (dict(hardware=("H200", "TPUv9")), "hardware='TPUv9' is not a hardware preset"),
    (dict(engine_options={"num_gpu_blocks": 0}), "num_gpu_blocks"),
])
def test_bad_grids_fail_before_running(kw, match):
    with pytest.raises(ConfigError, match=match):
        run_sweep(spec(**kw), backend="serial", progress=False)


def test_serial_sweep_merges_into_one_frame():
    res = run_sweep(spec(), backend="serial", progress=False)
    df = res.df
    assert len(df) == 6 and list(df["cell"]) == list(range(6))
    assert {"budget", "rate", "hardware", "workload", "tokens_per_s", "e2e_p99_s"} <= set(df.columns)
    assert (df["requests"] == 8).all()
    assert set(res.requests["cell"]) == set(range(6))
    assert "column" in json.dumps(res.chart().to_dict())


def test_process_pool_sweep_matches_serial():
    small = spec(policies=("none",), rates=(None, 10.0))
    pooled = run_sweep(small, workers=2, progress=False).df
    serial = run_sweep(small, backend="serial", progress=False).df
    cols = ["cell", "policy", "rate", "requests", "generated_tokens", "tokens_per_s", "e2e_p50_s"]
    assert pooled[cols].equals(serial[cols])           # sim runs are deterministic


@pytest.mark.slow                      # Ray's own start-up takes most of it (~30 s on 2 busy cores)
def test_ray_auto_starts_a_local_instance_without_a_cluster(monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        res = run_sweep(spec(policies=("none", "pie"), budgets=(16,), rates=(None,)), backend="ray",
                        address="auto", progress=False)
    finally:
        ray.shutdown()
    assert list(res.df["policy"]) == ["none", "pie"] and (res.df["requests"] == 8).all()
    assert res.meta["backend"] == "ray"
    # another process's Ray on this machine is a running cluster to "auto", as in Ray itself
    assert res.meta["ray"] == "Ray: no running cluster found, started a local instance (ray.init())" or \
        res.meta["ray"].startswith("Ray: connected to the running cluster")


def test_ray_auto_says_whether_it_connected_or_started(monkeypatch):
    ray = pytest.importorskip("ray")
    calls = []

    def init(address=None, **kw):
        calls.append(address)
        if address == "auto" and cluster is None:
            raise ConnectionError("Could not find any running Ray instance.")
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    cluster = None
    assert connect_ray("auto") == "Ray: no running cluster found, started a local instance (ray.init())"
    assert calls == ["auto", None]
    cluster, calls[:] = "up", []
    assert connect_ray("auto") == "Ray: connected to the running cluster" and calls == ["auto"]


def test_ray_address_without_a_cluster_exits_2(capsys):
    pytest.importorskip("ray")
    with socket.socket() as s:                 # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"--ray 127.0.0.1:{port}: no Ray cluster answers there .*ray start --head"):
        connect_ray(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="must be 'auto', HOST:PORT or ray://HOST:PORT"):
        connect_ray("no-port-here")
    argv = ["bench", "--model", "opt-tiny", "--executor", "sim", "--num-requests", "4", "--no-progress",
            "--policies", "none", "--ray", f"ray://127.0.0.1:{port}"]
    assert main(argv) == 2
    assert f"--ray ray://127.0.0.1:{port}: no Ray cluster answers there" in capsys.readouterr().err


def test_workload_spec_files_and_rates(tmp_path):
    path = tmp_path / "w.jsonl"
    with open(path, "w") as f:
        for i in range(5):
            f.write(json.dumps(Request(i, (100, 900 + i, 7), 4, 0.5 * i).to_dict()) + "\n")
    tiny = named_spec("opt-tiny")
    w = WorkloadSpec(str(path), 3).build(tiny)
    assert len(w) == 3 and [r.arrival_time for r in w] == [0.0, 0.5, 1.0]
    assert all(max(r.prompt_token_ids) < tiny.vocab_size for r in w)    # folded into the vocabulary
    timed = WorkloadSpec(str(path), None, rate=100.0, seed=2).build(tiny)
    assert len(timed) == 5 and [r.arrival_time for r in timed] != [0.0, 0.5, 1.0, 1.5, 2.0]
    assert WorkloadSpec("alpaca", 4, seed=5).build(tiny).requests == WorkloadSpec("alpaca", 4, seed=5).build(tiny).requests


@pytest.mark.parametrize("kw,match", [
    (dict(kind="imdb"), "sharegpt, alpaca"), (dict(kind="x.jsonl"), "does not exist"),
    (dict(num_requests=0), "num_requests"), (dict(rate=-1.0), "rate"), (dict(num_requests=None), "required"),
])
def test_workload_spec_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        WorkloadSpec(**{"kind": "alpaca", "num_requests": 4, **kw}).build(named_spec("opt-tiny"))
