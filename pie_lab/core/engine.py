"""The engine: `step()` = apply knob changes, schedule, plan swaps, run the plan, postprocess.

Shared by every executor. Thread safety: `update()` and `add_request()` may be called from any
thread; changes are validated at once and applied atomically at the start of the next step.
"""
from __future__ import annotations

import itertools
import operator
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence as Seq

from ..config import EngineConfig, check_field, check_live
from ..errors import ConfigError, EngineError, check_fits
from ..sampling import SamplingParams
from .block_manager import BlockManager
from .decode_run import DecodeRun
from .metrics import IterationRecord, Metrics, request_record
from .plan import BatchSummary, SeqWork, StepOutput, StepPlan, StreamPlan
from .scheduler import Schedule, Scheduler
from .sequence import Sequence, host_count_of
from .swap_planner import SwapPlanner


@dataclass(frozen=True)
class RequestOutput:
    request_id: Any
    prompt_token_ids: list[int]
    token_ids: list[int]
    finish_reason: str
    metrics: dict
    text: str | None = None
    error: str | None = None          # finish_reason "error": what failed


FINISH_REASONS = ("stop", "length", "abort", "error")


class Engine:
    """Drive with add_request / step / has_unfinished. Build one with `pie_lab.create_engine` or `LLM`."""

    def __init__(self, config: EngineConfig, executor, num_gpu_blocks: int, num_host_blocks: int):
        self.config = config
        self.executor = executor
        self._summarised_plans, self._decode_runs = executor.summarised_plans, executor.decode_runs
        self.spec = executor.spec
        self.clock = executor.clock
        self.max_model_len = min(config.max_model_len or self.spec.max_position_embeddings,
                                 self.spec.max_position_embeddings)
        eos = self.spec.hf_config.get("eos_token_id")
        self.eos_ids = frozenset(eos if isinstance(eos, (list, tuple)) else ([] if eos is None else [eos]))
        self.blocks = BlockManager(config.block_size, num_gpu_blocks, num_host_blocks)
        # the config is the one owner of every knob: scheduler and planner read it at each use
        self.scheduler = Scheduler(self.blocks, lambda: self.config)
        self.planner = SwapPlanner(self.blocks, self.spec.num_layers, lambda: self.config)
        self.metrics = Metrics()
        self.controller = None
        if config.budgeted:
            self.attach_controller()
        self._lock = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._incoming: list[Sequence] = []
        self._seqs: dict[int, Sequence] = {}
        self._request_ids: dict[int, Any] = {}     # seq_id -> request_id, requests in flight
        self._live: dict[Any, int] = {}            # request_id -> seq_id: unique among requests in flight
        self._aborts: set[int] = set()             # seq_ids to abort at the next step boundary
        self._sizes: dict[int, tuple[int, int]] = {}   # seq_id -> (prompt tokens, most tokens), in flight
        self._ids = itertools.count()
        self.faults: deque[dict] = deque(maxlen=100)   # contained failures: step, where, message, requests
        self.fault_count = 0
        self.steps_without_token = 0               # consecutive steps with work pending and no token
        self._step_id = 0
        self._released: list[int] = []

    @property
    def block_bytes(self) -> int:
        """One KV block, all layers."""
        return self.spec.kv_block_bytes(self.config.block_size, self.config.dtype)

    # -- requests -------------------------------------------------------------------------
    def check_request(self, prompt_token_ids: Seq[int], sampling: SamplingParams | None = None) -> list[int]:
        """The prompt as a list of ints, or ConfigError if the engine could never serve it. No state changes."""
        sampling = sampling or SamplingParams()
        if isinstance(prompt_token_ids, (str, bytes)):
            raise ConfigError("prompt must be a list of token ids; strings need LLM.generate and a tokenizer")
        prompt = []
        for i, t in enumerate(prompt_token_ids):
            try:
                prompt.append(operator.index(t))
            except TypeError:
                raise ConfigError(f"prompt token {i} is {t!r}: token ids must be integers") from None
        vocab = self.spec.vocab_size
        if not prompt:
            raise ConfigError("prompt is empty: give at least one token")
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ConfigError(f"prompt token id {bad[0]} is out of range: allowed [0, {vocab - 1}]")
        if len(prompt) >= self.max_model_len:
            raise ConfigError(f"prompt of {len(prompt)} tokens does not fit the context window: "
                              f"allowed at most {self.max_model_len - 1} tokens (max_model_len={self.max_model_len})")
        if not self.config.chunked_prefill and len(prompt) > self.config.max_num_batched_tokens:
            raise ConfigError(f"prompt of {len(prompt)} tokens exceeds max_num_batched_tokens="
                              f"{self.config.max_num_batched_tokens}; allowed: <= that, "
                              "or enable chunked_prefill")
        total = min(len(prompt) + sampling.max_tokens, self.max_model_len)
        need = -(-total // self.config.block_size)
        room = self._room(self.config, self.blocks.gpu.limit)
        if need > room:
            raise ConfigError(f"request needs up to {need} KV blocks ({total} tokens) but the engine holds "
                              f"{room}; allowed: prompt + max_tokens <= {room * self.config.block_size} tokens")
        return prompt

    def _room(self, c: EngineConfig, gpu_limit: int) -> int:
        """KV blocks one request may span under config `c`: the GPU limit, plus (pie, hybrid) the
        host-resident budgets less the staging ring that streaming the swap budget takes from the GPU."""
        if not c.budgeted:
            return gpu_limit
        return gpu_limit + c.host_budget_blocks - self.planner.staging_blocks(c.swap_budget_blocks, c.prefetch_depth)

    def add_request(self, prompt_token_ids: Seq[int], sampling: SamplingParams | None = None,
                    request_id: Any = None, arrival_time: float | None = None) -> int:
        """Queue a request; returns its seq_id. `request_id` (default: the seq_id) must be unique
        among the requests in flight."""
        sampling = sampling or SamplingParams()
        prompt = self.check_request(prompt_token_ids, sampling)
        total_tokens = min(len(prompt) + sampling.max_tokens, self.max_model_len)
        with self._lock:
            seq_id = next(self._ids)
            rid = seq_id if request_id is None else request_id
            if rid in self._live:
                raise ConfigError(f"request_id {rid!r} is already in flight; request ids must be unique "
                                  "among unfinished requests")
            seq = Sequence(seq_id, prompt, sampling, self.clock.now() if arrival_time is None else arrival_time)
            self._incoming.append(seq)
            self._request_ids[seq_id] = rid
            self._live[rid] = seq_id
            self._sizes[seq_id] = (len(prompt), total_tokens)
        return seq_id

    def abort(self, request_id: Any) -> bool:
        """Abort a request in flight: at the next step boundary its blocks (GPU, host, staging) are freed
        and step() returns it with finish_reason="abort". False if no such request is in flight."""
        with self._lock:
            seq_id = self._live.get(request_id)
            if seq_id is None:
                return False
            self._aborts.add(seq_id)
            return True

    def requests_in_flight(self, waiting_only: bool = False) -> list:
        """Request ids of unfinished requests (with waiting_only: those not yet running)."""
        with self._lock:
            if not waiting_only:
                return list(self._live)
            queued = {s.seq_id for s in self._incoming} | {s.seq_id for s in self.scheduler.waiting}
            return [r for r, i in self._live.items() if i in queued]

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._incoming) or self.scheduler.has_unfinished()

    # -- live knobs -------------------------------------------------------------------------
    def update(self, **changes: Any) -> EngineConfig:
        """Validate now, apply before the next step. Returns the config that will apply."""
        check_live(changes)
        if "num_gpu_blocks" in changes:
            check_field("num_gpu_blocks", changes["num_gpu_blocks"], hi=self.gpu_capacity)
        for knob in ("swap_budget_blocks", "host_compute_blocks"):
            if knob in changes:
                check_field(knob, changes[knob], hi=self.host_capacity)
        with self._lock:
            merged = {**self._pending, **changes}
            new = self.config.replace(**merged)          # validates every field
            self._check_room(changes, new)
            self._pending = merged
        return new

    def _check_room(self, changes: dict, new: EngineConfig) -> None:
        """A change that would leave a request in flight no way to run, or that needs memory
        the executor does not have, is refused with the reason (caller holds the lock)."""
        bs = self.config.block_size
        room_knobs = ("num_gpu_blocks", "swap_budget_blocks", "host_compute_blocks", "prefetch_depth")
        if self._sizes and set(room_knobs) & set(changes):
            sid, (_, total) = max(self._sizes.items(), key=lambda kv: kv[1][1])
            need = -(-total // bs)
            room = self._room(new, new.num_gpu_blocks or self.blocks.gpu.limit)
            if need > room:
                knob = next(k for k in room_knobs if k in changes)
                raise ConfigError(f"{knob}={changes[knob]} leaves {room} KV blocks per request, but request "
                                  f"{self._request_ids[sid]!r} in flight needs up to {need} ({total} tokens); "
                                  "allowed: num_gpu_blocks" + (" + host budgets - the staging ring"
                                                               if new.budgeted else "") + f" >= {need}")
        if "max_num_batched_tokens" in changes and not new.chunked_prefill and self._sizes:
            sid, (longest, _) = max(self._sizes.items(), key=lambda kv: kv[1][0])
            if new.max_num_batched_tokens < longest:
                raise ConfigError(f"max_num_batched_tokens={new.max_num_batched_tokens} is less than the {longest}-token "
                                  f"prompt of request {self._request_ids[sid]!r} in flight, which could then never "
                                  f"run (chunked_prefill is off); allowed: >= {longest}")
        if new.budgeted and ("prefetch_depth" in changes or "swap_budget_blocks" in changes):
            # the staging ring holds up to min(depth, L) layers of every host-resident block
            old = self.planner.staging_blocks(self.config.swap_budget_blocks, self.config.prefetch_depth)
            grown = self.planner.staging_blocks(new.swap_budget_blocks, new.prefetch_depth)
            if grown > old:
                mem = self.executor.memory_available()
                block = self.block_bytes
                knob = "prefetch_depth" if "prefetch_depth" in changes else "swap_budget_blocks"
                check_fits(knob, changes[knob], (grown - old) * block, mem.device,
                           f"{mem.device_name} for the staging ring", "a smaller prefetch_depth or swap_budget_blocks")

    def _apply_pending(self) -> None:
        with self._lock:
            changes, self._pending = self._pending, {}
            incoming, self._incoming = self._incoming, []
        for seq in incoming:
            self._seqs[seq.seq_id] = seq
            self.scheduler.add(seq)
        if not changes:
            return
        self.config = c = self.config.replace(**changes)
        if "num_gpu_blocks" in changes:
            self.blocks.gpu.limit = c.num_gpu_blocks
        if "link_bandwidth_gbps" in changes or "link_latency_us" in changes:
            self.executor.set_link(c.link_bandwidth_gbps, c.link_latency_us)
        if "host_attention_gbps" in changes:
            self.executor.set_host_attention(c.host_attention_gbps)
        manual = "swap_budget_blocks" in changes or "host_compute_blocks" in changes
        if self.controller is not None and ("controller" in changes or manual):
            self.controller.on_config(c.controller, manual=manual)
        if self.controller is not None and "offload" in changes:
            self.controller.on_offload()
        self.metrics.add_event(self.clock.now(), "knob", step=self._step_id,
                               **{k: (v if not hasattr(v, "__dataclass_fields__") else str(v)) for k, v in changes.items()})

    def _take_aborts(self) -> list[RequestOutput]:
        with self._lock:
            aborts, self._aborts = self._aborts, set()
        now = self.clock.now()
        out = []
        for seq_id in sorted(aborts):
            seq = self._seqs.get(seq_id)
            if seq is not None:
                self.scheduler.remove(seq)
                out.append(self._retire(seq, "abort", now))
        return out

    # -- one iteration ----------------------------------------------------------------------
    def step_run(self, until: float | None = None) -> list[RequestOutput]:
        """`step()`, or on an executor that times a step from its shape (the sim) the run of
        decode-only steps step-by-step would take the same way (core/decode_run.py), ending
        with the first step that ends at or after `until` (the caller's next arrival)."""
        with self._lock:
            quiet = not (self._pending or self._incoming or self._aborts)
        run = DecodeRun.plan(self) if quiet and self._decode_runs else None
        return run.steps(until) if run is not None else self.step()

    def step(self) -> list[RequestOutput]:
        self._apply_pending()
        aborted = self._take_aborts()
        return aborted + self._execute(self._schedule())

    def _schedule(self) -> Schedule:
        """The step's scheduling: the swap budget enforced, then what runs and what moves."""
        sched = Schedule()
        self.planner.enforce_budget(self.scheduler, sched)
        self.scheduler.schedule(sched)
        return sched

    def _moves(self, sched: Schedule) -> tuple[list[tuple[int, int]], dict[int, int], StreamPlan | None]:
        """After scheduling: the blocks offloaded, the host-computed split (hybrid) and what streams."""
        offload = self.planner.plan_offload(sched, self.scheduler)
        host_computed = self.planner.split(sched, offload)
        return offload, host_computed, self.planner.stream(sched, offload, host_computed)

    def _execute(self, sched: Schedule) -> list[RequestOutput]:
        """The rest of a scheduled step: plan, run, postprocess, record."""
        aborted = self._unfit(sched)
        if sched.empty and not (sched.swap_in or sched.swap_out):
            self._count_progress(0)
            return aborted
        offload, host_computed, stream = self._moves(sched)
        plan = self._build_plan(sched, offload, stream, host_computed)
        start = self.clock.now()
        for seq in sched.admitted:             # only a request never scheduled has no first time
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = start
        try:
            out = self.executor.execute(plan)
        except Exception as exc:               # contained: the plan's requests fail, the rest go on
            return aborted + self._fail_step(sched, plan, exc)
        end = self.clock.now()
        done = self._postprocess(sched, out, end)
        self.blocks.end_step()
        self._count_progress(len(out.token_ids))
        rec = IterationRecord.build(
            plan, out.timing, start, end, gpu_blocks_used=self.blocks.gpu.num_used,
            host_blocks_used=self.blocks.host.num_used, gpu_blocks_limit=self.blocks.gpu.limit,
            staging_blocks=self.blocks.gpu.reserved, swap_budget=self.config.swap_budget_blocks,
            host_compute_budget=self.config.host_compute_blocks if self.config.traits.host_compute else 0,
            prefetch_depth=self.config.prefetch_depth, preempted=len(sched.preempted),
            swap_space_blocks=sum(map(host_count_of, self.scheduler.swapped)),
            swapped_out=len(sched.swapped_out), waiting=len(self.scheduler.waiting))
        self.metrics.add_iteration(rec, out.timing)
        self._observe(rec)
        self._step_id += 1
        return aborted + done

    def _observe(self, rec: IterationRecord) -> None:
        if self.controller is not None:
            try:
                self.controller.observe(self, rec)
            except Exception as exc:           # the budget stays where it is; requests are unaffected
                self.controller = None
                self._record_fault("controller", exc, [], "controller detached; swap budget kept at "
                                                          f"{self.planner.budget}")

    def stall_reason(self) -> str:
        """Why nothing runs: what waits, and what the GPU pool and limits leave for it."""
        gpu, sch = self.blocks.gpu, self.scheduler
        head = (sch.waiting or sch.swapped or [None])[0]
        need = ""
        if head is not None:
            n = self.blocks.blocks_needed(head, min(head.num_tokens, self.config.max_num_batched_tokens)) \
                + head.num_host_blocks()
            need = f"; the next request needs {n} GPU blocks"
        return (f"no token for {self.steps_without_token} steps: {len(sch.running)} running, {len(sch.waiting)} waiting, "
                f"{len(sch.swapped)} swapped; GPU blocks {gpu.num_used} used of limit {gpu.limit} "
                f"({gpu.reserved} reserved for staging){need}")

    def _unfit(self, sched: Schedule) -> list[RequestOutput]:
        """Requests the scheduler found can never fit (blocks already freed): failed, not fatal."""
        outs = []
        for seq, why in sched.unfit:
            out = self._retire(seq, "error", self.clock.now(), f"EngineError: request {seq.seq_id} {why}")
            self._record_fault("scheduler", EngineError(f"request {seq.seq_id} {why}"), [out.request_id])
            outs.append(out)
        return outs

    def _count_progress(self, tokens: int) -> None:
        self.steps_without_token = 0 if tokens or not self.has_unfinished() else self.steps_without_token + 1

    def _fail_step(self, sched: Schedule, plan: StepPlan, exc: Exception) -> list[RequestOutput]:
        """The executor raised: every request the plan touched fails and its blocks are freed."""
        now = self.clock.now()
        hit = [seq for seq, _ in sched.work] + list(sched.swapped_out)
        filled = {g for _, g in sched.swap_in}          # blocks a copy should have filled, maybe did not
        hit += [s for s in self.scheduler.running if s not in hit and filled.intersection(s.block_table)]
        self._released.extend(plan.released_seq_ids)   # the sampler may not have dropped them
        self.steps_without_token = 0
        for seq in hit:
            self.scheduler.remove(seq)
        self.blocks.end_step()
        self.executor.recover()
        message = f"{type(exc).__name__}: {exc}"
        outs = [self._retire(seq, "error", now, message) for seq in hit]
        self._record_fault("executor", exc, [o.request_id for o in outs])
        self._step_id += 1
        return outs

    def _record_fault(self, where: str, exc: BaseException, request_ids: list, note: str = "") -> None:
        message = f"{type(exc).__name__}: {exc}"
        fault = dict(step=self._step_id, where=where, message=message, requests=len(request_ids), note=note)
        self.faults.append(fault)
        self.fault_count += 1
        self.metrics.add_event(self.clock.now(), "error", **fault)

    def _build_plan(self, sched: Schedule, offload, stream, host_computed: dict[int, int]) -> StepPlan:
        released, self._released = tuple(self._released), []
        if self._summarised_plans:
            # the sim times a step from its sums and samples from (seq_id, position): no SeqWork
            return StepPlan(self._step_id, (), tuple(sched.swap_out), tuple(sched.swap_in), tuple(offload), stream,
                            released, BatchSummary.of_work(sched.work, host_computed))
        fresh = {~h: g for g, h in offload}         # offloaded this step: still read from the GPU
        works = tuple(self._seq_work(seq, n, fresh, host_computed) for seq, n in sched.work)
        return StepPlan(self._step_id, works, tuple(sched.swap_out), tuple(sched.swap_in),
                        tuple(offload), stream, released)

    @staticmethod
    def _seq_work(seq: Sequence, n: int, fresh: dict[int, int], host_computed: dict[int, int]) -> SeqWork:
        start, table, out = seq.num_computed_tokens, seq.block_table, seq.output_token_ids
        num_tokens = len(seq.prompt_token_ids) + len(out)
        if fresh and seq.host_count:                # host blocks are the table's first entries
            table = [fresh.get(b, b) for b in table[:seq.host_count]] + table[seq.host_count:]
        tokens = (seq.last_token,) if n == 1 and start == num_tokens - 1 else tuple(seq.token_ids[start:start + n])
        return SeqWork(seq.seq_id, tokens, start, tuple(table), start + n == num_tokens,
                       seq.sampling, len(out), host_computed.get(seq.seq_id, 0))

    def _postprocess(self, sched: Schedule, out: StepOutput, now: float) -> list[RequestOutput]:
        done, token_ids, stops, max_len = [], out.token_ids, self.eos_ids, self.max_model_len
        for seq, n in sched.work:
            seq.num_computed_tokens += n
            outputs = seq.output_token_ids
            prompt_len = len(seq.prompt_token_ids)
            if seq.num_computed_tokens < prompt_len + len(outputs):
                continue
            token = token_ids[seq.seq_id]
            outputs.append(token)
            if seq.first_token_time is None:
                seq.first_token_time = now
            sp = seq.sampling
            if (token not in stops and not sp.stop_token_ids and len(outputs) < sp.max_tokens
                    and prompt_len + len(outputs) < max_len):
                continue                          # what _finish_reason says, without the call
            reason = self._finish_reason(seq, token)
            if reason:
                self.scheduler.finish(seq)
                done.append(self._retire(seq, reason, now))
        return done

    def _retire(self, seq: Sequence, reason: str, now: float, error: str | None = None) -> RequestOutput:
        """A request leaves the engine (its blocks already freed): record it and build its output."""
        seq.finish_reason, seq.finish_time = reason, now
        self._released.append(seq.seq_id)
        with self._lock:
            rid = self._request_ids.pop(seq.seq_id)
            del self._live[rid]
            del self._sizes[seq.seq_id]
        row = request_record(seq, rid)
        if error is not None:
            row["error"] = error
        self.metrics.add_request(row)
        del self._seqs[seq.seq_id]
        return RequestOutput(rid, seq.prompt_token_ids, list(seq.output_token_ids), reason, row, error=error)

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
            self.spec.num_layers, self.host_capacity, host_share=self.config.traits.host_compute)

    def set_budget(self, budget: int, knob: str = "swap_budget_blocks") -> None:
        """Between iterations, on the engine thread: the controller's own change of a budget
        (swap_budget_blocks, or policy hybrid's host_compute_blocks)."""
        self.config = self.config.replace(**{knob: max(0, min(budget, self.host_capacity))})

    def eligible_host_blocks(self) -> int:
        """Full blocks of the running batch: the most that could be host-resident now."""
        bs = self.config.block_size
        return sum([s.num_computed_tokens // bs for s in self.scheduler.running])     # Sequence.num_full_blocks

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
