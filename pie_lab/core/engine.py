"""The engine: `step()` = take in requests and knob changes, schedule, plan swaps, run the plan,
postprocess, record.

Shared by every executor. Thread safety: `update()` and `add_request()` may be called from any
thread; changes are validated at once and applied atomically at the start of the next step.
The requests in flight are `core/requests.py`'s table, knob changes pass `core/knobs.py`'s gate,
failures are contained by `core/faults.py`, and decode runs (`core/decode_run.py`) run several
decode steps through this module's `_plan`, `_record` and `_finish_done`.
"""
from __future__ import annotations

import itertools
from collections import deque
from typing import Any, Sequence as Seq

from ..config import EngineConfig
from ..sampling import SamplingParams
from .block_manager import BlockManager
from .decode_run import DecodeRun
from .faults import fail_step, fail_unfit, record_fault
from .knobs import KnobGate
from .metrics import IterationRecord, Metrics, request_record
from .plan import BatchSummary, SeqWork, StepOutput, StepPlan, StreamPlan
from .requests import FINISH_REASONS, RequestOutput, RequestTable, check_prompt  # noqa: F401 (re-exported)
from .scheduler import Schedule, Scheduler
from .sequence import Sequence, host_count_of
from .swap_planner import SwapPlanner


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
        self.requests = RequestTable()
        self.knobs = KnobGate(self)
        self._ids = itertools.count()
        self.faults: deque[dict] = deque(maxlen=100)   # contained failures: step, where, message, requests
        self.fault_count = 0
        self.steps_without_token = 0               # consecutive steps with work pending and no token
        self.step_id = 0
        self._released: list[int] = []             # seq_ids the next plan tells the executor to forget

    @property
    def block_bytes(self) -> int:
        """One KV block, all layers."""
        return self.spec.kv_block_bytes(self.config.block_size, self.config.dtype)

    # -- requests -------------------------------------------------------------------------
    def check_request(self, prompt_token_ids: Seq[int], sampling: SamplingParams | None = None) -> list[int]:
        """The prompt as a list of ints, or ConfigError if the engine could never serve it. No state changes."""
        return check_prompt(prompt_token_ids, sampling or SamplingParams(), self.spec.vocab_size, self.max_model_len,
                            self.config, self.knobs.room(self.config, self.blocks.gpu.limit))

    def add_request(self, prompt_token_ids: Seq[int], sampling: SamplingParams | None = None,
                    request_id: Any = None, arrival_time: float | None = None) -> int:
        """Queue a request; returns its seq_id. `request_id` (default: the seq_id) must be unique
        among the requests in flight."""
        sampling = sampling or SamplingParams()
        prompt = self.check_request(prompt_token_ids, sampling)
        seq_id = next(self._ids)
        seq = Sequence(seq_id, prompt, sampling, self.clock.now() if arrival_time is None else arrival_time)
        self.requests.add(seq, seq_id if request_id is None else request_id,
                          min(len(prompt) + sampling.max_tokens, self.max_model_len))
        return seq_id

    def abort(self, request_id: Any) -> bool:
        """Abort a request in flight: at the next step boundary its blocks (GPU, host, staging) are freed
        and step() returns it with finish_reason="abort". False if no such request is in flight."""
        return self.requests.abort(request_id)

    def requests_in_flight(self, waiting_only: bool = False) -> list:
        """Request ids of unfinished requests (with waiting_only: those not yet running)."""
        return self.requests.in_flight({s.seq_id for s in self.scheduler.waiting} if waiting_only else None)

    def has_unfinished(self) -> bool:
        return self.requests.has_incoming or self.scheduler.has_unfinished()

    def update(self, **changes: Any) -> EngineConfig:
        """Validate now, apply before the next step. Returns the config that will apply."""
        return self.knobs.request(changes)

    def _take_in(self) -> list[RequestOutput]:
        """The step's start: new requests join the queue, knob changes apply, aborts leave."""
        for seq in self.requests.take_incoming():
            self.scheduler.add(seq)
        self.knobs.apply()
        now = self.clock.now()
        out = []
        for seq in self.requests.take_aborts():
            self.scheduler.remove(seq)
            out.append(self._retire(seq, "abort", now))
        return out

    # -- one iteration ----------------------------------------------------------------------
    def step_run(self, until: float | None = None) -> list[RequestOutput]:
        """`step()`, or on an executor that runs decode runs (the sim) the run of decode-only steps
        step-by-step would take the same way (core/decode_run.py), ending with the first step that
        ends at or after `until` (the caller's next arrival)."""
        quiet = self.requests.quiet and not self.knobs.pending
        run = DecodeRun.plan(self) if quiet and self._decode_runs else None
        return run.steps(until) if run is not None else self.step()

    def step(self) -> list[RequestOutput]:
        aborted = self._take_in()
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
        aborted = fail_unfit(self, sched)
        if sched.empty and not (sched.swap_in or sched.swap_out):
            self._count_progress(0)
            return aborted
        offload, host_computed, stream = self._moves(sched)
        plan = self._plan(sched, offload, stream, host_computed)
        start = self.clock.now()
        for seq in sched.admitted:             # only a request never scheduled has no first time
            if seq.first_scheduled_time is None:
                seq.first_scheduled_time = start
        try:
            out = self.executor.execute(plan)
        except Exception as exc:               # contained: the plan's requests fail, the rest go on
            return aborted + fail_step(self, sched, plan, exc)
        end = self.clock.now()
        done = self._postprocess(sched, out, end)
        self.blocks.end_step()
        self._count_progress(len(out.token_ids))
        self._record(plan, out.timing, start, end, sched)
        return aborted + done

    def _plan(self, sched: Schedule, offload, stream: StreamPlan | None, host_computed: dict[int, int],
              summary: BatchSummary | None = None) -> StepPlan:
        """The step's plan: `sched`'s copies, the offload, the stream, and its work as a SeqWork per
        sequence or, for an executor that takes summarised plans, summed up (`summary`: a decode
        run's, given)."""
        released, self._released = tuple(self._released), []
        if summary is None and not self._summarised_plans:
            fresh = {~h: g for g, h in offload}         # offloaded this step: still read from the GPU
            works = tuple(SeqWork.of(seq, n, fresh, host_computed) for seq, n in sched.work)
        else:
            works, summary = (), summary or BatchSummary.of_work(sched.work, host_computed)
        return StepPlan(self.step_id, works, tuple(sched.swap_out), tuple(sched.swap_in), tuple(offload), stream,
                        released, summary)

    def _record(self, plan: StepPlan, timing, start: float, end: float, sched: Schedule,
                gpu_blocks_used: int | None = None) -> None:
        """The step's IterationRecord, the controller's look at it, and the next step's id."""
        c, gpu = self.config, self.blocks.gpu
        rec = IterationRecord.build(
            plan, timing, start, end, gpu_blocks_used=gpu.num_used if gpu_blocks_used is None else gpu_blocks_used,
            host_blocks_used=self.blocks.host.num_used, gpu_blocks_limit=gpu.limit, staging_blocks=gpu.reserved,
            swap_budget=c.swap_budget_blocks, host_compute_budget=c.host_compute_blocks if c.traits.host_compute else 0,
            prefetch_depth=c.prefetch_depth, preempted=len(sched.preempted),
            swap_space_blocks=sum(map(host_count_of, self.scheduler.swapped)),
            swapped_out=len(sched.swapped_out), waiting=len(self.scheduler.waiting))
        self.metrics.add_iteration(rec, timing)
        if self.controller is not None:
            try:
                self.controller.observe(self, rec)
            except Exception as exc:           # the budget stays where it is; requests are unaffected
                self.controller = None
                record_fault(self, "controller", exc, [], "controller detached; swap budget kept at "
                                                          f"{self.planner.budget}")
        self.step_id += 1

    def _postprocess(self, sched: Schedule, out: StepOutput, now: float) -> list[RequestOutput]:
        """Each sequence that sampled takes its token; those that are done finish."""
        sampled, token_ids = [], out.token_ids
        for seq, n in sched.work:
            seq.num_computed_tokens += n
            if seq.num_computed_tokens < len(seq.prompt_token_ids) + len(seq.output_token_ids):
                continue                          # a prefill chunk that samples nothing
            seq.output_token_ids.append(token_ids[seq.seq_id])
            if seq.first_token_time is None:
                seq.first_token_time = now
            sampled.append(seq)
        return self._finish_done(sampled, now)

    def _finish_done(self, seqs, now: float) -> list[RequestOutput]:
        """Of `seqs`, each just given a token, those that stop (EOS, a stop id, max_tokens, the
        context window) finish, in order; returns their outputs."""
        done, eos, max_len = [], self.eos_ids, self.max_model_len
        for seq in seqs:
            out, sp = seq.output_token_ids, seq.sampling
            token, n_out = out[-1], len(out)
            if not sp.ignore_eos and token in eos or token in sp.stop_token_ids:
                reason = "stop"
            elif n_out >= sp.max_tokens or len(seq.prompt_token_ids) + n_out >= max_len:
                reason = "length"
            else:
                continue
            self.scheduler.finish(seq)
            done.append(self._retire(seq, reason, now))
        return done

    def _retire(self, seq: Sequence, reason: str, now: float, error: str | None = None) -> RequestOutput:
        """A request leaves the engine (its blocks already freed): record it and build its output."""
        seq.finish_reason, seq.finish_time = reason, now
        self._released.append(seq.seq_id)
        rid = self.requests.retire(seq)
        row = request_record(seq, rid)
        if error is not None:
            row["error"] = error
        self.metrics.add_request(row)
        return RequestOutput(rid, seq.prompt_token_ids, list(seq.output_token_ids), reason, row, error=error)

    def _count_progress(self, tokens: int) -> None:
        self.steps_without_token = 0 if tokens or not self.has_unfinished() else self.steps_without_token + 1

    def stall_reason(self) -> str:
        """Why nothing runs: what waits, and what the GPU pool and limits leave for it."""
        return self.scheduler.stall_reason(self.steps_without_token)

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
        return self.requests.sequences()

    def check_blocks(self) -> None:
        self.blocks.check(self.requests.sequences())

    def close(self) -> None:
        self.executor.close()
