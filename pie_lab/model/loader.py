"""Build a paged decoder from a named shape, a named real model (smollm2-135m), a local checkpoint
folder or .gguf file, a transformers model or a ModelSpec. Never downloads.

The shape alone (no torch) is `pie_lab.model_spec.spec_from_model`. Checkpoint weights and tokenizers
are cached per process: a second load of the same folder is fast.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..config import DTYPES
from ..errors import ConfigError, check_choice
from ..model_spec import ModelSpec, spec_from_model
from . import gguf
from .file_checks import check_folder

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _torch_dtype(dtype: str):
    import torch
    check_choice("dtype", dtype, DTYPES)
    return getattr(torch, dtype)


def _build(spec: ModelSpec, dtype: str):
    """The module on the meta device: no memory until weights are assigned or allocated."""
    import torch
    from .llama import LlamaForPagedLM
    from .opt import OPTForPagedLM
    cls = OPTForPagedLM if spec.is_opt else LlamaForPagedLM
    with torch.device("meta"):
        model = cls(spec)
    return model.to(_torch_dtype(dtype))


def init_random(model, seed: int) -> None:
    """Deterministic HF-style init: normal(0, 0.02) for weights, norms 1 / 0, linear biases 0."""
    import torch
    gen = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=gen)


def _normalize_key(key: str) -> str:
    # some OPT checkpoints store "decoder.*" without the "model." prefix
    return key if key.startswith(("model.", "lm_head.")) else "model." + key


def _assign(model, state: dict, dtype, device, loaded: set) -> None:
    state = {_normalize_key(k): v.to(device=device, dtype=dtype) for k, v in state.items()}
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ConfigError(f"checkpoint has weights this model does not know: {result.unexpected_keys[:5]}")
    loaded.update(state)


def _finish(model, loaded: set) -> None:
    model.tie_weights()
    expected = set(model.state_dict())
    if model.tied:
        loaded = loaded | {"lm_head.weight"}
    missing = sorted(expected - loaded)
    if missing:
        raise ConfigError(f"checkpoint is missing weights: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    model.init_buffers()
    model.eval().requires_grad_(False)


def check_checkpoint(path: str) -> ModelSpec:
    """A checkpoint folder's shape, after checking its config.json and weight files (headers only)."""
    check_folder(path)
    return spec_from_model(path)


_CHECKPOINTS: dict[tuple, tuple] = {}       # (folder, its files' mtimes) -> (state dict on the CPU, tokenizer)


def _read_checkpoint(path: str) -> tuple[dict, Any]:
    """-> (state dict, tokenizer or None) of a checkpoint folder, cached for this process."""
    import torch
    files = check_folder(path)
    key = (os.path.realpath(path), tuple(os.stat(f).st_mtime_ns for f in files))
    if key not in _CHECKPOINTS:
        state: dict = {}
        for f in files:
            if f.endswith(".safetensors"):
                from safetensors.torch import load_file
                state.update(load_file(f, device="cpu"))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        tokenizer = None
        if any(os.path.exists(os.path.join(path, t)) for t in TOKENIZER_FILES):
            from transformers import AutoTokenizer
            tokenizer = AutoTokenizer.from_pretrained(path)
        _CHECKPOINTS.clear()                  # keep one checkpoint: weights can be large
        _CHECKPOINTS[key] = (state, tokenizer)
    return _CHECKPOINTS[key]


def load_model(model: Any, dtype: str = "float32", device: Any = "cpu", seed: int = 0):
    """-> (PagedDecoder, tokenizer or None). Random weights (seeded) for named shapes and ModelSpecs."""
    import torch
    torch_dtype = _torch_dtype(dtype)
    device = torch.device(device)
    name = model if isinstance(model, str) and model in gguf.REAL_MODELS else None
    if isinstance(model, (str, os.PathLike)):
        model = gguf.resolve(model)
    spec = spec_from_model(model)
    if name is not None:                      # a real model keeps its name, not its cache folder's
        spec = dataclasses.replace(spec, name=name)
    net = _build(spec, dtype)
    loaded: set = set()
    tokenizer = None
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(os.fspath(model)):
        state, tokenizer = _read_checkpoint(os.fspath(model))
        _assign(net, state, torch_dtype, device, loaded)     # shares the cached tensors (read-only)
    elif hasattr(model, "config") and hasattr(model, "state_dict"):
        # shares the caller's tensors when dtype and device already match
        _assign(net, model.state_dict(), torch_dtype, device, loaded)
    else:
        net = net.to_empty(device=device)
        net.tie_weights()
        init_random(net, seed)
        loaded = set(net.state_dict())
    _finish(net, loaded)
    return net, tokenizer


def hf_config(spec: ModelSpec):
    """The transformers config for a spec (its `hf_config` dict)."""
    from transformers import AutoConfig
    d = {k: v for k, v in spec.hf_config.items() if k not in ("model_type", "transformers_version")}
    return AutoConfig.for_model(spec.arch, **d)


def build_hf_model(spec_or_name: Any, seed: int = 0, dtype: str = "float32"):
    """The transformers model with the same weights as `load_model(spec_or_name, dtype, "cpu", seed)`."""
    from transformers import AutoModelForCausalLM
    ours, _ = load_model(spec_or_name, dtype=dtype, device="cpu", seed=seed)
    hf = AutoModelForCausalLM.from_config(hf_config(ours.spec), dtype=_torch_dtype(dtype))
    hf.load_state_dict(ours.state_dict(), strict=True)
    return hf.eval()
