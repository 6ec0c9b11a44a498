"""Paged-attention forward passes for OPT and Llama-family decoders.

Exports resolve lazily: importing the package loads no torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "PagedDecoder": "base",
    "ForwardBatch": "batch",
    "build_forward_batch": "batch",
    "write_kv": "attention",
    "paged_attention": "attention",
    "OPTForPagedLM": "opt",
    "LlamaForPagedLM": "llama",
    "load_model": "loader",
    "build_hf_model": "loader",
    "Sampler": "sampler",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pie_lab.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
