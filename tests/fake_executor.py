"""A numpy executor for core tests: its "KV" is the token ids themselves, stored in paged pools.

Each step writes the fed tokens into their slots, then reads every sequence's whole context back
through the block table (pool, or staging for streamed host blocks) and derives the next token
from what it read. Any plumbing error (a wrong mapping, a missed copy, a reused block) changes
the tokens, so comparing runs with and without swapping tests the core without torch.
"""
from __future__ import annotations

import numpy as np

from pie_lab.core.plan import StepOutput, StepPlan, StepTiming, coalesce
from pie_lab.executors.base import ExecutorBase, VirtualClock
from pie_lab.model_spec import named_spec


class FakeExecutor(ExecutorBase):
    name = "fake"
    emulated_link = True
    link = (1.0, 0.0)

    def __init__(self, model="opt-tiny", config=None, step_time=0.01):
        self.spec = named_spec(model) if isinstance(model, str) else model
        self.clock = VirtualClock()
        self.config = config
        self.step_time = step_time
        self.steps = 0

    def default_num_gpu_blocks(self, config):
        return 64

    def initialize(self, num_gpu_blocks, num_host_blocks):
        bs = self.config.block_size
        self.pool = np.full((num_gpu_blocks, bs), -1, dtype=np.int64)
        self.host = np.full((max(num_host_blocks, 1), bs), -1, dtype=np.int64)

    def memory_available(self):
        from pie_lab.executors.base import MemoryAvailable
        return MemoryAvailable(None, None)

    def set_link(self, bandwidth_gbps, latency_us):
        pass

    def _copy(self, src, dst, mapping):
        for r in coalesce(list(mapping)):
            dst[r.dst:r.dst + r.count] = src[r.src:r.src + r.count]

    def execute(self, plan: StepPlan) -> StepOutput:
        bs = self.config.block_size
        self._copy(self.pool, self.host, plan.swap_out)
        self._copy(self.host, self.pool, plan.swap_in)
        self._copy(self.pool, self.host, plan.offload)
        staging = np.full((max(plan.stream.capacity if plan.stream else 0, 1), bs), -7, dtype=np.int64)
        if plan.stream:
            self._copy(self.host, staging, [(h, h) for h in plan.stream.host_blocks])
        tokens = {}
        for w in plan.seqs:
            for i, t in enumerate(w.token_ids):
                p = w.start_pos + i
                b = w.block_table[p // bs]
                assert b >= 0, f"new token of seq {w.seq_id} at {p} would be written to a host block"
                self.pool[b, p % bs] = t
            hc = w.host_computed            # hybrid: these leading host blocks are read in host memory
            assert all(b < 0 for b in w.block_table[:hc]), f"seq {w.seq_id}: host-computed entry on the GPU"
            assert hc == 0 or len(w.token_ids) == 1, f"seq {w.seq_id}: host-computed blocks in a prefill chunk"
            if plan.stream and hc:
                assert not set(~b for b in w.block_table[:hc]) & set(plan.stream.host_blocks), \
                    f"seq {w.seq_id}: a host-computed block is also streamed"
            ctx = np.array([(self.host[~b] if p // bs < hc else self.pool[b] if b >= 0 else staging[~b])[p % bs]
                            for p in range(w.context_len) for b in [w.block_table[p // bs]]])
            if w.sample:
                weights = np.arange(1, len(ctx) + 1, dtype=np.int64)
                tokens[w.seq_id] = int((ctx * weights).sum() * 2654435761 % (self.spec.vocab_size - 3)) + 3
        self.steps += 1
        self.clock.advance(self.step_time)
        return StepOutput(tokens, StepTiming(self.step_time))


def make_engine(config, model="opt-tiny", num_gpu_blocks=None, num_host_blocks=None):
    from pie_lab.core.engine import Engine
    ex = FakeExecutor(model, config)
    gpu = num_gpu_blocks or config.num_gpu_blocks or 64
    host = num_host_blocks if num_host_blocks is not None else (config.num_host_blocks or 0)
    ex.initialize(gpu, host)
    return Engine(config, ex, gpu, host)


def run_to_completion(engine, max_steps=100_000, check=True):
    outs = {}
    steps = 0
    while engine.has_unfinished():
        for o in engine.step():
            outs[o.request_id] = o.token_ids
        if check:
            engine.check_blocks()
        steps += 1
        assert steps < max_steps, "engine did not finish"
    return outs
