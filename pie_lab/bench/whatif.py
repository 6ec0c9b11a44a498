"""What-if points for the explorer: a hardware preset with its link and HBM bandwidth changed, a KV
space, a model and a workload, run through the sim for a few policies, plus the analytic
transparency bound: the host KV blocks a link hides behind one step's layer compute, link
bandwidth x layer compute time / bytes per block and layer.

Each policy is measured in its steady state (`bench/steady.py`: while requests queue and memory
binds; warm-up and drain left out), every policy timed over the same decode tokens of the
workload, with a band from the two halves of those tokens. The default
request count (`DEFAULT_REQUESTS`) keeps the throughput ratio within a few percent of a run four
times longer (tests/test_whatif.py); `QUICK_REQUESTS` gives the explorer's instant estimate.
Requests that could never fit the KV pools are left out and counted (`meta["unfit"]`).

    p = WhatIfPoint(model="opt-30b", link_gbps=55.5)
    run_point(p).df                  # one row per policy, ratios to the reference policy
    bound_curve(p, batch=64, context=600)
"""
from __future__ import annotations

import tempfile
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import check_choice, check_float, check_int
from ..model_spec import NAMED_SHAPES, named_spec
from ..sim.hardware import load_preset
from .harness import BenchResult, policy_cases, run_benchmark
from .steady import common_tokens, settled, steady_row
from .sweep import GENERATORS

# label -> engine options; add a policy here (or pass `policies=`) and the explorer charts it
POLICIES: dict[str, dict[str, Any]] = {
    "vllm-swap": {"policy": "vllm-swap"},
    "pie": {"policy": "pie", "controller": {"enabled": True}},
    "hybrid": {"policy": "hybrid", "controller": {"enabled": True}},
}
REFERENCE = "vllm-swap"            # ratios are taken against this policy
RATIOS = {"throughput_ratio": "steady_tokens_per_s", "e2e_p50_ratio": "steady_e2e_p50_s",
          "ttft_p50_ratio": "steady_ttft_p50_s", "tpot_p50_ratio": "steady_tpot_p50_s"}
DEFAULT_REQUESTS = 200
QUICK_REQUESTS = 48
METRICS_BYTES = 256 * 2**20        # a run's iteration records, all kept: the window needs the whole run
ITERATION_COLUMNS = ["policy", "step", "start", "end", "batch_size", "prefill_tokens", "decode_tokens", "waiting",
                     "context_tokens", "streamed_blocks", "gpu_blocks_used", "staging_blocks", "gpu_blocks_limit",
                     "host_blocks_used", "swap_budget"]


@dataclass(frozen=True)
class LinkMark:
    label: str
    gbps: float
    source: str


# Host-to-device links worth marking on a bandwidth axis. Only figures with a source.
LINK_MARKS = (
    LinkMark("H200 / H100 PCIe gen5 (measured)", 55.5,
             "measured on H200 2026-11-26, pie-design.md section 4 (pinned, 1 GiB copies); data/hardware_presets.yaml"),
    LinkMark("GH200 C2C measured H2D (preset)", 346.0,
             "nvbandwidth on a GH200 (480 GB LPDDR5X + 96 GB HBM3): host-to-device 346 GB/s (copy engine), "
             "342 GB/s (SM copy); https://github.com/NVIDIA/nvbandwidth/issues/23; data/hardware_presets.yaml"),
    LinkMark("GH200 C2C spec", 450.0, "NVIDIA GH200 datasheet: NVLink-C2C 900 GB/s bidirectional, 450 per direction"),
)


