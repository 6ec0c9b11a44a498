"""The grid of configurations whose vLLM and SGLang exports are checked against the engines' own
parsers (scripts/check_exports.py) and, in CI, against their snapshot (data/export_engines.json)."""
from __future__ import annotations

import itertools
from pathlib import Path

from ..config import POLICIES, EngineConfig
from ..config_io import RunConfig, load_run_config
from .base import Translation
from .sglang import to_sglang
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


def export_grid() -> list[tuple[str, RunConfig, Translation]]:
    """(name, config, translation) for every grid point and target with a command line, plus the
    golden configs (tests/golden/configs) when run from a checkout."""
    configs = [(name, rc, GPU_MEMORY_GIB) for name, rc in grid_configs()]
    if GOLDEN_CONFIGS.is_dir():
        configs += [(f"golden/{p.stem}", load_run_config(p), None) for p in sorted(GOLDEN_CONFIGS.iterdir())]
    return [(f"{name}/{t.target}", rc, t) for name, rc, mem in configs
            for t in (to_vllm(rc, gpu_memory_gib=mem), to_sglang(rc, gpu_memory_gib=mem))]
