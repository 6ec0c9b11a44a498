"""Kernel calibration: one decoder layer's non-attention operators timed from curves fitted to
measured GPU profiles (Vidur's per-operator medians, `data/kernel_profiles/`).

A GEMM of M rows, K inputs and N outputs takes
    t0 + (compute**p + memory**p) ** (1/p),
    compute = 2 * ceil(M / tile) * tile * N * K / flops,  memory = 2 * (N*K + M*K + M*N) / hbm,
which is the roofline's max() rounded off where the two meet (p) and floored by one kernel's fixed
cost (t0); the tile rounding is the tensor cores' work on padded rows. An elementwise operator
(norms, RoPE, the MLP's activation, the residual add) takes a + b * tokens * width. The operators
and their widths are Vidur's: see `OPERATORS`. `benchmarks/fit_kernels.py` fits the figures;
`data/hardware_presets.yaml` carries them per GPU (`calibration:`), with their source and error.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from ..errors import ConfigError, check_float, check_int
from ..model_spec import ModelSpec

GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
ELEMENTWISE = ("input_layernorm", "attn_rope", "post_attention_layernorm", "mlp_act", "add")
OPERATORS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm",
             "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
STATUSES = ("measured", "transferred")


@dataclass(frozen=True)
class LayerShape:
    """What one decoder layer's non-attention cost depends on."""

    hidden: int
    q_dim: int              # heads x head_dim
    kv_dim: int             # kv heads x head_dim
    intermediate: int
    gated: bool             # gate and up projections (Llama family) or one up projection (OPT)
    rope: bool = True
    post_norm: bool = True  # a second norm before the MLP (absent in parallel-residual models)

    @classmethod
    def of(cls, spec: ModelSpec) -> "LayerShape":
        return cls(spec.hidden_size, spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim,
                   spec.intermediate_size, gated=not spec.is_opt, rope=not spec.is_opt)

    def gemm(self, op: str) -> tuple[int, int]:
        """(K, N) of a GEMM operator: inputs and outputs per row."""
        h, i = self.hidden, self.intermediate
        return {"attn_pre_proj": (h, self.q_dim + 2 * self.kv_dim), "attn_post_proj": (self.q_dim, h),
                "mlp_up_proj": (h, 2 * i if self.gated else i), "mlp_down_proj": (i, h)}[op]

    def width(self, op: str) -> int:
        """Elements per row an elementwise operator touches (0: the layer does not have it)."""
        return {"input_layernorm": self.hidden, "post_attention_layernorm": self.hidden if self.post_norm else 0,
                "attn_rope": (self.q_dim + self.kv_dim) if self.rope else 0,
                "mlp_act": self.intermediate, "add": self.hidden}[op]