@dataclass(frozen=True)
class WhatIfPoint:
    """One setting of the explorer. `kv_gib`: GPU memory left for the KV cache."""

    model: str = "opt-30b"
    base_hardware: str = "GH200"
    link_gbps: float = 346.0         # GH200's preset (measured C2C host-to-device)
    hbm_gbps: float = 3600.0
    host_gbps: float = 295.2         # the host CPU's attention rate over host KV (policy hybrid); GH200's preset
    kv_gib: float = 8.2
    workload: str = "sharegpt-v3"
    rate: float = 20.0
    num_requests: int = DEFAULT_REQUESTS
    dtype: str = "float16"
    max_num_seqs: int = 128
    seed: int = 0

    def __post_init__(self):
        check_choice("model", self.model, NAMED_SHAPES)
        check_float("link_gbps", self.link_gbps, 0.01, 1e5)
        check_float("hbm_gbps", self.hbm_gbps, 1.0, 1e5)
        check_float("host_gbps", self.host_gbps, 0.01, 1e5)
        check_float("kv_gib", self.kv_gib, 0.01, 1e4)
        check_choice("workload", self.workload, GENERATORS)
        check_float("rate", self.rate, 0.0, 1e6, lo_open=True)
        check_int("num_requests", self.num_requests, 1, 100_000)
        check_int("max_num_seqs", self.max_num_seqs, 1, 65536)

    @property
    def calibration(self) -> str:
        """Whether the point's per-layer compute rests on measured kernels, which, and how far off."""
        from ..sim.calibration import calibration_status
        return calibration_status(self.hardware(), self.dtype)

    @property
    def block_bytes(self) -> int:
        return named_spec(self.model).kv_block_bytes(16, self.dtype)

    @property
    def num_gpu_blocks(self) -> int:
        return max(1, int(self.kv_gib * 2**30 // self.block_bytes))

    def hardware(self):
        """The base preset with this point's HBM, link and host attention bandwidth (device-to-host
        scaled with the link, keeping the preset's asymmetry; host memory raised to the host rate
        where it would cap it)."""
        hw = load_preset(self.base_hardware)
        fit = hw.calibration
        if fit is not None and self.hbm_gbps != hw.hbm_gbps:
            fit = fit.with_memory_scaled(self.hbm_gbps / hw.hbm_gbps, f"what-if HBM {self.hbm_gbps:,.0f} GB/s "
                                         f"(the preset's {hw.hbm_gbps:,.0f}): memory-bound terms scaled")
        return replace(hw, name=f"{hw.name}-whatif", hbm_gbps=self.hbm_gbps, calibration=fit,
                       hbm_gbps_peak=max(hw.hbm_gbps_peak, self.hbm_gbps), h2d_gbps=self.link_gbps,
                       d2h_gbps=self.link_gbps * hw.d2h_gbps / hw.h2d_gbps, host_memory_gbps=max(hw.host_memory_gbps, self.host_gbps),
                       description=f"{hw.description}; what-if link, HBM and host")

    def engine_options(self, hardware_path: str) -> dict:
        return dict(hardware=hardware_path, dtype=self.dtype, num_gpu_blocks=self.num_gpu_blocks,
                    num_host_blocks=8 * self.num_gpu_blocks, max_num_seqs=self.max_num_seqs,
                    link_bandwidth_gbps=self.link_gbps, host_attention_gbps=self.host_gbps)


def run_point(point: WhatIfPoint, policies: Mapping[str, Mapping[str, Any]] | None = None) -> BenchResult:
    """The point's workload through each policy in the sim; `df` gains the steady-state columns
    (`bench/steady.py`), `<metric>_ratio` columns against the reference policy (throughput: higher
    is better; latencies: lower is better) and the throughput ratio's band (`throughput_ratio_lo`,
    `_hi`: the window's halves). Results are cached per point and policies."""
    key = _key(point, policies)
    if key not in _CACHE:
        _CACHE[key] = _run(point, key[1])
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    return _CACHE[key]


def is_cached(point: WhatIfPoint, policies: Mapping[str, Mapping[str, Any]] | None = None) -> bool:
    """Whether `run_point` answers this at once."""
    return _key(point, policies) in _CACHE


def _key(point: WhatIfPoint, policies) -> tuple:
    return point, tuple((k, _freeze(v)) for k, v in dict(policies or POLICIES).items())


CACHE_SIZE = 32
_CACHE: OrderedDict = OrderedDict()


def _run(point: WhatIfPoint, frozen: tuple) -> BenchResult:
    import pandas as pd
    from .sweep import WorkloadSpec
    entries = [dict(_thaw(opts), label=label) for label, opts in frozen]
    reqs = WorkloadSpec(point.workload, point.num_requests, point.rate, point.seed).build(named_spec(point.model))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "whatif.yaml"
        point.hardware().to_yaml(path)
        options = point.engine_options(str(path))
        reqs, unfit = fitting(point.model, entries, reqs, options)
        res = run_benchmark(point.model, "sim", entries, reqs, options, progress=False, metrics_bytes=METRICS_BYTES)
    runs = [(res.requests[res.requests["policy"] == p], res.iterations[res.iterations["policy"] == p])
            for p in res.df["policy"]]
    tokens = common_tokens([its for _, its in runs])
    rows = [steady_row(reqs_p, its, tokens) for reqs_p, its in runs]
    df = pd.concat([res.df, pd.DataFrame(rows, index=res.df.index)], axis=1)
    ref = df[df["policy"] == REFERENCE]
    for name, col in RATIOS.items():
        df[name] = df[col] / ref[col].iloc[0] if len(ref) else float("nan")
    if len(ref):
        halves = [df[f"{h}_tokens_per_s"] / ref[f"{h}_tokens_per_s"].iloc[0] for h in ("first_half", "second_half")]
        df["throughput_ratio_lo"] = pd.concat(halves + [df["throughput_ratio"]], axis=1).min(axis=1)
        df["throughput_ratio_hi"] = pd.concat(halves + [df["throughput_ratio"]], axis=1).max(axis=1)
    return BenchResult(df, res.requests, res.iterations[ITERATION_COLUMNS],
                       {**res.meta, "point": point, "calibration": point.calibration, "unfit": unfit, "settled": settled(rows)})


def fitting(model: str, entries: list, reqs: list, options: Mapping[str, Any]) -> tuple[list, dict]:
    """The requests every policy's engine can hold, and {"count", "reason"} for those none can (a
    request alone larger than a KV pool). Raises ConfigError if none fits."""
    from ..engine_factory import create_engine
    from ..errors import ConfigError
    from ..sampling import SamplingParams
    reasons: dict[int, str | None] = {}
    for case in policy_cases(entries, options):
        engine = create_engine(model, "sim", case.config)
        try:
            for total in sorted({len(r.prompt_token_ids) + r.max_tokens for r in reqs}):
                if reasons.get(total) is None:
                    try:             # one probe per total length: the block count is what binds
                        engine.check_request([0], SamplingParams(max_tokens=total - 1))
                        reasons[total] = None
                    except ConfigError as exc:
                        reasons[total] = f"{case.label}: {exc}"
        finally:
            engine.close()
    keep = [r for r in reqs if reasons[len(r.prompt_token_ids) + r.max_tokens] is None]
    bad = [reasons[t] for t in sorted(reasons) if reasons[t] is not None]
    unfit = {"count": len(reqs) - len(keep), "of": len(reqs), "reason": bad[-1] if bad else ""}
    if not keep:
        raise ConfigError(f"none of the {len(reqs)} requests fits the KV pools: {unfit['reason']}")
    return keep, unfit


def _freeze(v):
    return tuple(sorted((k, _freeze(x)) for k, x in v.items())) if isinstance(v, Mapping) else v


def _thaw(v):
    return {k: _thaw(x) for k, x in v} if isinstance(v, tuple) else v


def layer_ms(point: WhatIfPoint, batch: int, context: int) -> float:
    """Milliseconds one decoder layer computes for a decode step of `batch` sequences at `context` tokens."""
    from ..sim.cost_model import CostModel, StepShape
    check_int("batch", batch, 1)
    check_int("context", context, 1)
    cm = CostModel(named_spec(point.model), point.hardware(), point.dtype, 16)
    return cm.layer_time(StepShape.decode(batch, context)) * 1e3


def hybrid_limits(point: WhatIfPoint, batch: int, context: int) -> dict:
    """Policy hybrid's bound at this point (`pie_lab.sim.host_cost.hybrid_bound`): GB of host-resident
    KV per decode step the link and the host's attention serve without a stall, and what limits it."""
    from ..sim.cost_model import CostModel
    from ..sim.host_cost import hybrid_bound
    check_int("batch", batch, 1)
    check_int("context", context, 1)
    cm = CostModel(named_spec(point.model), point.hardware(), point.dtype, 16, host_attention_gbps=point.host_gbps)
    return hybrid_bound(cm, batch, context)


def hidden_blocks(point: WhatIfPoint, batch: int, context: int, link_gbps: float | None = None) -> float:
    """The transparency bound: host KV blocks one step can stream with no stall (link x layer time)."""
    return float(bound_curve(point, batch, context, [link_gbps or point.link_gbps])["hidden_blocks"].iloc[0])


def bound_curve(point: WhatIfPoint, batch: int, context: int, bandwidths=None):
    """The transparency bound over a range of link bandwidths (GB/s): blocks hidden per step."""
    import numpy as np
    import pandas as pd
    bandwidths = np.geomspace(5, 2000, 40) if bandwidths is None else np.asarray(bandwidths, float)
    ms = layer_ms(point, batch, context)
    per_layer = point.block_bytes / named_spec(point.model).num_layers
    return pd.DataFrame({"link_gbps": bandwidths, "layer_ms": ms, "hidden_blocks": bandwidths * 1e9 * ms * 1e-3 / per_layer})
