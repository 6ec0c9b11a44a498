"""The knob gate: a running engine's knob changes, validated when asked for and applied atomically
at the start of the next step.

`request` may be called from any thread: it checks the ranges, the room every request in flight
needs and the memory a larger staging ring takes, then queues the change; the engine thread
`apply`s what is queued before it schedules.
"""
from __future__ import annotations

from typing import Any

from ..config import EngineConfig, check_field, check_live
from ..errors import ConfigError, check_fits

ROOM_KNOBS = ("num_gpu_blocks", "swap_budget_blocks", "host_compute_blocks", "prefetch_depth")


class KnobGate:
    def __init__(self, engine):
        self.engine = engine
        self._pending: dict[str, Any] = {}          # under engine.requests.lock

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def room(self, c: EngineConfig, gpu_limit: int) -> int:
        """KV blocks one request may span under config `c`: the GPU limit, plus (pie, hybrid) the
        host-resident budgets less the staging ring that streaming the swap budget takes from the GPU."""
        if not c.budgeted:
            return gpu_limit
        return gpu_limit + c.host_budget_blocks - self.engine.planner.staging_blocks(c.swap_budget_blocks,
                                                                                     c.prefetch_depth)

    def request(self, changes: dict[str, Any]) -> EngineConfig:
        """Validate now, apply before the next step. Returns the config that will apply."""
        engine = self.engine
        check_live(changes)
        if "num_gpu_blocks" in changes:
            check_field("num_gpu_blocks", changes["num_gpu_blocks"], hi=engine.gpu_capacity)
        for knob in ("swap_budget_blocks", "host_compute_blocks"):
            if knob in changes:
                check_field(knob, changes[knob], hi=engine.host_capacity)
        with engine.requests.lock:
            merged = {**self._pending, **changes}
            new = engine.config.replace(**merged)          # validates every field
            self._check_room(changes, new)
            self._pending = merged
        return new

    def _check_room(self, changes: dict, new: EngineConfig) -> None:
        """A change that would leave a request in flight no way to run, or that needs memory
        the executor does not have, is refused with the reason (caller holds the lock)."""
        engine = self.engine
        largest = engine.requests.largest("total_tokens")
        if largest is not None and set(ROOM_KNOBS) & set(changes):
            need = -(-largest.total_tokens // engine.config.block_size)
            room = self.room(new, new.num_gpu_blocks or engine.blocks.gpu.limit)
            if need > room:
                knob = next(k for k in ROOM_KNOBS if k in changes)
                raise ConfigError(f"{knob}={changes[knob]} leaves {room} KV blocks per request, but request "
                                  f"{largest.request_id!r} in flight needs up to {need} ({largest.total_tokens} "
                                  "tokens); allowed: num_gpu_blocks" + (" + host budgets - the staging ring"
                                                                        if new.budgeted else "") + f" >= {need}")
        longest = engine.requests.largest("prompt_tokens")
        if "max_num_batched_tokens" in changes and not new.chunked_prefill and longest is not None:
            if new.max_num_batched_tokens < longest.prompt_tokens:
                raise ConfigError(f"max_num_batched_tokens={new.max_num_batched_tokens} is less than the "
                                  f"{longest.prompt_tokens}-token prompt of request {longest.request_id!r} in "
                                  f"flight, which could then never run (chunked_prefill is off); allowed: "
                                  f">= {longest.prompt_tokens}")
        if new.budgeted and ("prefetch_depth" in changes or "swap_budget_blocks" in changes):
            # the staging ring holds up to min(depth, L) layers of every host-resident block
            staging = engine.planner.staging_blocks
            old = staging(engine.config.swap_budget_blocks, engine.config.prefetch_depth)
            grown = staging(new.swap_budget_blocks, new.prefetch_depth)
            if grown > old:
                mem = engine.executor.memory_available()
                knob = "prefetch_depth" if "prefetch_depth" in changes else "swap_budget_blocks"
                check_fits(knob, changes[knob], (grown - old) * engine.block_bytes, mem.device,
                           f"{mem.device_name} for the staging ring", "a smaller prefetch_depth or swap_budget_blocks")

    def apply(self) -> None:
        """The queued changes take effect: the config, the GPU limit, the link, the host's attention
        rate, the controller's window; one "knob" event."""
        engine = self.engine
        with engine.requests.lock:
            changes, self._pending = self._pending, {}
        if not changes:
            return
        engine.config = c = engine.config.replace(**changes)
        if "num_gpu_blocks" in changes:
            engine.blocks.gpu.limit = c.num_gpu_blocks
        if "link_bandwidth_gbps" in changes or "link_latency_us" in changes:
            engine.executor.set_link(c.link_bandwidth_gbps, c.link_latency_us)
        if "host_attention_gbps" in changes:
            engine.executor.set_host_attention(c.host_attention_gbps)
        controller = engine.controller
        manual = "swap_budget_blocks" in changes or "host_compute_blocks" in changes
        if controller is not None and ("controller" in changes or manual):
            controller.on_config(c.controller, manual=manual)
        if controller is not None and "offload" in changes:
            controller.on_offload()
        engine.metrics.add_event(engine.clock.now(), "knob", step=engine.step_id,
                                 **{k: (v if not hasattr(v, "__dataclass_fields__") else str(v))
                                    for k, v in changes.items()})
