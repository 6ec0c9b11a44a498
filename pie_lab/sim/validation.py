"""The sim's per-layer compute against measured GPU profiles (`data/kernel_profiles/`, Vidur, MIT).

`layer_linear_ms` is what the sim charges one decoder layer for its non-attention operators;
`validation_table` sets it beside the measured sum of those operators for every profile and token
count, before (the datasheet roofline plus the preset's layer overhead) and after calibration.
The fit set is what `data/hardware_presets.yaml`'s calibrations were fitted on; the held-out set
(models the fit never saw) checks them.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import ConfigError, check_choice, check_int
from ..model_spec import ModelSpec
from .calibration import OPERATORS, LayerShape
from .hardware import DATA_DIR, Hardware, resolve_hardware

PROFILES_DIR = DATA_DIR / "kernel_profiles"
PROFILE_SETS = {"fit": "vidur_fit.csv", "held-out": "vidur_heldout.csv"}
GPU_PRESETS = {"h100": "H100-SXM", "a100": "A100-80GB"}       # Vidur's GPU folders -> our presets
VALIDATION_TOKENS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class Profile:
    """One measured point: a model's layer on a GPU at a token count, per operator (ms)."""

    gpu: str
    model: str
    tokens: int
    shape: LayerShape
    spec: ModelSpec          # the same layer as a ModelSpec (what the uncalibrated roofline reads)
    measured_ms: dict

    @property
    def total_ms(self) -> float:
        return sum(self.measured_ms.values())


def _spec(model: str, heads: int, kv_heads: int, hidden: int, inter: int, gated: bool) -> ModelSpec:
    cfg = dict(model_type="llama" if gated else "opt", num_hidden_layers=1, hidden_size=hidden,
               num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=inter, ffn_dim=inter,
               vocab_size=32000, max_position_embeddings=4096)
    return ModelSpec.from_hf_config(cfg, name=model)


def load_profiles(which: str = "fit", path: str | Path | None = None) -> list[Profile]:
    """The measured points of one set ("fit" or "held-out"); operators a model lacks (phi-2 has no
    second norm) are left out of its sum."""
    check_choice("profile set", which, PROFILE_SETS)
    path = Path(path) if path is not None else PROFILES_DIR / PROFILE_SETS[which]
    if not path.is_file():
        raise ConfigError(f"kernel profile file {path} does not exist")
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            heads, kv, hidden, inter = (int(r[k]) for k in ("n_head", "n_kv_head", "n_embd", "n_expanded_embd"))
            gated = r["use_gated_mlp"] == "True"
            measured = {op: float(r[op]) for op in OPERATORS if r.get(op, "") != ""}
            shape = LayerShape(hidden, hidden, kv * hidden // heads, inter, gated,
                               post_norm="post_attention_layernorm" in measured)
            out.append(Profile(r["gpu"], r["model"], int(r["num_tokens"]), shape,
                               _spec(r["model"], heads, kv, hidden, inter, gated), measured))
    return out


def layer_linear_ms(spec: ModelSpec, hardware: "str | Hardware", num_tokens: int, dtype: str = "float16",
                    *, shape: LayerShape | None = None) -> float:
    """Predicted GPU milliseconds of one decoder layer's non-attention work (norms, QKV, RoPE, output
    projection, MLP, residual add) for a step of `num_tokens` rows, as the sim charges it: the
    preset's calibration where it has one, else the roofline plus the preset's layer overhead.
    `shape` overrides the layer's shape for layers a ModelSpec cannot express."""
    from .cost_model import CostModel
    hw = resolve_hardware(hardware, "H100-SXM")
    check_int("num_tokens", num_tokens, 1)
    cm = CostModel(spec, hw, dtype)
    if shape is not None and hw.calibration is not None and dtype != "float32":
        return hw.calibration.layer_time(shape, num_tokens) * 1e3
    return (cm.linear_time(num_tokens) + cm.layer_overhead) * 1e3


def validation_table(which: str = "fit", tokens: tuple[int, ...] | None = VALIDATION_TOKENS,
                     profiles: list[Profile] | None = None) -> list[dict]:
    """One row per profile and token count: measured ms, the uncalibrated and the calibrated
    prediction, and their ratios to the measurement. `tokens=None`: every profiled count."""
    rows = []
    for p in profiles if profiles is not None else load_profiles(which):
        if tokens is not None and p.tokens not in tokens:
            continue
        hw = resolve_hardware(GPU_PRESETS[p.gpu], "H100-SXM")
        before = layer_linear_ms(p.spec, replace(hw, calibration=None), p.tokens)
        after = layer_linear_ms(p.spec, hw, p.tokens, shape=p.shape)
        rows.append(dict(gpu=p.gpu, preset=hw.name, model=p.model, tokens=p.tokens, measured_ms=p.total_ms,
                         before_ms=before, after_ms=after, before_ratio=before / p.total_ms,
                         after_ratio=after / p.total_ms))
    return rows


def error_summary(rows: list[dict], key: str) -> dict:
    """Mean absolute and worst relative error of `key` ("before" or "after") over `rows`."""
    errs = [abs(r[f"{key}_ratio"] - 1.0) for r in rows]
    if not errs:
        return {"mae": float("nan"), "worst": float("nan"), "points": 0, "within_15pct": 0}
    return {"mae": sum(errs) / len(errs), "worst": max(errs), "points": len(errs),
            "within_15pct": sum(e <= 0.15 for e in errs)}
