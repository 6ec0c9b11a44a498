"""Adaptive expansion: size the swap budget from measured stalls (Pie's second idea).

Each decision looks at a window of iterations run at the current budget:
- overhead = stall / iteration time above the target: back off fast, to the last safe budget
  (or by `backoff_factor`), and remember the failing budget as a ceiling;
- overhead under `hysteresis * target`: the budget is safe; grow toward the predicted link limit
  (per-layer compute time x measured link rate / bytes per staged block), multiplicatively when
  there is no prediction yet, by bisection when a ceiling is known;
- in between: hold (hysteresis against oscillation).
The batch changing (size or context by > 30%) forgets the ceiling so the budget can follow.
Every decision is an event with its inputs and the rule that fired. Imports no torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import ControllerConfig
from .metrics import IterationRecord

SETTLE_ITERATIONS = 1       # iterations after a change that carry its one-off copies; not judged
REPROBE_AFTER_HOLDS = 8     # converged decisions before the controller looks above its ceiling again


@dataclass
class ControllerState:
    """What the controller learnt; the budget itself is the engine config's swap_budget_blocks."""
    last_safe: int = 0
    ceiling: int | None = None
    ref_batch: int = 0
    ref_context: int = 0
    decisions: int = 0
    holds: int = 0


class AdaptiveController:
    def __init__(self, config: ControllerConfig, layer_block_bytes: int, num_layers: int,
                 host_capacity: int):
        self.config = config
        self.layer_block_bytes = layer_block_bytes
        self.num_layers = num_layers
        self.host_capacity = host_capacity
        self.state = ControllerState()
        self._window: list[IterationRecord] = []
        self._skip = config.warmup_iterations

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
        self._window, self._skip = [], SETTLE_ITERATIONS

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
        old = engine.config.swap_budget_blocks
        new, rule, inputs = self.decide(window, engine.eligible_host_blocks(), old)
        self.state.decisions += 1
        engine.metrics.add_event(rec.end, "controller", step=rec.step, old_budget=old, new_budget=new,
                                 rule=rule, **inputs)
        if new != old:
            engine.set_budget(new)
            self._skip = SETTLE_ITERATIONS

    def decide(self, window: list[IterationRecord], eligible: int, budget: int) -> tuple[int, str, dict]:
        c, s, b = self.config, self.state, budget
        duration = sum(r.duration for r in window)
        stall = sum(r.stall for r in window)
        overhead = stall / duration if duration > 0 else 0.0
        batch = sum(r.batch_size for r in window) / len(window)
        context = sum(r.context_tokens for r in window) / len(window)
        predicted = self._predict(window)
        inputs = dict(overhead=overhead, target=c.target_overhead, stall=stall, duration=duration,
                      batch=batch, context_tokens=context, eligible=eligible, predicted=predicted,
                      last_safe=s.last_safe, ceiling=s.ceiling)
        if s.ref_batch and (abs(batch - s.ref_batch) > 0.3 * s.ref_batch
                            or abs(context - s.ref_context) > 0.3 * max(s.ref_context, 1)):
            s.ceiling = None
            s.last_safe = min(s.last_safe, b)
        s.ref_batch, s.ref_context = batch, context

        if overhead > c.target_overhead:
            s.ceiling, s.holds = b, 0
            new = s.last_safe if s.last_safe < b else int(b * c.backoff_factor)
            if predicted is not None and new < predicted < b:
                new = predicted
            return max(0, new), "backoff: overhead above target", inputs
        s.last_safe = b
        if overhead > c.hysteresis * c.target_overhead:
            return b, "hold: overhead within the hysteresis band", inputs
        step = max(c.min_step_blocks, eligible // 16)
        cap = min(self.max_budget, max(b, math.ceil(eligible * 1.1) + step))
        if b >= cap:
            return b, "hold: budget covers every block the batch can place on the host", inputs
        if predicted is not None and predicted <= b:
            s.holds += 1
            if s.holds < REPROBE_AFTER_HOLDS:
                return b, "hold: at the predicted link limit", inputs
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
                "grow: toward the predicted link limit", inputs
        return min(cap, max(b + step, math.ceil(b * c.grow_factor))), "grow: headroom under the target", inputs

    def _predict(self, window: list[IterationRecord]) -> int | None:
        """Host blocks per step whose per-layer copy equals the per-layer compute time.

        Judged on decode-only iterations: a prefill-heavy step has far more compute per layer and
        would promise a budget that every following decode step stalls on.
        """
        decode = [r for r in window if r.prefill_tokens == 0 and r.stream_bytes > 0 and r.copy_time > 0]
        if not decode:
            return None
        rate = sum(r.stream_bytes for r in decode) / sum(r.copy_time for r in decode)   # bytes/s achieved
        per_layer = sum(r.compute_time for r in decode) / len(decode) / self.num_layers  # compute s per layer
        return int(per_layer * rate / self.layer_block_bytes)
