"""The squeeze: how hard GPU memory limits the batch, the one number that moves "how much does Pie win".

    squeeze = KV the offered load wants / KV the GPU holds

The KV the offered load wants is what the requests in flight would hold if GPU memory were
unlimited: requests in flight x the running context (the mean context of a running sequence,
weighted by its time in the batch: sum(o * (p + o/2)) / sum(o) over prompt p and output o tokens).
Requests in flight: all sent at once, min(max_num_seqs, requests); sent at a rate, Little's law
with the decode step time of that batch, N = rate x mean output x step_s(N, context), solved as a
fixed point and capped at max_num_seqs (a rate the engine cannot keep up with even with unlimited
memory queues, and the batch is max_num_seqs). The KV the GPU holds: its KV blocks x block size.

Below 1 everything fits and a host tier has nothing to do; at 2 a GPU-only engine runs half the
batch the load asks for. The ratio pie / vllm-swap rises with the squeeze as far as the link can
stream the extra KV behind compute (GH200's NVLink-C2C much further than PCIe).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import ConfigError, check_float, check_int

StepTime = Callable[[int, float], float]        # (batch, context tokens) -> seconds of one decode step


@dataclass(frozen=True)
class Squeeze:
    value: float               # demand_tokens / capacity_tokens
    in_flight: float           # requests the offered load keeps in flight with unlimited KV
    running_context: float     # tokens a running sequence holds, time-weighted
    capacity_tokens: int       # GPU KV blocks x block size
    rate: float | None         # offered requests/s; None: all sent at once

    @property
    def demand_tokens(self) -> float:
        return self.in_flight * self.running_context

    def __str__(self) -> str:
        return (f"squeeze {self.value:.2f} (the load wants {self.demand_tokens:,.0f} tokens of KV: "
                f"{self.in_flight:.0f} requests x {self.running_context:.0f} tokens; the GPU holds "
                f"{self.capacity_tokens:,})")


def running_context(prompt_lens: Sequence[int], output_lens: Sequence[int]) -> float:
    """Mean context of a running sequence over its decode steps, weighted by time in the batch."""
    if len(prompt_lens) != len(output_lens) or not len(prompt_lens):
        raise ConfigError("running_context needs one prompt and one output length per request, at least one")
    weight = sum(output_lens)
    if weight <= 0:
        return float(sum(prompt_lens)) / len(prompt_lens)
    return sum(o * (p + o / 2) for p, o in zip(prompt_lens, output_lens)) / weight


def offered_rate(arrivals: Sequence[float]) -> float | None:
    """Requests/s of a list of arrival times (seconds); None when all arrive at once."""
    if len(arrivals) < 2:
        return None
    span = max(arrivals) - min(arrivals)
    return (len(arrivals) - 1) / span if span > 0 else None


def squeeze(prompt_lens: Sequence[int], output_lens: Sequence[int], rate: float | None, *, gpu_blocks: int,
            block_size: int, max_num_seqs: int, step_s: StepTime | None = None) -> Squeeze:
    """The squeeze of a workload (its lengths and offered rate) on a GPU pool; `step_s` is needed
    when a rate is given (the sim's cost model: `cost_model_step`; a measured mean step time)."""
    check_int("gpu_blocks", gpu_blocks, 1)
    check_int("block_size", block_size, 1)
    check_int("max_num_seqs", max_num_seqs, 1)
    ctx = running_context(prompt_lens, output_lens)
    cap = min(max_num_seqs, len(prompt_lens))
    if rate is None:
        n = float(cap)
    else:
        check_float("rate", rate, 0.0, lo_open=True)
        if step_s is None:
            raise ConfigError("squeeze at a rate needs step_s, the decode step time of a batch")
        work = rate * sum(output_lens) / len(output_lens)       # decode steps' worth of work per second
        n = 1.0
        for _ in range(200):
            new = min(float(cap), max(1.0, work * step_s(max(1, round(n)), ctx)))
            if abs(new - n) < 1e-3:
                break
            n = new
        n = new
    capacity = gpu_blocks * block_size
    return Squeeze(n * ctx / capacity, n, ctx, capacity, rate)


def cost_model_step(model, hardware, dtype: str = "float16", block_size: int = 16) -> StepTime:
    """The sim's decode step time (all layers, embedding and lm_head, step overhead) for a model
    (name or spec) on a hardware preset (name, YAML path or `sim.hardware.Hardware`)."""
    from ..model_spec import spec_from_model
    from ..sim.cost_model import CostModel, StepShape
    from ..sim.hardware import Hardware, load_preset
    hw = hardware if isinstance(hardware, Hardware) else load_preset(hardware)
    cm = CostModel(spec_from_model(model), hw, dtype, block_size)
    layers, overhead = cm.spec.num_layers, hw.step_overhead_us * 1e-6

    def step(batch: int, context: float) -> float:
        shape = StepShape.decode(batch, max(1, round(context)))
        return overhead + layers * cm.layer_time(shape) + cm.head_time(shape)
    return step


def workload_squeeze(requests, *, gpu_blocks: int, block_size: int, max_num_seqs: int,
                     step_s: StepTime | None = None) -> Squeeze:
    """The squeeze of a list of requests (pie_lab.workloads.Request: lengths and arrival times)."""
    reqs = list(getattr(requests, "requests", requests))
    return squeeze([len(r.prompt_token_ids) for r in reqs], [r.max_tokens for r in reqs],
                   offered_rate([r.arrival_time for r in reqs]), gpu_blocks=gpu_blocks, block_size=block_size,
                   max_num_seqs=max_num_seqs, step_s=step_s)


def run_squeeze(model, engine, requests, iterations, max_num_seqs: int | None = None) -> Squeeze:
    """The squeeze of a finished benchmark run: its engine's GPU pool and batch cap (or
    `max_num_seqs`); the step time from the sim's cost model, or on cpu / cuda the run's own
    median decode step."""
    cfg = engine.config
    if engine.executor_name == "sim":
        step_s = cost_model_step(model, cfg.hardware, cfg.dtype, cfg.block_size)
    else:
        decode = iterations[(iterations["prefill_tokens"] == 0) & (iterations["batch_size"] > 0)]["duration"]
        median = float(decode.median()) if len(decode) else float(iterations["duration"].median())

        def step_s(batch: int, context: float) -> float:
            return median
    return workload_squeeze(requests, gpu_blocks=engine.gpu_limit, block_size=cfg.block_size,
                            max_num_seqs=max_num_seqs or cfg.max_num_seqs, step_s=step_s)


def ratio_line(df, reference: str = "vllm-swap", column: str = "tokens_per_s") -> str:
    """One line for a result table with a `squeeze` column: each policy's throughput over the reference's."""
    ref = df.loc[df["policy"] == reference, column]
    if not len(ref) or "squeeze" not in df.columns:
        return ""
    ratios = ", ".join(f"{p} {v / ref.iloc[0]:.2f}x" for p, v in zip(df["policy"], df[column]) if p != reference)
    return f"squeeze {df['squeeze'].iloc[0]:.2f} (KV the load wants / GPU KV): {ratios} {reference}"
