"""Translations to vLLM, SGLang and transformers: golden files, and properties every translation keeps.

Golden files: tests/golden/export/<config>.<target>.json, one per config in tests/golden/configs and
target. After an intended change, regenerate them with
    PIE_LAB_UPDATE_GOLDEN=1 python -m pytest tests/test_export.py
and review the diff (see tests/golden/README.md).
"""
import json
import os
from pathlib import Path

import pytest

from pie_lab import ConfigError, EngineConfig, POLICIES
from pie_lab.config_io import RunConfig, load_run_config
from pie_lab.export import TARGETS, export, to_sglang, to_transformers, to_vllm
from pie_lab.model_spec import named_spec

GOLDEN = Path(__file__).parent / "golden"
CONFIGS = sorted((GOLDEN / "configs").iterdir())
UPDATE = os.environ.get("PIE_LAB_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_golden(config, target):
    got = export(config, target).to_dict()
    path = GOLDEN / "export" / f"{config.stem}.{target}.json"
    if UPDATE:
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert path.is_file(), f"no golden file {path}; run with PIE_LAB_UPDATE_GOLDEN=1 to create it"
    assert got == json.loads(path.read_text())


def rc(**engine):
    return RunConfig("opt-13b", "sim", EngineConfig(num_gpu_blocks=1000, dtype="float16", **engine))


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_policy_and_target_explains_itself(policy, target):
    tr = export(rc(policy=policy, swap_budget_blocks=100, num_host_blocks=400), target, gpu_memory_gib=80)
    assert tr.command and tr.settings and tr.exact and tr.approximate
    assert all(n.why for n in tr.approximate + tr.unsupported)
    assert "engine.prefetch_depth" in [n.setting for n in tr.unsupported]     # nobody streams per layer
    if policy == "pie":
        assert "engine.controller" in [n.setting for n in tr.unsupported]     # nobody adapts the budget
    noted = {n.setting for n in tr.exact + tr.approximate + tr.unsupported}
    assert {"engine.policy", "engine.max_num_seqs", "engine.max_num_batched_tokens", "engine.dtype"} <= noted


def test_vllm_sizes():
    tr = to_vllm(rc(policy="pie", swap_budget_blocks=512), gpu_memory_gib=80)
    block = named_spec("opt-13b").kv_block_bytes(16, "float16")
    assert tr.settings["--kv-offloading-size"] == pytest.approx(512 * block / 2**30, rel=1e-3)
    assert tr.settings["--kv-offloading-backend"] == "native"
    assert tr.settings["--num-gpu-blocks-override"] == 1000
    assert 0 < tr.settings["--gpu-memory-utilization"] <= 0.95
    assert tr.argv[:3] == ("vllm", "serve", "facebook/opt-13b")
    assert "--kv-offloading-size" in tr.command and "--enable-chunked-prefill" not in tr.command
    assert "--swap-space" in to_vllm(rc(policy="vllm-swap", num_host_blocks=300)).settings
    assert "--kv-offloading-size" not in to_vllm(rc(policy="pie", swap_budget_blocks=0)).settings


def test_vllm_rounds_an_unsupported_block_size():
    tr = to_vllm(rc(block_size=12))
    assert tr.settings["--block-size"] in (8, 16)
    assert [n.target for n in tr.approximate if n.setting == "engine.block_size"] == ["--block-size"]


def test_sglang_host_pool_is_at_least_the_device_pool():
    tr = to_sglang(rc(policy="pie", swap_budget_blocks=250))
    assert tr.settings["--hicache-ratio"] == pytest.approx(1.25)
    assert tr.settings["--enable-hierarchical-cache"] is True and "--enable-hierarchical-cache" in tr.argv
    unsized = to_sglang(RunConfig("opt-13b", "sim", EngineConfig(policy="pie", swap_budget_blocks=250)))
    assert unsized.settings["--hicache-size"] >= 1 and "--hicache-ratio" not in unsized.settings


def test_transformers_settings_build_a_real_config():
    from transformers import ContinuousBatchingConfig
    tr = to_transformers(rc(policy="vllm-swap", num_host_blocks=300, max_num_seqs=48))
    cb = ContinuousBatchingConfig(**tr.settings["continuous_batching_config"])
    assert (cb.page_size, cb.num_blocks, cb.max_requests_per_batch) == (16, 1000, 48)
    assert cb.cpu_offload_space > 0
    assert "ContinuousBatchingConfig(" in tr.command and "generate_batch" in tr.command
    compile(tr.command, "<snippet>", "exec")


def test_model_id_override_and_tiny_shapes():
    tiny = RunConfig("opt-tiny", "cpu", EngineConfig())
    assert "model" in [n.setting for n in to_vllm(tiny).unsupported]
    tr = to_vllm(tiny, model_id="my/checkpoint")
    assert tr.argv[2] == "my/checkpoint" and "model" in [n.setting for n in tr.exact]


def test_export_errors(tmp_path):
    with pytest.raises(ConfigError, match="'vllm'"):
        export(rc(), "tensorrt")
    with pytest.raises(ConfigError, match="gpu_memory_gib"):
        to_vllm(rc(), gpu_memory_gib=0)
    with pytest.raises(ConfigError, match="neither a named shape"):
        to_vllm(RunConfig(str(tmp_path / "nowhere"), "cpu"))


def test_golden_configs_load():
    for path in CONFIGS:
        assert isinstance(load_run_config(path), RunConfig)
