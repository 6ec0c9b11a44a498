"""Llama-family decoders (Llama 2/3, Mistral, Qwen2): RoPE, RMSNorm, GQA, SwiGLU, paged attention."""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..model_spec import ModelSpec
from . import cpu_kernels
from .attention import write_kv
from .base import PagedDecoder
from .batch import ForwardBatch

ROPE_TYPES = ("default", "linear", "llama3")


def rope_parameters(cfg: Mapping[str, Any]) -> dict:
    """RoPE settings from a transformers 5 `rope_parameters` dict or the older rope_theta/rope_scaling."""
    params = dict(cfg.get("rope_parameters") or {})
    if not params:
        params = dict(cfg.get("rope_scaling") or {})
    params.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    if params["rope_type"] not in ROPE_TYPES:
        raise ConfigError(f"rope_type={params['rope_type']!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    if params["rope_type"] == "llama3":
        params.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    return params


def rope_inv_freq(params: Mapping[str, Any], head_dim: int, device=None) -> Tensor:
    """[hd/2] inverse frequencies, as transformers computes them (incl. llama3 scaling)."""
    base = float(params["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float)
                               / head_dim))
    if params["rope_type"] == "linear":
        return inv_freq / params["factor"]
    if params["rope_type"] != "llama3":
        return inv_freq
    factor, lo, hi = params["factor"], params["low_freq_factor"], params["high_freq_factor"]
    old_ctx = params["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_ctx / lo, old_ctx / hi
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: [T, h, hd]; cos, sin: [T, hd/2] (or [T, 1, hd/2] in x's dtype). Same arithmetic as
    transformers' rotate_half form."""
    x1, x2 = x.chunk(2, dim=-1)
    c, s = (cos, sin) if cos.dim() == 3 else (cos[:, None].to(x.dtype), sin[:, None].to(x.dtype))
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if cpu_kernels.active(x, "rms_norm"):
            return cpu_kernels.rms_norm(x, self.weight.detach(), self.eps)
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LlamaAttention(nn.Module):
    FUSE = {"qkv": ("q_proj", "k_proj", "v_proj")}             # one packed GEMM (model/linears.py)
    qkv = None

    def __init__(self, spec: ModelSpec, qkv_bias: bool, o_bias: bool):
        super().__init__()
        h, nh, kvh, hd = spec.hidden_size, spec.num_heads, spec.num_kv_heads, spec.head_dim
        self.q_proj = nn.Linear(h, nh * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(h, kvh * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(h, kvh * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(nh * hd, h, bias=o_bias)


class LlamaMLP(nn.Module):
    FUSE = {"gate_up": ("gate_proj", "up_proj")}
    gate_up = None

    def __init__(self, spec: ModelSpec, bias: bool):
        super().__init__()
        self.gate_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=bias)
        self.up_proj = nn.Linear(spec.hidden_size, spec.intermediate_size, bias=bias)
        self.down_proj = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up is not None and cpu_kernels.active(x, "silu_mul"):
            return self.down_proj(cpu_kernels.silu_mul(self.gate_up.joint(x)))
        gate, up = (self.gate_proj(x), self.up_proj(x)) if self.gate_up is None else self.gate_up(x)
        return self.down_proj(F.silu(gate) * up)


class LlamaLayer(nn.Module):
    def __init__(self, spec: ModelSpec, qkv_bias: bool, o_bias: bool, mlp_bias: bool, eps: float):
        super().__init__()
        self.self_attn = LlamaAttention(spec, qkv_bias, o_bias)
        self.mlp = LlamaMLP(spec, mlp_bias)
        self.input_layernorm = RMSNorm(spec.hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, eps)


class LlamaForPagedLM(PagedDecoder):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        cfg = spec.hf_config
        self.spec, self.num_layers = spec, spec.num_layers
        self.rope = rope_parameters(cfg)
        eps = cfg.get("rms_norm_eps", 1e-6)
        if spec.arch == "qwen2":
            qkv_bias, o_bias, mlp_bias = True, False, False
            if cfg.get("use_sliding_window"):
                raise ConfigError("qwen2 use_sliding_window=True is not supported; allowed: false")
            self.window = None
        else:
            qkv_bias = o_bias = bool(cfg.get("attention_bias", False))
            mlp_bias = bool(cfg.get("mlp_bias", False))
            self.window = cfg.get("sliding_window") if spec.arch == "mistral" else None
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.scale = self.attn_scale = spec.head_dim ** -0.5

        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.model.layers = nn.ModuleList(LlamaLayer(spec, qkv_bias, o_bias, mlp_bias, eps)
                                          for _ in range(spec.num_layers))
        self.model.norm = RMSNorm(spec.hidden_size, eps)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        self.tie_weights()
        self._cos = self._sin = None                                   # [max_pos, hd/2] float32

    def tie_weights(self) -> None:
        if self.tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def init_buffers(self) -> None:
        dev = self.model.embed_tokens.weight.device
        inv_freq = rope_inv_freq(self.rope, self.spec.head_dim, dev)
        freqs = torch.arange(self.spec.max_position_embeddings, device=dev).float()[:, None] * inv_freq[None]
        self._cos, self._sin = freqs.cos(), freqs.sin()

    def embed(self, batch: ForwardBatch) -> Tensor:
        return self.model.embed_tokens(batch.input_ids)

    def attention_input(self, l: int, hidden: Tensor, batch: ForwardBatch, kv_layer: Tensor) -> Tensor:
        if self._cos is None or self._cos.device != hidden.device:
            self.init_buffers()
        attn = self.model.layers[l].self_attn
        T = hidden.shape[0]
        nh, kvh, hd = self.spec.num_heads, self.spec.num_kv_heads, self.spec.head_dim
        x = self.model.layers[l].input_layernorm(hidden)
        if batch.rope is None:                    # once per step: every layer rotates the same positions
            pos = batch.positions
            batch.rope = (self._cos[pos][:, None].to(x.dtype), self._sin[pos][:, None].to(x.dtype))
        if attn.qkv is not None and cpu_kernels.active(x, "rope_write_kv") and kv_layer.dtype == x.dtype:
            return cpu_kernels.rope_write_kv(attn.qkv.joint(x), nh, kvh, *batch.rope, kv_layer, batch.slot_mapping)
        q, k, v = (attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)) if attn.qkv is None else attn.qkv(x)
        q, k, v = q.view(T, nh, hd), k.view(T, kvh, hd), v.view(T, kvh, hd)
        q, k = apply_rope(q, *batch.rope), apply_rope(k, *batch.rope)
        write_kv(kv_layer, k, v, batch.slot_mapping)
        return q

    def post_attention(self, l: int, hidden: Tensor, o: Tensor) -> Tensor:
        blk = self.model.layers[l]
        hidden = hidden + blk.self_attn.o_proj(o.reshape(o.shape[0], -1))
        return hidden + blk.mlp(blk.post_attention_layernorm(hidden))

    def compute_logits(self, hidden: Tensor, batch: ForwardBatch) -> Tensor:
        return self.lm_head(self.model.norm(hidden[batch.logits_indices])).float()
