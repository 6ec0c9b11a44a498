"""The grid of configurations whose vLLM and SGLang exports are checked against the engines' own
parsers (scripts/check_exports.py) and, in CI, against their snapshot (data/export_engines.json)."""
from __future__ import annotations

import itertools
from pathlib import Path

from ..config import POLICIES, EngineConfig
from ..config_io import Provenance, RunConfig, load_run_config
from .base import Translation
from .sglang import to_sglang
from .tuned import tuned_translation
from .vllm import to_vllm

MODELS = ("opt-13b", "llama-3.1-8b")
BLOCK_SIZES = (8, 12, 16, 24, 48)       # 16 and 48 pass through to vLLM, 8, 12 and 24 are rounded
GPU_BLOCKS = (1500, None)               # None: pie_lab would size the GPU pool at run time
GPU_MEMORY_GIB = 80.0
GOLDEN_CONFIGS = Path(__file__).resolve().parents[2] / "tests" / "golden" / "configs"


def grid_configs() -> list[tuple[str, RunConfig]]:
    out = []
    for model, policy, chunked, block, gpu in itertools.product(MODELS, POLICIES, (True, False), BLOCK_SIZES,
                                                                 GPU_BLOCKS):
        engine = EngineConfig(policy=policy, chunked_prefill=chunked, block_size=block, num_gpu_blocks=gpu,
                              swap_budget_blocks=300, num_host_blocks=3000 if gpu else None,
                              max_num_batched_tokens=2048, dtype="float16")
        name = f"{model}/{policy}/chunked={'on' if chunked else 'off'}/block={block}/gpu={gpu or 'unknown'}"
        out.append((name, RunConfig(model, "sim", engine)))
    return out


# A tuned export with every knob earned (pie_lab.tune's provenance, written out): the tuned
# translation's flags, each at a value unlike the target's default.
TUNED_EARNED = {
    "vllm": {"max_num_seqs": 256, "max_num_batched_tokens": 2048, "chunked_prefill": False, "block_size": 32,
             "gpu_share": 0.95, "host_tier": "vllm-swap x2"},
    "sglang": {"max_num_seqs": 256, "max_num_batched_tokens": 4000, "block_size": 16, "gpu_share": 0.85},
    "sglang-unchunked": {"chunked_prefill": False, "block_size": 32},
}


def tuned_configs() -> list[tuple[str, RunConfig]]:
    from ..tune.defaults import target_defaults
    out = []
    for model, (name, earned) in itertools.product(MODELS, TUNED_EARNED.items()):
        target = name.split("-")[0]
        d = dict(target_defaults(target, "H100-SXM").values, prefetch_depth=2)
        point = {**d, **{k: v for k, v in earned.items() if k != "host_tier"}}
        if "host_tier" in earned:
            policy, ratio = earned["host_tier"].split(" x")
            point["policy"], point["host_tier_ratio"] = policy, int(ratio)
        ev = {k: {"value": v, "default": d.get(k, "none"), "goodput_with": 2.0, "goodput_without": 1.0}
              for k, v in earned.items()}
        tuning = {"target": target, "engine": target, "gpu_class_rule": "grid", "trials": 0, "seed": 0, "slo": "",
                  "calibration": "", "defaults": d,
                  "export": {"point": point, "earned": ev, "left_at_default": {}, "goodput": 2.0,
                             "baseline_goodput": 1.0, "reason": "grid", "gpu_blocks": 1500, "host_blocks": 3000,
                             "block_size": point["block_size"]}}
        prov = Provenance({}, "H100-SXM", "sim", {}, {}, None, "0", "2026-12-07", tuning=tuning)
        engine = EngineConfig(hardware="H100-SXM", dtype="float16", num_gpu_blocks=1500)
        out.append((f"tuned/{model}/{name}", RunConfig(model, "sim", engine, prov)))
    return out


def export_grid() -> list[tuple[str, RunConfig, Translation]]:
    """(name, config, translation) for every grid point and target with a command line, the golden
    configs (tests/golden/configs) when run from a checkout, and tuned exports to their target."""
    configs = [(name, rc, GPU_MEMORY_GIB) for name, rc in grid_configs()]
    if GOLDEN_CONFIGS.is_dir():
        configs += [(f"golden/{p.stem}", load_run_config(p), None) for p in sorted(GOLDEN_CONFIGS.iterdir())]
    plain = [(f"{name}/{t.target}", rc, t) for name, rc, mem in configs
             for t in (to_vllm(rc, gpu_memory_gib=mem), to_sglang(rc, gpu_memory_gib=mem))]
    tuned = [(name, rc, tuned_translation(rc, rc.provenance.tuning["target"])) for name, rc in tuned_configs()]
    return plain + tuned
