"""Translate a pie_lab RunConfig into the settings of other engines: vLLM, SGLang, transformers.

Each translation lists what maps exactly, what only approximately (and why), and what has no
equivalent there (no target streams KV per layer or adapts its host tier at run time).
"""
from __future__ import annotations

from ..config_io import load_run_config
from ..errors import check_choice
from .base import Note, Translation
from .sglang import to_sglang
from .transformers_cb import to_transformers
from .tuned import tuned_translation
from .vllm import to_vllm

TARGETS = {"vllm": to_vllm, "sglang": to_sglang, "transformers": to_transformers}


def export(config, to: str, *, gpu_memory_gib: float | None = None, model_id: str | None = None,
           host_memory_gb: float | None = None) -> Translation:
    """`config`: a RunConfig, a mapping, or a .yaml/.yml/.json path. `to`: vllm, sglang or transformers.

    A config tuned against `to` (`pie_lab.tune`, provenance.tuning) exports only what was earned
    (`tuned.tuned_translation`); any other config is translated setting by setting. Host tiers are
    sized within `host_memory_gb` (default: the hardware preset's host)."""
    check_choice("to", to, TARGETS)
    rc = load_run_config(config)
    tuning = rc.provenance.tuning if rc.provenance is not None else None
    if tuning is not None and tuning.get("target") == to:
        return tuned_translation(rc, to, model_id=model_id, host_memory_gb=host_memory_gb)
    return TARGETS[to](rc, gpu_memory_gib=gpu_memory_gib, model_id=model_id, host_memory_gb=host_memory_gb)


__all__ = ["export", "to_vllm", "to_sglang", "to_transformers", "Translation", "Note", "TARGETS"]
