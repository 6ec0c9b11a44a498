"""Run configs on disk: round trips, clear errors for bad files, and nothing half-applied."""
import json

import numpy as np
import pytest

from pie_lab import LLM, ConfigError, ControllerConfig, EngineConfig, SamplingParams
from pie_lab.config_io import (Provenance, RunConfig, Trajectory, apply_run_config, load_run_config,
                               save_run_config)
import pie_lab.engine_factory
from fake_executor import make_engine

PROV = Provenance(
    workload={"kind": "alpaca", "num_requests": 8, "rate": None, "seed": 0},
    hardware="cpu (x86_64), emulated link 55.5 GB/s", executor="cpu",
    throughput={"requests_per_s": 3.5, "tokens_per_s": 120.25},
    latency={"ttft_p50_s": 0.01, "e2e_p99_s": 1.5},
    trajectory=Trajectory(start_budget=0, final_budget=12, decisions=9, changes=3, converged=True,
                          settled_budget=12, iterations_to_converge=17, iterations=40),
    pie_lab_version="0.1.0", date="2026-11-26T10:00:00")

RC = RunConfig("opt-tiny", "cpu", EngineConfig(
    block_size=4, num_gpu_blocks=48, num_host_blocks=96, max_num_seqs=4, policy="pie", swap_budget_blocks=6,
    prefetch_depth=3, link_bandwidth_gbps=20.0, controller=ControllerConfig(target_overhead=0.05, window=3)), PROV)


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_save_load_round_trip(tmp_path, suffix):
    path = save_run_config(RC, tmp_path / f"run{suffix}")
    assert load_run_config(path) == RC
    assert load_run_config(str(path)) == RC
    assert load_run_config(RC.to_dict()) == RC
    if suffix == ".json":
        json.loads(path.read_text())            # plain JSON


def test_from_config_rebuilds_the_same_engine_and_tokens(tmp_path):
    path = save_run_config(RC, tmp_path / "run.yaml")
    prompts = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 23, 24, 25, 26, 27, 28]]
    sp = SamplingParams(max_tokens=10, ignore_eos=True)
    loaded = LLM.from_config(path)
    direct = LLM(RC.model, RC.executor, RC.engine)
    try:
        assert loaded.config == direct.config
        # the engine fills in the link figures a config leaves to the executor (None)
        e = RC.engine
        assert loaded.config.replace(link_bandwidth_gbps=e.link_bandwidth_gbps, link_latency_us=e.link_latency_us) == e
        assert loaded.engine.executor.name == "cpu" and loaded.engine.spec.name == "opt-tiny"
        assert [o.token_ids for o in loaded.generate(prompts, sp)] == [o.token_ids for o in direct.generate(prompts, sp)]
    finally:
        loaded.close()
        direct.close()


