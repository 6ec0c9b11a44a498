"""FlexGen-style offline policy search: a static host-resident KV fraction and a batch size.

FlexGen's model, as the baseline Pie compares with: a fixed fraction of every sequence's KV
lives on the host and is streamed to the GPU for every decode step, layer by layer, on the
critical path (not hidden behind compute); the fraction is chosen once, here, and never adapted.
The whole batch runs together: one prefill, then output_len - 1 decode steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..config import check_field
from ..errors import ConfigError, check_float, check_int
from ..model_spec import ModelSpec
from .cost_model import CostModel, StepShape
from .hardware import Hardware

GPU_MEMORY_HEADROOM = 0.10
STAGING_LAYERS = 2                  # double-buffered per-layer staging of the streamed share
DEFAULT_FRACTIONS = tuple(i / 20 for i in range(21))
DEFAULT_BATCH_SIZES = tuple(sorted({2 ** i for i in range(11)} | {3 * 2 ** i for i in range(9)}))   # 1, 2, 3, 4, 6, 8, ... 1024


@dataclass(frozen=True)
class FlexGenPolicy:
    fraction: float                 # share of KV on the host
    batch_size: int
    tokens_per_s: float             # predicted generated tokens per second
    table: tuple[dict, ...]         # every grid point, feasible or not

    def to_config_options(self) -> dict:
        return {"policy": "flexgen", "flexgen_fraction": self.fraction, "max_num_seqs": self.batch_size}


def evaluate(cm: CostModel, fraction: float, batch: int, prompt_len: int, output_len: int,
             gpu_kv_bytes: float, host_kv_bytes: float | None) -> dict:
    """One grid point: memory use, step times and predicted throughput."""
    spec, n = cm.spec, cm.spec.num_layers
    tok_bytes = spec.kv_bytes_per_token_per_layer(cm.dtype) * n
    kv_peak = batch * (prompt_len + output_len) * tok_bytes
    gpu_need = (1 - fraction) * kv_peak + STAGING_LAYERS * fraction * kv_peak / n
    host_need = fraction * kv_peak
    feasible = gpu_need <= gpu_kv_bytes and (host_kv_bytes is None or host_need <= host_kv_bytes)
    step_overhead = cm.hardware.step_overhead_us * 1e-6

    pre = StepShape.prefill(batch, prompt_len)
    prefill = (step_overhead + n * cm.layer_time(pre) + cm.head_time(pre)
               + cm.copy_time(int(fraction * batch * prompt_len * tok_bytes), calls=n, direction="d2h"))
    ctx = prompt_len + (output_len + 1) // 2
    dec = StepShape.decode(batch, ctx)
    stream = n * cm.copy_time(int(fraction * batch * ctx * tok_bytes / n))
    decode = step_overhead + n * cm.layer_time(dec) + cm.head_time(dec) + stream
    total = prefill + (output_len - 1) * decode
    return {"fraction": fraction, "batch_size": batch, "feasible": feasible,
            "gpu_kv_gib": gpu_need / 2**30, "host_kv_gib": host_need / 2**30,
            "prefill_s": prefill, "decode_step_s": decode, "stream_s_per_step": stream,
            "tokens_per_s": batch * output_len / total}


def flexgen_search(spec: ModelSpec, hardware: Hardware, *, prompt_len: float, output_len: float,
                   dtype: str = "float16", gpu_kv_limit_gb: float | None = None,
                   host_kv_limit_gb: float | None = None, block_size: int = 16,
                   link_bandwidth_gbps: float | None = None, link_latency_us: float | None = None,
                   fractions: Sequence[float] = DEFAULT_FRACTIONS,
                   batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES) -> FlexGenPolicy:
    """The (fraction, batch size) of the grid with the highest predicted throughput.

    gpu_kv_limit_gb: GPU memory for KV in GiB (2**30 bytes); default the preset's memory minus
    10% headroom minus the weights. Average lengths are rounded to whole tokens.
    """
    p = check_int("prompt_len", round(check_float("prompt_len", prompt_len, 1.0, 1e7)), 1)
    o = check_int("output_len", round(check_float("output_len", output_len, 1.0, 1e7)), 1)
    cm = CostModel(spec, hardware, dtype, block_size, link_bandwidth_gbps, link_latency_us)
    if gpu_kv_limit_gb is None:
        gpu_kv = hardware.gpu_memory_bytes * (1 - GPU_MEMORY_HEADROOM) - cm.weight_bytes
    else:
        gpu_kv = check_field("gpu_kv_limit_gb", gpu_kv_limit_gb) * 2**30
    if gpu_kv <= 0:
        raise ConfigError(f"{spec.name} weights ({cm.weight_bytes / 2**30:.1f} GiB) leave no GPU memory for KV "
                          f"on {hardware.name}; weight offloading is not modelled")
    host_kv = None if host_kv_limit_gb is None else check_field("host_kv_limit_gb", host_kv_limit_gb) * 2**30
    if not fractions or not batch_sizes:
        raise ConfigError("fractions and batch_sizes must be non-empty")
    for f in fractions:
        check_float("fraction", f, 0.0, 1.0)
    for b in batch_sizes:
        check_int("batch_size", b, 1)

    table = tuple(evaluate(cm, float(f), int(b), p, o, gpu_kv, host_kv) for f in fractions for b in batch_sizes)
    feasible = [r for r in table if r["feasible"]]
    if not feasible:
        need = min(r["gpu_kv_gib"] for r in table)
        raise ConfigError(f"no grid point fits: the smallest needs {need:.2f} GiB of GPU KV memory, "
                          f"{gpu_kv / 2**30:.2f} GiB available")
    best = max(feasible, key=lambda r: (r["tokens_per_s"], -r["fraction"]))
    return FlexGenPolicy(best["fraction"], best["batch_size"], best["tokens_per_s"], table)
