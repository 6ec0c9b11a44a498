"""Adaptive expansion: size the swap budget from measured stalls (Pie's second idea).

Each decision looks at a window of iterations run at the current budget:
- overhead = stall / iteration time above the target: back off fast, to the last safe budget
  (or by `backoff_factor`), and remember the failing budget as a ceiling;
- overhead under `hysteresis * target`: the budget is safe; grow toward the predicted link limit
  (per-layer compute time x measured link rate / bytes per staged block), multiplicatively when
  there is no prediction yet, by bisection when a ceiling is known;
- in between: hold (hysteresis against oscillation).
The batch changing (size or context by > 30%) forgets the ceiling so the budget can follow.
Two rules judge what stall cannot see:
- offload "on-demand" moves blocks only when the GPU runs short, so a budget can sit unused: it
  grows only once the streamed share fills it (growing an unused budget would let the next
  squeeze offload more at once than was ever measured);
- where the link's copies cost host CPU (the cpu executor's emulated link: `link_cpu_time` > 0;
  a DMA link costs none, so sim and cuda never take this rule), the copies slow compute on the
  same cores, which no stall shows: a grow from a budget above 0 is judged after `JUDGE_WINDOWS`
  windows at the new budget (held meanwhile); if its decode-only steps generate fewer tokens per
  second than the budget before it did (over all that budget's windows), by more than
  `REVERT_MARGIN`, with at least as large a batch (a batch shrunk by preemptions is the workload,
  not the budget), it is reverted and its budget becomes the ceiling.
Policy hybrid runs the same rules a second time, on their own state, for the host-computed share:
its stall is the device's wait for the host's attention partials, its target the smaller of
`target_overhead` and the capacity the share adds (host-computed / eligible blocks: a wait longer
than that costs more than it gains), and its predicted limit the share whose host attention takes
one device layer time (per-layer device time x measured host attention rate / bytes per block).
The share is fitted to the window the executor reports (device time from handing the queries over
to the merge): the device's attention, plus D's post-attention linears when the layer runs split
(`core/host_split.py`); the split's second pass is device time, in the iteration's duration, not a
wait. The streamed share keeps the link rule above.
Every decision that changes a budget or switches rule is an event with its inputs, the share it sized
and the rule that fired; a run of identical holds is one event (`count`, from `time` to `until`, the
first hold's inputs). Imports no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ControllerConfig
from .metrics import IterationRecord

SETTLE_ITERATIONS = 1       # iterations after a change that carry its one-off copies; not judged
REPROBE_AFTER_HOLDS = 8     # converged decisions before the controller looks above its ceiling again
REVERT_MARGIN = 0.10        # tokens/s drop after a grow that reverts it (wall-clock noise on a loaded box stays below)
JUDGE_WINDOWS = 2           # windows at a grown budget before the revert rule judges it


@dataclass(frozen=True)
class Share:
    """What one budget is judged by: its knob, its stall, and the per-step bytes and busy time of
    its resource (link copies, or host attention), read from an iteration record."""

    name: str
    knob: str
    stall: str
    bytes: str
    busy: str
    limit: str                   # what its predicted limit is called in the rules


STREAM = Share("stream", "swap_budget_blocks", stall="stall", bytes="stream_bytes", busy="copy_time",
               limit="predicted link limit")
HOST = Share("host", "host_compute_blocks", stall="host_wait", bytes="host_bytes", busy="host_time",
             limit="share fitted to the device's window")


@dataclass(frozen=True)
class Level:
    """Decode-only steps measured at one budget: generated tokens, their seconds, the summed batch
    sizes and the steps, over `windows` windows."""
    budget: int
    tokens: int = 0
    seconds: float = 0.0
    batch: int = 0
    steps: int = 0
    windows: int = 0

    def add(self, window: list[IterationRecord]) -> "Level":
        decode = [r for r in window if r.prefill_tokens == 0]
        return Level(self.budget, self.tokens + sum(r.decode_tokens for r in decode),
                     self.seconds + sum(r.duration for r in decode), self.batch + sum(r.batch_size for r in decode),
                     self.steps + len(decode), self.windows + 1)

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.seconds if self.seconds > 0 else None

    @property
    def mean_batch(self) -> float:
        return self.batch / self.steps if self.steps else 0.0


@dataclass
class ControllerState:
    """What the controller learnt; the budget itself is the engine config's swap_budget_blocks."""
    last_safe: int = 0
    ceiling: int | None = None
    ref_batch: int = 0
    ref_context: int = 0
    decisions: int = 0
    holds: int = 0
    grown_from: Level | None = None      # the budget before the last grow and what it measured, unjudged
    level: Level | None = None           # what the current budget measured so far


