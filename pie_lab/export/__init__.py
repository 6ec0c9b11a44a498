"""Translate a pie_lab RunConfig into the settings of other engines: vLLM, SGLang, transformers.

Each translation lists what maps exactly, what only approximately (and why), and what has no
equivalent there (no target streams KV per layer or adapts its host tier at run time).
"""
from __future__ import annotations

from ..errors import check_choice
from .base import Note, Translation
from .sglang import to_sglang
from .transformers_cb import to_transformers
from .vllm import to_vllm

TARGETS = {"vllm": to_vllm, "sglang": to_sglang, "transformers": to_transformers}


def export(config, to: str, *, gpu_memory_gib: float | None = None, model_id: str | None = None) -> Translation:
    """`config`: a RunConfig, a mapping, or a .yaml/.yml/.json path. `to`: vllm, sglang or transformers."""
    check_choice("to", to, TARGETS)
    return TARGETS[to](config, gpu_memory_gib=gpu_memory_gib, model_id=model_id)


__all__ = ["export", "to_vllm", "to_sglang", "to_transformers", "Translation", "Note", "TARGETS"]
