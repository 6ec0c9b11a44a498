"""OPT decoders with paged attention: the whole family, pre-layer-norm (opt-125m, opt-1.3b and up) and
opt-350m's post-layer-norm with a narrower word embedding (project_in / project_out)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..model_spec import ModelSpec
from .attention import write_kv
from .base import PagedDecoder
from .batch import ForwardBatch

ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}
POSITION_OFFSET = 2         # OPT's learned positions start at row 2


class OPTAttention(nn.Module):
    def __init__(self, h: int, bias: bool):
        super().__init__()
        self.q_proj = nn.Linear(h, h, bias=bias)
        self.k_proj = nn.Linear(h, h, bias=bias)
        self.v_proj = nn.Linear(h, h, bias=bias)
        self.out_proj = nn.Linear(h, h, bias=bias)


class OPTLayer(nn.Module):
    def __init__(self, spec: ModelSpec, bias: bool):
        super().__init__()
        h = spec.hidden_size
        self.self_attn = OPTAttention(h, bias)
        self.self_attn_layer_norm = nn.LayerNorm(h)
        self.fc1 = nn.Linear(h, spec.intermediate_size, bias=bias)
        self.fc2 = nn.Linear(spec.intermediate_size, h, bias=bias)
        self.final_layer_norm = nn.LayerNorm(h)


class OPTForPagedLM(PagedDecoder):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        cfg = spec.hf_config
        self.spec, self.num_layers = spec, spec.num_layers
        act = cfg.get("activation_function", "relu")
        if act not in ACTIVATIONS:
            raise ConfigError(f"OPT activation_function={act!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        if not cfg.get("layer_norm_elementwise_affine", True):
            raise ConfigError("OPT layer_norm_elementwise_affine=False is not supported; allowed: true")
        self.act = ACTIVATIONS[act]
        self.tied = bool(cfg.get("tie_word_embeddings", True))
        self.scale = spec.head_dim ** -0.5
        self.pre_norm = bool(cfg.get("do_layer_norm_before", True))
        bias = bool(cfg.get("enable_bias", True))
        h, e = spec.hidden_size, cfg.get("word_embed_proj_dim") or spec.hidden_size

        self.model = nn.Module()
        dec = self.model.decoder = nn.Module()
        dec.embed_tokens = nn.Embedding(spec.vocab_size, e)
        dec.embed_positions = nn.Embedding(spec.max_position_embeddings + POSITION_OFFSET, h)
        dec.project_in = nn.Linear(e, h, bias=False) if e != h else None
        dec.project_out = nn.Linear(h, e, bias=False) if e != h else None
        dec.layers = nn.ModuleList(OPTLayer(spec, bias) for _ in range(spec.num_layers))
        dec.final_layer_norm = nn.LayerNorm(h) if self.pre_norm and not cfg.get("_remove_final_layer_norm") \
            else None
        self.lm_head = nn.Linear(e, spec.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.tied:
            self.lm_head.weight = self.model.decoder.embed_tokens.weight

    def embed(self, batch: ForwardBatch) -> Tensor:
        dec = self.model.decoder
        x = dec.embed_tokens(batch.input_ids)                          # [T, E]
        if dec.project_in is not None:
            x = dec.project_in(x)                                      # [T, H]
        return x + dec.embed_positions(batch.positions + POSITION_OFFSET)

    def attention_input(self, l: int, hidden: Tensor, batch: ForwardBatch, kv_layer: Tensor) -> Tensor:
        blk = self.model.decoder.layers[l]
        attn = blk.self_attn
        T = hidden.shape[0]
        nh, hd = self.spec.num_heads, self.spec.head_dim
        # pre-norm: x + f(norm(x)); post-norm (opt-350m): norm(x + f(x))
        x = blk.self_attn_layer_norm(hidden) if self.pre_norm else hidden
        # transformers scales q before the product (attn_scale 1.0 in attention); same order here
        q = (attn.q_proj(x) * self.scale).view(T, nh, hd)
        write_kv(kv_layer, attn.k_proj(x).view(T, nh, hd), attn.v_proj(x).view(T, nh, hd), batch.slot_mapping)
        return q

    def post_attention(self, l: int, hidden: Tensor, o: Tensor) -> Tensor:
        blk = self.model.decoder.layers[l]
        hidden = hidden + blk.self_attn.out_proj(o.reshape(o.shape[0], -1))
        if not self.pre_norm:
            hidden = blk.self_attn_layer_norm(hidden)
        x = blk.final_layer_norm(hidden) if self.pre_norm else hidden
        hidden = hidden + blk.fc2(self.act(blk.fc1(x)))
        return hidden if self.pre_norm else blk.final_layer_norm(hidden)

    def compute_logits(self, hidden: Tensor, batch: ForwardBatch) -> Tensor:
        dec = self.model.decoder
        x = hidden[batch.logits_indices]                                # [N, H]
        if dec.final_layer_norm is not None:
            x = dec.final_layer_norm(x)
        if dec.project_out is not None:
            x = dec.project_out(x)                                      # [N, E]
        return self.lm_head(x).float()
