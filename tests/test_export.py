"""Translations to vLLM, SGLang and transformers: golden files, and properties every translation keeps.

Golden files: tests/golden/export/<config>.<target>.json, one per config in tests/golden/configs and
target. After an intended change, regenerate them with
    PIE_LAB_UPDATE_GOLDEN=1 python -m pytest tests/test_export.py
and review the diff (see tests/golden/README.md).
"""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pie_lab import ConfigError, EngineConfig, POLICIES
from pie_lab.config_io import RunConfig, load_run_config
from pie_lab.export import TARGETS, export, to_sglang, to_transformers, to_vllm
from pie_lab.export.base import ENGINE_VERSIONS
from pie_lab.export.engine_snapshot import check_export, load_snapshot
from pie_lab.export.grid import export_grid
from pie_lab.model_spec import named_spec, spec_from_model

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
    # the run's host pool (twice the GPU pool by default), not the 512-block budget
    assert tr.settings["--kv-offloading-size"] == pytest.approx(2000 * block / 2**30, rel=1e-3)
    assert tr.settings["--kv-offloading-backend"] == "native"
    assert tr.settings["--num-gpu-blocks-override"] == 1000
    assert 0 < tr.settings["--gpu-memory-utilization"] <= 0.95
    assert tr.argv[:3] == ("vllm", "serve", "facebook/opt-13b")
    assert "--kv-offloading-size" in tr.command and "--disable-chunked-prefill" in tr.command
    assert "--swap-space" not in tr.command          # gone from vLLM
    assert "--kv-offloading-size" not in to_vllm(rc(policy="pie", swap_budget_blocks=0)).settings
    assert tr.engine == ENGINE_VERSIONS["vllm"] and tr.to_dict()["engine"] == tr.engine


def test_host_tiers_are_at_least_the_gpu_pool_and_within_the_host_memory():
    block = named_spec("opt-13b").kv_block_bytes(16, "float16") / 2**30
    small = rc(policy="vllm-swap", num_host_blocks=300)        # a host pool smaller than the 1000-block GPU pool
    tr = to_vllm(small)
    assert tr.settings["--kv-offloading-size"] == pytest.approx(1000 * block, rel=1e-3)
    why = [n.why for n in tr.approximate if n.target == "--kv-offloading-size"][0]
    assert "raised to the GPU KV pool" in why and "prefix hit" in why and "H200 preset" in why
    capped = to_vllm(rc(policy="vllm-swap", num_host_blocks=8000), host_memory_gb=40)
    assert capped.settings["--kv-offloading-size"] == pytest.approx(20, rel=0.01)     # half of 40 GB
    assert "capped at 50% of 40 GiB" in [n.why for n in capped.approximate if n.target == "--kv-offloading-size"][0]
    cb = to_transformers(small).settings["continuous_batching_config"]
    assert cb["cpu_offload_space"] == pytest.approx(1000 * block, rel=1e-3)


@pytest.mark.parametrize("block, vllm_block, kind", [(12, 16, "approximate"), (24, 32, "approximate"),
                                                     (8, 16, "approximate"), (48, 48, "exact"), (96, 96, "exact")])
def test_vllm_block_size_is_a_multiple_of_16_and_the_pool_keeps_its_tokens(block, vllm_block, kind):
    tr = to_vllm(rc(block_size=block))
    assert tr.settings["--block-size"] == vllm_block
    assert [n.target for n in getattr(tr, kind) if n.setting == "engine.block_size"] == ["--block-size"]
    blocks = tr.settings["--num-gpu-blocks-override"]
    assert 1000 * block <= blocks * vllm_block < 1000 * block + vllm_block       # tokens, not blocks
    exact = [n.target for n in tr.exact if n.setting == "engine.num_gpu_blocks"]
    assert exact == (["--num-gpu-blocks-override"] if 1000 * block % vllm_block == 0 else [])