BAD = [
    ("model: opt-tiny\nengine:\n  blok_size: 8\n", ["engine.blok_size", "allowed fields", "block_size"]),
    ("model: opt-tiny\nengine:\n  controller:\n    targt: 0.1\n", ["engine.controller.targt", "target_overhead"]),
    ("model: opt-tiny\nfoo: 1\n", ["foo", "model, executor, engine, provenance"]),
    ("model: opt-tiny\nengine:\n  max_num_seqs: many\n", ["engine.max_num_seqs", "integer in [1, 65536]"]),
    ("model: opt-tiny\nengine:\n  chunked_prefill: maybe\n", ["engine.chunked_prefill", "true or false"]),
    ("model: opt-tiny\nengine:\n  controller: 3\n", ["engine.controller", "mapping", "target_overhead"]),
    ("model: opt-tiny\nengine:\n  controller:\n    target_overhead: 1.5\n",
     ["engine.controller.target_overhead", "(0.0, 1.0]"]),
    ("model: opt-tiny\nengine:\n  block_size: 0\n", ["engine.block_size", "[1, 1024]"]),
    ("model: opt-tiny\nengine:\n  policy: magic\n", ["engine.policy", "'pie'", "'vllm-swap'"]),
    ("model: opt-tiny\nengine:\n  hardware: H999\n", ["engine.hardware", "'H200'"]),
    ("model: opt-tiny\nexecutor: tpu\n", ["executor", "'cpu'", "'sim'"]),
    ("executor: cpu\nengine:\n  block_size: 8\n", ["model is missing", "named shape"]),
    ("model: ''\n", ["model", "named shape"]),
    ("- model\n", ["mapping"]),
    ("model: opt-tiny\nengine: [\n", ["not valid YAML"]),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_bad_files_name_the_field_and_allowed_values(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_run_config(path)
    for part in expected:
        assert part in str(exc.value)


def test_bad_json_and_provenance_fields(tmp_path):
    d = RC.to_dict()
    d["provenance"]["trajectory"]["decisions"] = -1
    (tmp_path / "a.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"provenance\.trajectory\.decisions.*>= 0"):
        load_run_config(tmp_path / "a.json")
    d = RC.to_dict()
    d["provenance"]["date"] = "yesterday"
    with pytest.raises(ConfigError, match=r"provenance\.date.*ISO 8601"):
        load_run_config(d)
    d["provenance"]["date"] = __import__("datetime").date(2026, 11, 26)     # YAML's unquoted dates
    assert load_run_config(d).provenance.date == "2026-11-26"
    del d["provenance"]["hardware"]
    with pytest.raises(ConfigError, match=r"provenance\.hardware is missing"):
        load_run_config(d)


@pytest.mark.parametrize("name,match", [("run.toml", r"allowed: \.yaml, \.yml, \.json"),
                                        ("missing.yaml", "does not exist")])
def test_bad_paths(tmp_path, name, match):
    with pytest.raises(ConfigError, match=match):
        load_run_config(tmp_path / name)
    if name.endswith(".toml"):
        with pytest.raises(ConfigError, match=match):
            save_run_config(RC, tmp_path / name)


def test_provenance_normalises_numbers():
    p = Provenance(workload={"rate": np.float64(2.5), "n": 3, "inf": float("inf")}, hardware="H200",
                   executor="sim", throughput={"tokens_per_s": np.float32(10.0)}, latency={"ttft_p50_s": float("nan")},
                   trajectory=dict(start_budget=0, final_budget=1, decisions=1, changes=1, converged=False),
                   pie_lab_version="0.1.0", date="2026-11-26")
    assert p.workload == {"rate": 2.5, "n": 3, "inf": None}
    assert type(p.throughput["tokens_per_s"]) is float and p.latency["ttft_p50_s"] is None
    assert isinstance(p.trajectory, Trajectory)
    with pytest.raises(ConfigError, match=r"provenance\.workload\.x must be a number"):
        Provenance({"x": [1]}, "H200", "sim", {}, {}, p.trajectory, "0.1.0", "2026-11-26")


def test_a_bad_file_builds_nothing(tmp_path, monkeypatch):
    def fail(*a, **k):
        raise AssertionError("an engine was built from a bad config")
    monkeypatch.setattr(pie_lab.engine_factory, "create_executor", fail)
    d = RC.to_dict()
    d["engine"]["controller"]["window"] = 0           # the last thing parsed is bad
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"engine\.controller\.window"):
        LLM.from_config(path)


def test_apply_to_a_running_engine_is_all_or_nothing(tmp_path):
    eng = make_engine(EngineConfig(block_size=4, num_gpu_blocks=64, policy="pie", num_host_blocks=64,
                                   swap_budget_blocks=4))
    eng.executor.name = "cpu"
    before = eng.config
    rc = RunConfig("opt-tiny", "cpu", before.replace(swap_budget_blocks=12, max_num_seqs=3, block_size=8))
    with pytest.raises(ConfigError, match=r"engine\.block_size cannot change while running"):
        apply_run_config(eng, save_run_config(rc, tmp_path / "r.yaml"))
    with pytest.raises(ConfigError, match="executor='sim'"):
        apply_run_config(eng, RunConfig("opt-tiny", "sim", before.replace(max_num_seqs=3)))
    eng.add_request([5, 6, 7], SamplingParams(max_tokens=2))
    eng.step()
    assert eng.config == before                        # nothing was applied
    changes = apply_run_config(eng, rc.replace_engine(block_size=4))
    assert changes == {"swap_budget_blocks": 12, "max_num_seqs": 3}
    eng.step()
    assert eng.config.swap_budget_blocks == 12 and eng.config.max_num_seqs == 3