class AdaptiveController:
    def __init__(self, config: ControllerConfig, layer_block_bytes: int, num_layers: int,
                 host_capacity: int, host_share: bool = False):
        self.config = config
        self.layer_block_bytes = layer_block_bytes
        self.num_layers = num_layers
        self.host_capacity = host_capacity
        self.state = ControllerState()
        self.host_state = ControllerState() if host_share else None     # policy hybrid
        self._window: list[IterationRecord] = []
        self._skip = config.warmup_iterations
        self._epoch = 0             # a knob change or offload switch ends any run of holds

    @property
    def max_budget(self) -> int:
        cap = self.config.max_budget_blocks
        return self.host_capacity if cap is None else min(self.host_capacity, cap)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def on_config(self, config: ControllerConfig, manual: bool) -> None:
        """A user changed the controller settings or set the budget by hand: start again from there."""
        self.config = config
        if manual:
            self.state = ControllerState()
            if self.host_state is not None:
                self.host_state = ControllerState()
        self._window, self._skip = [], SETTLE_ITERATIONS
        self._epoch += 1

    def on_offload(self) -> None:
        """The offload mode changed: what the budgets measured under the old mode no longer judges a
        grow or a revert; keep the budget, its ceiling and last safe level, and measure a fresh window."""
        for state in (self.state, self.host_state):
            if state is not None:
                state.level = state.grown_from = None
        self._window, self._skip = [], SETTLE_ITERATIONS
        self._epoch += 1

    @property
    def decides_next(self) -> bool:
        """Whether the next observed (non-empty) iteration completes a window and so a decision."""
        return self.config.enabled and self._skip == 0 and len(self._window) + 1 >= self.config.window

    def observe(self, engine, rec: IterationRecord) -> None:
        if not self.config.enabled or rec.batch_size == 0:
            return
        if self._skip > 0:
            self._skip -= 1
            return
        self._window.append(rec)
        if len(self._window) < self.config.window:
            return
        window, self._window = self._window, []
        eligible = engine.eligible_host_blocks()
        shares = [(STREAM, self.state)] + ([(HOST, self.host_state)] if self.host_state is not None else [])
        changed = False
        on_demand = engine.config.offload == "on-demand"
        for share, state in shares:
            old = getattr(engine.config, share.knob)
            in_use = self.streamed_share_in_use(window) if on_demand and share is STREAM else None
            new, rule, inputs = self.decide(window, eligible, old, share, state, in_use)
            state.decisions += 1
            self._remember_level(state, window, old, new)
            event = dict(share=share.name) if self.host_state is not None else {}
            run = (("controller", share.name), (rule, old, self._epoch) if new == old else None)
            engine.metrics.add_event(rec.end, "controller", run=run, step=rec.step, old_budget=old,
                                     new_budget=new, rule=rule, **event, **inputs)
            if new != old:
                engine.set_budget(new, share.knob)
                changed = True
        if changed:
            self._skip = SETTLE_ITERATIONS

    def decide(self, window: list[IterationRecord], eligible: int, budget: int, share: Share = STREAM,
               state: ControllerState | None = None, in_use: int | None = None) -> tuple[int, str, dict]:
        """The new budget, the rule that chose it and its inputs. `in_use`: offload on demand, the
        most host-resident blocks of the streamed share in the window (None: eager, the budget is filled)."""
        c, s, b = self.config, state or self.state, budget
        duration = sum(r.duration for r in window)
        stall = sum(getattr(r, share.stall) for r in window)
        overhead = stall / duration if duration > 0 else 0.0
        link_cpu = sum(r.link_cpu_time for r in window)
        level = (s.level if s.level is not None and s.level.budget == b else Level(b)).add(window)
        before = s.grown_from if s.grown_from is not None and s.grown_from.budget < b else None
        batch = sum(r.batch_size for r in window) / len(window)
        context = sum(r.context_tokens for r in window) / len(window)
        predicted = self._predict(window, share)
        target, limit = c.target_overhead, None
        if share is HOST:
            # the host's attention must stay under the device's layer time: a cap, not a goal (it
            # overlaps only the device's attention, so the waits decide below that)
            limit, predicted = predicted, self._fit_host(window)
            if b > 0 and eligible > 0:
                # a host block adds one block of capacity, about b / eligible of the batch's KV; waiting
                # longer than that for the host's partials costs more throughput than the share adds
                target = min(target, b / eligible)
        inputs = dict(overhead=overhead, target=target, stall=stall, duration=duration,
                      batch=batch, context_tokens=context, eligible=eligible, predicted=predicted,
                      last_safe=s.last_safe, ceiling=s.ceiling, in_use=in_use, link_cpu=link_cpu,
                      tokens_per_s=level.tokens_per_s, level_batch=level.mean_batch,
                      tokens_per_s_before=before.tokens_per_s if before else None,
                      batch_before=before.mean_batch if before else None)
        if share is HOST:
            inputs["layer_time_limit"] = limit
        if s.ref_batch and (abs(batch - s.ref_batch) > 0.3 * s.ref_batch
                            or abs(context - s.ref_context) > 0.3 * max(s.ref_context, 1)):
            s.ceiling = None
            s.last_safe = min(s.last_safe, b)
        s.ref_batch, s.ref_context = batch, context

        if overhead > target:
            s.ceiling, s.holds = b, 0
            new = s.last_safe if s.last_safe < b else int(b * c.backoff_factor)
            if predicted is not None and new < predicted < b:
                new = predicted
            elif share is HOST and predicted is not None and predicted < new:
                new = predicted                      # what would have fitted the device's window
            return max(0, new), "backoff: overhead above target", inputs
        # not from budget 0: the first host blocks pay the fixed cost of streaming at all (a copy job per
        # layer), which only a larger budget repays; the stall rules govern that first step
        if share is STREAM and link_cpu > 0 and before is not None and before.budget > 0 \
                and before.tokens_per_s is not None:
            if level.windows < JUDGE_WINDOWS or level.tokens_per_s is None:
                return b, "hold: measuring the grow's tokens/s (the link's copies cost CPU)", inputs
            if level.tokens_per_s < (1 - REVERT_MARGIN) * before.tokens_per_s and level.mean_batch >= before.mean_batch:
                s.ceiling, s.holds, s.last_safe = b, 0, before.budget
                return before.budget, "revert: fewer tokens/s at a batch as large (the link's copies cost CPU)", inputs
        s.last_safe = b
        if share is HOST and predicted is not None and predicted < b and stall > 0:
            # a wait for the host buys nothing: follow the window down as the batch changes
            return predicted, "trim: to the share fitted to the device's window", inputs
        if overhead > c.hysteresis * target:
            return b, "hold: overhead within the hysteresis band", inputs
        step = max(c.min_step_blocks, eligible // 16)
        if in_use is not None and in_use + step < b:
            return b, "hold: on-demand offload leaves the budget unused", inputs
        cap = min(self.max_budget, max(b, math.ceil(eligible * 1.1) + step))
        if limit is not None:
            if b >= limit:
                return b, "hold: host attention time at the device's layer time", inputs
            cap = min(cap, limit)
        if b >= cap:
            return b, "hold: budget covers every block the batch can place on the host", inputs
        if predicted is not None and predicted <= b:
            s.holds += 1
            if s.holds < REPROBE_AFTER_HOLDS:
                return b, f"hold: at the {share.limit}", inputs
            s.holds = 0
            return min(cap, b + c.min_step_blocks), "probe: re-test the budget above", inputs
        if s.ceiling is not None:
            if s.ceiling - b <= max(c.min_step_blocks, math.ceil(0.02 * b)):
                s.holds += 1
                if s.holds < REPROBE_AFTER_HOLDS:
                    return b, "hold: converged below the last failing budget", inputs
                s.ceiling, s.holds = None, 0             # conditions drift: look above again
                return min(cap, b + c.min_step_blocks), "probe: re-test the budget above", inputs
            s.holds = 0
            mid = (b + s.ceiling) // 2
            if predicted is not None and b < predicted < s.ceiling:
                mid = predicted
            return min(cap, max(b + c.min_step_blocks, mid)), "grow: bisect toward the last failing budget", inputs
        s.holds = 0
        if predicted is not None and predicted > b:
            return min(cap, max(b + c.min_step_blocks, min(predicted, 4 * max(b, step)))), \
                f"grow: toward the {share.limit}", inputs
        if share is HOST:                  # nothing measured yet: a small share tells the window
            return min(cap, max(b + c.min_step_blocks, math.ceil(b * c.grow_factor))), \
                "grow: probe the host share", inputs
        return min(cap, max(b + step, math.ceil(b * c.grow_factor))), "grow: headroom under the target", inputs

    @staticmethod
    def _remember_level(state: ControllerState, window: list[IterationRecord], old: int, new: int) -> None:
        """What each budget measured, over all its windows: the revert rule's reference after a grow."""
        level = (state.level if state.level is not None and state.level.budget == old else Level(old)).add(window)
        if new == old:
            state.level = level
            return
        state.grown_from = level if new > old else None
        state.level = None

    @staticmethod
    def streamed_share_in_use(window: list[IterationRecord]) -> int:
        """The most host-resident blocks of the running batch outside the host-computed share."""
        return max(r.host_blocks_used - r.swap_space_blocks - r.host_computed_blocks for r in window)

    def _predict(self, window: list[IterationRecord], share: Share = STREAM) -> int | None:
        """Host blocks per step whose per-layer copy (or host attention) takes the per-layer
        device time, the device's own waits for the host's partials left out.

        Judged on decode-only iterations: a prefill-heavy step has far more compute per layer and
        would promise a budget that every following decode step stalls on.
        """
        decode = [r for r in window if r.prefill_tokens == 0 and getattr(r, share.bytes) > 0
                  and getattr(r, share.busy) > 0]
        if not decode:
            return None
        rate = sum(getattr(r, share.bytes) for r in decode) / sum(getattr(r, share.busy) for r in decode)  # bytes/s
        per_layer = sum(r.compute_time - r.host_wait for r in decode) / len(decode) / self.num_layers
        return int(per_layer * rate / self.layer_block_bytes)

    @staticmethod
    def _fit_host(window: list[IterationRecord]) -> int | None:
        """The host-computed share whose attention would just end at the merge: the measured share
        scaled by the device's time before the merge (its window, wider when split) over the host's
        busy time."""
        decode = [r for r in window if r.prefill_tokens == 0 and r.host_time > 0]
        if not decode:
            return None
        busy, room = sum(r.host_time for r in decode), sum(r.host_window for r in decode)
        blocks = sum(r.host_computed_blocks for r in decode) / len(decode)
        return int(blocks * room / busy)