def test_vllm_without_chunked_prefill_caps_the_context_at_the_step_budget():
    llama = RunConfig("llama-3.1-8b", "sim", EngineConfig(chunked_prefill=False, max_num_batched_tokens=2048))
    tr = to_vllm(llama)
    assert "--disable-chunked-prefill" in tr.argv and tr.settings["--max-model-len"] == 2048
    assert "engine.max_model_len" in [n.setting for n in tr.approximate]
    short = to_vllm(RunConfig("llama-3.1-8b", "sim", EngineConfig(max_model_len=1024)))
    assert short.settings["--max-model-len"] == 1024
    chunked = to_vllm(RunConfig("llama-3.1-8b", "sim", EngineConfig(chunked_prefill=True)))
    assert "--max-model-len" not in chunked.settings and "--enable-chunked-prefill" in chunked.argv


def test_sglang_chunk_is_a_multiple_of_the_page():
    tr = to_sglang(rc(block_size=24, chunked_prefill=True, max_num_batched_tokens=2048))
    assert tr.settings["--chunked-prefill-size"] == 2040 and tr.settings["--page-size"] == 24


def test_sglang_host_pool_exceeds_the_device_pool():
    tr = to_sglang(rc(policy="pie", swap_budget_blocks=250))
    assert tr.settings["--hicache-ratio"] == pytest.approx(3.0)      # GPU pool + a tier of twice it, mirrored
    assert tr.settings["--enable-hierarchical-cache"] is True and "--enable-hierarchical-cache" in tr.argv
    small = to_sglang(rc(policy="pie", swap_budget_blocks=250, num_host_blocks=300))
    assert small.settings["--hicache-ratio"] >= 2.0                  # SGLang advises 2 or more
    unsized = to_sglang(RunConfig("opt-13b", "sim", EngineConfig(policy="pie", swap_budget_blocks=250)))
    assert "--hicache-size" not in unsized.settings and "--hicache-ratio" not in unsized.settings
    assert "--hicache-ratio" in [n.target for n in unsized.approximate if n.setting == "engine.swap_budget_blocks"]
    by_size = to_sglang(RunConfig("opt-13b", "sim", EngineConfig(policy="pie", swap_budget_blocks=250,
                                                                  num_host_blocks=2000, dtype="float16")))
    block = named_spec("opt-13b").kv_block_bytes(16, "float16") / 2**30
    assert by_size.settings["--hicache-size"] == pytest.approx(2000 * block, rel=1e-3)


SNAPSHOT = load_snapshot()


def test_engine_snapshot_is_current():
    """The snapshot was taken of the releases the exports name, from this grid, and all passed."""
    for target in ("vllm", "sglang"):
        assert ENGINE_VERSIONS[target].split()[-1] == SNAPSHOT["engines"][target]["version"]
    assert SNAPSHOT["grid"]["checked"] == SNAPSHOT["grid"]["passed"] == len(export_grid()), \
        f"grid changed since the snapshot: refresh it with `{SNAPSHOT['refresh']}`"
    assert all(SNAPSHOT["must_fail"].values()) and len(SNAPSHOT["must_fail"]) == 5


@pytest.mark.parametrize("target", ["vllm", "sglang"])
def test_every_grid_export_parses_with_the_engine_snapshot(target):
    failures = {name: p for name, r, tr in export_grid() if tr.target == target
                if (p := check_export(tr, SNAPSHOT, spec_from_model(r.model).max_position_embeddings))}
    assert not failures


def _with(tr, **flags):
    argv = list(tr.argv)
    for flag, value in flags.items():
        flag = "--" + flag.replace("_", "-")
        i = argv.index(flag) if flag in argv else None
        if i is None:
            argv += [flag, value]
        elif value is None:
            del argv[i:i + 2]
        else:
            argv[i + 1] = value
    return dataclasses.replace(tr, argv=tuple(argv))


def test_engine_snapshot_rejects_the_exports_issue_16_fixed():
    vllm, sglang = to_vllm(rc()), to_sglang(rc(policy="pie", swap_budget_blocks=100, chunked_prefill=True))
    llama = to_vllm(RunConfig("llama-3.1-8b", "sim", EngineConfig(chunked_prefill=False)))
    for bad, max_pos in [(_with(vllm, swap_space="4"), 2048), (_with(vllm, block_size="8"), 2048),
                         (_with(vllm, dtype="fp16"), 2048), (_with(llama, max_model_len=None), 131072),
                         (_with(sglang, page_size="24"), 2048), (_with(sglang, hicache_ratio="1.0"), 2048)]:
        assert check_export(bad, SNAPSHOT, max_pos), bad.argv
    assert not check_export(vllm, SNAPSHOT, 2048) and not check_export(sglang, SNAPSHOT, 2048)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PIE_LAB_EXPORTS_VENV"),
                    reason="set PIE_LAB_EXPORTS_VENV to a venv built by scripts/check_exports.py for the live check")
