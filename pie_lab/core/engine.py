"""The engine: `step()` = apply knob changes, schedule, plan swaps, run the plan, postprocess.

Shared by every executor. Thread safety: `update()` and `add_request()` may be called from any
thread; changes are validated at once and applied atomically at the start of the next step.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any, Sequence as Seq

from ..config import EngineConfig
from ..errors import ConfigError, check_int
from ..sampling import SamplingParams
from .block_manager import BlockManager
from .metrics import IterationRecord, Metrics, request_record
from .plan import SeqWork, StepOutput, StepPlan
from .scheduler import Limits, Schedule, Scheduler
from .sequence import Sequence
from .swap_planner import SwapPlanner

LIVE_KNOBS = ("swap_budget_blocks", "prefetch_depth", "max_num_seqs", "max_num_batched_tokens",
              "num_gpu_blocks", "link_bandwidth_gbps", "link_latency_us", "flexgen_fraction", "controller")


@dataclass(frozen=True)
class RequestOutput:
    request_id: Any
    prompt_token_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    metrics: dict
    text: str | None = None


class Engine:
    """Drive with add_request / step / has_unfinished. Build one with `pie_lab.create_engine` or `LLM`."""

    def __init__(self, config: EngineConfig, executor, num_gpu_blocks: int, num_host_blocks: int):
        self.config = config
        self.executor = executor
        self.spec = executor.spec
        self.clock = executor.clock
        self.max_model_len = min(config.max_model_len or self.spec.max_position_embeddings,
                                 self.spec.max_position_embeddings)
        eos = self.spec.hf_config.get("eos_token_id")
        self.eos_ids = frozenset(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))
        self.blocks = BlockManager(config.block_size, num_gpu_blocks, num_host_blocks)
        self.scheduler = Scheduler(self.blocks, Limits(config.max_num_seqs, config.max_num_batched_tokens,
                                                       config.chunked_prefill),
                                   swap_preemption=config.swap_preemption)
        self.planner = SwapPlanner(self.blocks, self.spec.num_layers, config.policy, config.swap_budget_blocks,
                                   config.prefetch_depth, config.flexgen_fraction)
        self.metrics = Metrics()
        self.controller = None
        if config.policy == "pie":
            self.attach_controller()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._incoming: list[Sequence] = []
        self._seqs: dict[int, Sequence] = {}
        self._request_ids: dict[int, Any] = {}
        self._ids = itertools.count()
        self._step_id = 0
        self._released: list[int] = []

    @property
    def block_bytes(self) -> int:
        """One KV block, all layers."""
        return self.spec.kv_block_bytes(self.config.block_size, self.config.dtype)

    # -- requests -------------------------------------------------------------------------
    def add_request(self, prompt_token_ids: Seq[int], sampling: SamplingParams | None = None,
                    request_id: Any = None, arrival_time: float | None = None) -> int:
        sampling = sampling or SamplingParams()
        prompt = [int(t) for t in prompt_token_ids]
        vocab = self.spec.vocab_size
        if not prompt:
            raise ConfigError("prompt is empty: give at least one token")
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ConfigError(f"prompt token id {bad[0]} is out of range: allowed [0, {vocab - 1}]")
        if len(prompt) >= self.max_model_len:
            raise ConfigError(f"prompt of {len(prompt)} tokens does not fit the context window: "
                              f"allowed at most {self.max_model_len - 1} tokens (max_model_len={self.max_model_len})")
        if not self.config.chunked_prefill and len(prompt) > self.scheduler.limits.max_num_batched_tokens:
            raise ConfigError(f"prompt of {len(prompt)} tokens exceeds max_num_batched_tokens="
                              f"{self.scheduler.limits.max_num_batched_tokens}; allowed: <= that, "
                              "or enable chunked_prefill")
        total = min(len(prompt) + sampling.max_tokens, self.max_model_len)
        need = -(-total // self.config.block_size)
        room = self.blocks.gpu.limit + (self.planner.budget if self.config.policy == "pie" else 0)
        if need > room:
            raise ConfigError(f"request needs up to {need} KV blocks ({total} tokens) but the engine holds "
                              f"{room}; allowed: prompt + max_tokens <= {room * self.config.block_size} tokens")
        with self._lock:
            seq = Sequence(next(self._ids), prompt, sampling,
                           self.clock.now() if arrival_time is None else arrival_time)
            self._incoming.append(seq)
            self._request_ids[seq.seq_id] = seq.seq_id if request_id is None else request_id
        return seq.seq_id

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._incoming) or self.scheduler.has_unfinished()

    # -- live knobs -------------------------------------------------------------------------
    def update(self, **changes: Any) -> EngineConfig:
        """Validate now, apply before the next step. Returns the config that will apply."""
        unknown = set(changes) - set(LIVE_KNOBS)
        if unknown:
            raise ConfigError(f"{', '.join(sorted(unknown))} cannot change while running; live knobs: "
                              f"{', '.join(LIVE_KNOBS)}")
        if "num_gpu_blocks" in changes:
            check_int("num_gpu_blocks", changes["num_gpu_blocks"], 1, self.blocks.gpu.capacity)
        if "swap_budget_blocks" in changes:
            check_int("swap_budget_blocks", changes["swap_budget_blocks"], 0, self.blocks.host.capacity)
        with self._lock:
            merged = {**self._pending, **changes}
            new = self.config.replace(**merged)          # validates every field
            self._pending = merged
        return new

    def _apply_pending(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, {}
            incoming, self._incoming = self._incoming, []
        for seq in incoming:
            self._seqs[seq.seq_id] = seq
            self.scheduler.add(seq)
        if not changes:
            return
        self.config = self.config.replace(**changes)
        c = self.config
        self.scheduler.limits = Limits(c.max_num_seqs, c.max_num_batched_tokens, c.chunked_prefill)
        self.planner.budget, self.planner.depth = c.swap_budget_blocks, c.prefetch_depth
        self.planner.fraction = c.flexgen_fraction
        if "num_gpu_blocks" in changes:
            self.blocks.gpu.limit = c.num_gpu_blocks
        if "link_bandwidth_gbps" in changes or "link_latency_us" in changes:
            self.executor.set_link(c.link_bandwidth_gbps, c.link_latency_us)
        if self.controller is not None and ("controller" in changes or "swap_budget_blocks" in changes):
            self.controller.on_config(c, manual="swap_budget_blocks" in changes)
        self.metrics.add_event(self.clock.now(), "knob", step=self._step_id,
                               **{k: (v if not hasattr(v, "__dataclass_fields__") else str(v)) for k, v in changes.items()})

    # -- one iteration ----------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        self._apply_pending()
        sched = Schedule()
        self.planner.enforce_budget(self.scheduler, sched)
        self.scheduler.schedule(sched)
        if sched.empty and not (sched.swap_in or sched.swap_out):
            return []
        offload = self.planner.plan_offload(sched)
        stream = self.planner.stream(sched, offload)
        plan = self._build_plan(sched, offload, stream)
        start = self.clock.now()
        for seq, _ in sched.work:
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = start
        out = self.executor.execute(plan)
        end = self.clock.now()
        done = self._postprocess(sched, out, end)
        self.blocks.end_step()
        rec = IterationRecord.build(
            plan, out.timing, start, end, gpu_blocks_used=self.blocks.gpu.num_used,
            host_blocks_used=self.blocks.host.num_used, gpu_blocks_limit=self.blocks.gpu.limit,
            staging_blocks=self.blocks.gpu.reserved, swap_budget=self.planner.budget,
            prefetch_depth=self.planner.depth, preempted=len(sched.preempted),
            swap_space_blocks=sum(s.host_count for s in self.scheduler.swapped),
            swapped_out=len(sched.swapped_out), waiting=len(self.scheduler.waiting))
        self.metrics.add_iteration(rec, out.timing)
        if self.controller is not None:
            self.controller.observe(self, rec)
        self._step_id += 1
        return done

    def _build_plan(self, sched: Schedule, offload, stream) -> StepPlan:
        fresh = {~h: g for g, h in offload}         # offloaded this step: still read from the GPU
        works = []
        for seq, n in sched.work:
            start = seq.num_computed_tokens
            table = seq.block_table
            if fresh:
                table = [fresh.get(b, b) for b in table]
            tokens = (seq.last_token,) if n == 1 and start == seq.num_tokens - 1 else \
                tuple(seq.token_ids[start:start + n])
            works.append(SeqWork(seq.seq_id, tokens, start, tuple(table), start + n == seq.num_tokens,
                                 seq.sampling, len(seq.output_token_ids)))
        released, self._released = tuple(self._released), []
        return StepPlan(self._step_id, tuple(works), tuple(sched.swap_out), tuple(sched.swap_in),
                        tuple(offload), stream, released)

    def _postprocess(self, sched: Schedule, out: StepOutput, now: float) -> list[RequestOutput]:
        done = []
        for seq, n in sched.work:
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < seq.num_tokens:
                continue
            token = out.token_ids[seq.seq_id]
            seq.output_token_ids.append(token)
            seq.token_times.append(now)
            if seq.first_token_time is None:
                seq.first_token_time = now
            reason = self._finish_reason(seq, token)
            if reason:
                seq.finish_reason, seq.finish_time = reason, now
                self.scheduler.finish(seq)
                self._released.append(seq.seq_id)
                row = request_record(seq, self._request_ids[seq.seq_id])
                self.metrics.add_request(row)
                output = RequestOutput(self._request_ids.pop(seq.seq_id), seq.prompt_token_ids,
                                       list(seq.output_token_ids), reason, row)
                del self._seqs[seq.seq_id]
                done.append(output)
        return done

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        sp = seq.sampling
        if not sp.ignore_eos and token in self.eos_ids or token in sp.stop_token_ids:
            return "stop"
        if len(seq.output_token_ids) >= sp.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    # -- used by the adaptive controller --------------------------------------------------------
    def attach_controller(self) -> None:
        from .controller import AdaptiveController
        self.controller = AdaptiveController(
            self.config.controller, self.block_bytes // self.spec.num_layers,
            self.spec.num_layers, self.blocks.host.capacity, self.config.swap_budget_blocks)

    def set_budget(self, budget: int) -> None:
        """Between iterations, on the engine thread: the controller's own change of the budget."""
        budget = max(0, min(budget, self.blocks.host.capacity))
        self.config = self.config.replace(swap_budget_blocks=budget)
        self.planner.budget = budget

    def eligible_host_blocks(self) -> int:
        """Full blocks of the running batch: the most that could be host-resident now."""
        return sum(s.num_full_blocks(self.config.block_size) for s in self.scheduler.running)

    # -- introspection ------------------------------------------------------------------------
    @property
    def executor_name(self) -> str:
        return self.executor.name

    @property
    def emulated_link(self) -> bool:
        """True where link timings are emulated or modelled, not measured."""
        return self.executor.emulated_link

    @property
    def gpu_capacity(self) -> int:
        """GPU-tier KV blocks allocated; `num_gpu_blocks` may limit use to fewer (`gpu_limit`)."""
        return self.blocks.gpu.capacity

    @property
    def gpu_limit(self) -> int:
        return self.blocks.gpu.limit

    @property
    def host_capacity(self) -> int:
        """Host-tier KV blocks: the swap budget and the vllm-swap space share them."""
        return self.blocks.host.capacity

    @property
    def sequences(self) -> list[Sequence]:
        return list(self._seqs.values())

    def check_blocks(self) -> None:
        self.blocks.check(self._seqs.values())

    def close(self) -> None:
        self.executor.close()
