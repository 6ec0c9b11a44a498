"""What the replication runs: the paper's figures, the engine configuration shared by every
policy, the search limits and the run modes (full, quick, tiny)."""
from __future__ import annotations

from dataclasses import dataclass

PAPER = {"throughput": 1.9, "latency": 2.0, "memory": 1.67, "flexgen": 9.4}
POLICY_ORDER = ("recompute", "vllm-swap", "flexgen", "pie", "pie-fixed", "hybrid")
# vLLM V0's defaults where a knob has one: max_num_seqs 256, max_num_batched_tokens
# max(max_model_len, 2048) = 2048 for OPT (2048 positions), block size 16; fp16 as in the paper.
ENGINE = dict(dtype="float16", block_size=16, max_num_seqs=256, max_num_batched_tokens=2048, prefetch_depth=2)
MAX_MODEL_LEN = 2048
MEMORY_TOLERANCE = 0.01      # "equal performance": pie's throughput >= 99% of vllm-swap's at full memory
GPU_MEMORY_HEADROOM = 0.10   # as the sim executor and flexgen_search keep free
MEMORY_FLOOR = 0.4           # smallest GPU KV share the memory search tries (ratios up to 2.5x)
SEED = 0


@dataclass(frozen=True)
class Mode:
    name: str
    models: tuple[str, ...]
    workloads: tuple[str, ...]
    presets: tuple[str, ...]
    window_s: dict                       # workload -> seconds of simulated arrivals per cell
    rate_factors: tuple[float, ...]      # request rates as multiples of the measured capacity
    memory_steps: int                    # bisection steps of the GPU-memory search (0: skip)
    memory_variants: tuple[str, ...] = ("pie", "pie-fixed")
    gpu_share: float = 1.0               # GPU KV pool as a share of the preset's default (tiny: memory pressure
                                         # with few requests)
    calibration_requests: int = 3 * ENGINE["max_num_seqs"]
    min_requests: int = 40


# Each cell sends rate x window requests, so every rate covers the same simulated time (and costs
# about the same number of engine steps); the window is a few request lifetimes (a ShareGPT-like
# request lives ~7-10 s of decode, an Alpaca-like one ~1-2 s), long enough for queues to build
# at overload.
MODES = {
    "full": Mode("full", ("opt-13b", "opt-30b"), ("sharegpt-v3", "alpaca"), ("GH200", "H200"),
                 {"sharegpt-v3": 40.0, "alpaca": 8.0}, (0.5, 0.8, 1.0, 1.25, 1.6), 4, ("pie",)),
    "quick": Mode("quick", ("opt-13b", "opt-30b"), ("sharegpt-v3", "alpaca"), ("GH200", "H200"),
                  {"sharegpt-v3": 8.0, "alpaca": 2.0}, (0.6, 1.6), 2, ("pie",), calibration_requests=300),
    # tiny (tests): a few seconds; Alpaca-like requests against a GPU KV pool cut to 10% of the
    # default so that memory, not max_num_seqs, binds with few requests; one overload rate; no
    # memory search
    "tiny": Mode("tiny", ("opt-30b",), ("alpaca",), ("GH200", "H200"), {"alpaca": 4.0}, (2.0,), 0, ("pie",), 0.1,
                 calibration_requests=150),
}
STEADY_FROM = 0.25     # steady throughput: generated tokens/s over [0.25, 1] x the arrival window