def test_every_grid_export_parses_with_the_released_engines():
    root = Path(__file__).parents[1]
    run = subprocess.run([sys.executable, str(root / "scripts" / "check_exports.py"), "--no-write",
                          "--venv", os.environ["PIE_LAB_EXPORTS_VENV"]], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]


def test_transformers_settings_build_a_real_config():
    from transformers import ContinuousBatchingConfig
    tr = to_transformers(rc(policy="vllm-swap", num_host_blocks=300, max_num_seqs=48))
    cb = ContinuousBatchingConfig(**tr.settings["continuous_batching_config"])
    assert (cb.page_size, cb.num_blocks, cb.max_requests_per_batch) == (16, 1000, 48)
    assert cb.cpu_offload_space > 0
    assert "ContinuousBatchingConfig(" in tr.command and "generate_batch" in tr.command
    compile(tr.command, "<snippet>", "exec")
    opt = to_transformers(rc())
    assert "generate_batch" in [n.target for n in opt.unsupported if n.setting == "model"]   # OPT fails there


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random-weight Llama checkpoint with a word-level tokenizer, saved where from_pretrained finds it."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=128, vocab_size=100, max_position_embeddings=512)).save_pretrained(path)
    words = Tokenizer(models.WordLevel({**{f"w{i}": i for i in range(99)}, "[UNK]": 99}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(path)
    return str(path)


def run_snippet(tr):
    namespace = {}
    exec(compile(tr.command, "<transformers export>", "exec"), namespace)
    return namespace


def test_transformers_recompute_export_runs_as_emitted_on_the_cpu(tiny_llama):
    import torch
    from pie_lab.export.transformers_cb import EXAMPLE_PROMPTS
    config = RunConfig("llama-3.1-8b", "cpu", EngineConfig(policy="recompute", num_gpu_blocks=64, max_model_len=40,
                                                           max_num_seqs=4, max_num_batched_tokens=64))
    tr = to_transformers(config, model_id=tiny_llama)
    assert tr.settings["continuous_batching_config"]["cpu_offload_space"] == 0.0
    ns = run_snippet(tr)
    prompts, outputs = ns["prompts_token_ids"], [o.generated_tokens for o in ns["outputs"].values()]
    new = 40 - max(map(len, prompts))
    assert len(outputs) == len(EXAMPLE_PROMPTS) and all(len(o) == new for o in outputs)
    first = torch.tensor([prompts[0]])
    want = ns["model"].generate(first, max_new_tokens=new, do_sample=False)[0, first.shape[1]:]
    assert outputs[0] == want.tolist()          # greedy continuous batching == generate


def offload_export(model_id):
    config = RunConfig("llama-3.1-8b", "cpu", EngineConfig(policy="vllm-swap", num_gpu_blocks=64, num_host_blocks=128,
                                                           max_num_seqs=4, max_num_batched_tokens=64, max_model_len=40))
    tr = to_transformers(config, model_id=model_id)
    assert tr.settings["continuous_batching_config"]["cpu_offload_space"] > 0
    return tr


def _has_accelerator():
    import torch
    return torch.cuda.is_available()


@pytest.mark.skipif(not _has_accelerator(), reason="cpu_offload_space needs pinned host memory: no CUDA device here")
def test_transformers_offload_export_runs_as_emitted(tiny_llama):
    ns = run_snippet(offload_export(tiny_llama))
    assert all(len(o.generated_tokens) > 0 for o in ns["outputs"].values())


@pytest.mark.skipif(_has_accelerator(), reason="checks the CPU-only stop; a CUDA device is present")
def test_transformers_offload_export_stops_with_the_reason_without_an_accelerator(tiny_llama):
    with pytest.raises(SystemExit, match="needs an accelerator"):
        run_snippet(offload_export(tiny_llama))


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