@dataclass(frozen=True)
class KernelFit:
    """Fitted figures of one GPU (fp16/bf16), where they come from and how far off they are."""

    gemm_tflops: float          # asymptotic GEMM rate of the fitted curve
    gemm_gbps: float            # asymptotic bandwidth of a memory-bound GEMM
    gemm_fixed_us: float        # per-GEMM fixed cost
    gemm_sharpness: float       # p: how sharply memory- and compute-bound meet (large p: max())
    gemm_tile: int              # rows are padded to a multiple of this in the compute term
    elementwise: Mapping[str, tuple[float, float]] = field(compare=False)   # op -> (us, ns per element)
    attention_tflops: float = 0.0   # prefill attention's achieved rate (published FlashAttention figures)
    attention_gbps: float = 0.0     # decode attention's achieved KV bandwidth (published FlashInfer figures)
    attention_fixed_us: float = 0.0  # the KV write and attention kernels' fixed cost per layer
    attention_sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    status: str = "measured"    # measured on this GPU, or transferred from another one
    source: str = ""
    fitted_on: tuple[str, ...] = ()
    error: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        for name, hi in (("gemm_tflops", 1e5), ("gemm_gbps", 1e5), ("gemm_fixed_us", 1e4), ("gemm_sharpness", 100.0),
                         ("attention_tflops", 1e5), ("attention_gbps", 1e5), ("attention_fixed_us", 1e4)):
            object.__setattr__(self, name, check_float(f"calibration.{name}", getattr(self, name), 0.0, hi,
                                                       lo_open=name in ("gemm_tflops", "gemm_gbps", "gemm_sharpness")))
        for name in ("attention_tflops", "attention_gbps"):
            if getattr(self, name) > 0 and not str(self.attention_sources.get(name, "")).strip():
                raise ConfigError(f"calibration.{name} needs a source in calibration.attention_sources")
        object.__setattr__(self, "attention_sources", dict(self.attention_sources))
        check_int("calibration.gemm_tile", self.gemm_tile, 1, 1024)
        if self.status not in STATUSES:
            raise ConfigError(f"calibration.status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        missing = [op for op in ELEMENTWISE if op not in self.elementwise]
        if missing:
            raise ConfigError(f"calibration.elementwise lacks {', '.join(missing)}: each needs [us, ns per element]")
        ew = {}
        for op, pair in self.elementwise.items():
            if op not in ELEMENTWISE or len(pair) != 2:
                raise ConfigError(f"calibration.elementwise.{op}: expected one of {', '.join(ELEMENTWISE)} "
                                  f"with [us, ns per element], got {pair!r}")
            ew[op] = (check_float(f"calibration.elementwise.{op}[0]", pair[0], 0.0, 1e4),
                      check_float(f"calibration.elementwise.{op}[1]", pair[1], 0.0, 1e3))
        object.__setattr__(self, "elementwise", ew)
        if not str(self.source).strip():
            raise ConfigError("calibration.source must say which measurements the figures were fitted on")
        object.__setattr__(self, "fitted_on", tuple(self.fitted_on))
        object.__setattr__(self, "error", dict(self.error))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "KernelFit":
        d = dict(d)
        d["elementwise"] = {k: tuple(v) for k, v in dict(d.get("elementwise", {})).items()}
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"calibration block: {exc}") from None

    def to_dict(self) -> dict:
        return {"gemm_tflops": self.gemm_tflops, "gemm_gbps": self.gemm_gbps, "gemm_fixed_us": self.gemm_fixed_us,
                "gemm_sharpness": self.gemm_sharpness, "gemm_tile": self.gemm_tile,
                "attention_tflops": self.attention_tflops, "attention_gbps": self.attention_gbps,
                "attention_fixed_us": self.attention_fixed_us, "attention_sources": dict(self.attention_sources),
                "elementwise": {k: list(v) for k, v in self.elementwise.items()}, "status": self.status,
                "source": self.source, "fitted_on": list(self.fitted_on), "error": dict(self.error)}

    # -- prediction (seconds) ------------------------------------------------------------------
    def gemm_time(self, m: int, k: int, n: int) -> float:
        rows = -(-m // self.gemm_tile) * self.gemm_tile      # ceil; works on numpy arrays too
        compute = 2.0 * rows * n * k / (self.gemm_tflops * 1e12)
        memory = 2.0 * (n * k + m * k + m * n) / (self.gemm_gbps * 1e9)
        p = self.gemm_sharpness
        return self.gemm_fixed_us * 1e-6 + (compute ** p + memory ** p) ** (1.0 / p)

    def operator_times(self, shape: LayerShape, tokens: int) -> dict[str, float]:
        """Seconds per operator for a step of `tokens` rows (operators the layer lacks: 0)."""
        out = {}
        for op in OPERATORS:
            if op in GEMMS:
                k, n = shape.gemm(op)
                out[op] = self.gemm_time(tokens, k, n)
            else:
                width = shape.width(op)
                a, b = self.elementwise[op]
                out[op] = 0.0 if width == 0 else a * 1e-6 + b * 1e-9 * tokens * width
        return out

    def layer_time(self, shape: LayerShape, tokens: int) -> float:
        """Seconds of one layer's non-attention operators (0 rows: 0 s)."""
        return sum(self.operator_times(shape, tokens).values()) if tokens > 0 else 0.0

    def with_memory_scaled(self, ratio: float, why: str) -> "KernelFit":
        """The fit on a GPU whose memory bandwidth is `ratio` times this one's (same compute): the
        memory-bound GEMM rate, decode attention and the elementwise per-element costs scale."""
        check_float("memory bandwidth ratio", ratio, 0.0, 1e3, lo_open=True)
        if ratio == 1.0:
            return self
        ew = {op: (a, b / ratio) for op, (a, b) in self.elementwise.items()}
        return replace(self, gemm_gbps=self.gemm_gbps * ratio, attention_gbps=self.attention_gbps * ratio,
                       elementwise=ew, status="transferred", source=f"{self.source}; {why}")

    def describe(self) -> str:
        """One line for the UI and the reports: what the figures rest on and how far off they are."""
        err = self.error
        held = err.get("held_out")
        parts = [f"calibrated ({self.status}) on {self.source}"]
        if err.get("fit"):
            on = f" (on {err['fit']['gpu']})" if err["fit"].get("gpu") else ""
            parts.append(f"fit MAE {err['fit']['mae']:.1%}, worst {err['fit']['worst']:.1%}{on}")
        if held:
            parts.append(f"held-out MAE {held['mae']:.1%}, worst {held['worst']:.1%} ({held['models']})")
        return "; ".join(parts)


UNCALIBRATED = "uncalibrated: a roofline from the preset's figures, not checked against measured kernels"


def calibration_status(hardware: Any, dtype: str = "float16") -> str:
    """What a preset's per-layer compute rests on for `dtype`, in one line (the fits are fp16/bf16)."""
    fit = getattr(hardware, "calibration", None)
    if fit is not None and dtype == "float32":
        return f"{UNCALIBRATED} (the preset's calibration is for fp16/bf16, this run is float32)"
    return UNCALIBRATED if fit is None else fit.describe()
