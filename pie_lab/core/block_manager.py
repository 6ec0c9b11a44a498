"""Two-tier KV block accounting: GPU blocks and host blocks, with deferred frees.

Block ids are indices into the executor's pools. A sequence's block table holds GPU ids (>= 0)
and host ids encoded as ~id (< 0). Blocks whose bytes are still being copied this step are
freed only when the step ends (`end_step`), so no copy ever reads a block that was reused.
"""
from __future__ import annotations

import heapq

from ..errors import EngineError
from .sequence import Sequence, host_ref, is_host


class BlockPool:
    """Free list handing out the lowest free ids first (compact, so host ranges coalesce)."""

    def __init__(self, name: str, capacity: int):
        self.name = name
        self.capacity = capacity          # physical blocks
        self.limit = capacity             # blocks that may be in use (a live knob)
        self.reserved = 0                 # blocks withheld for other uses (the staging ring)
        self._free = list(range(capacity))
        self._used: set[int] = set()

    @property
    def num_used(self) -> int:
        return len(self._used)

    @property
    def num_free(self) -> int:
        return max(0, min(len(self._free), self.limit - self.reserved - len(self._used)))

    def allocate(self, n: int) -> list[int]:
        if n > self.num_free:
            raise EngineError(f"{self.name} pool: asked for {n} blocks, {self.num_free} free")
        ids = [heapq.heappop(self._free) for _ in range(n)]
        self._used.update(ids)
        return ids

    def free(self, ids) -> None:
        for i in ids:
            if i not in self._used:
                raise EngineError(f"{self.name} pool: block {i} freed twice or never allocated")
            self._used.remove(i)
            heapq.heappush(self._free, i)

    def used_ids(self) -> set[int]:
        return set(self._used)


class BlockManager:
    def __init__(self, block_size: int, num_gpu_blocks: int, num_host_blocks: int):
        self.block_size = block_size
        self.gpu = BlockPool("gpu", num_gpu_blocks)
        self.host = BlockPool("host", num_host_blocks)
        self._pending_gpu: list[int] = []
        self._pending_host: list[int] = []
        self._filled_this_step: set[int] = set()   # GPU blocks a blocking host-to-device copy fills this step
        self.host_moves = 0                        # changes to running sequences' host entries (a cache key)

    # -- sizing ---------------------------------------------------------------------------
    def blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        total = -(-(seq.num_computed_tokens + num_new_tokens) // self.block_size)
        return max(0, total - len(seq.block_table))

    def can_allocate(self, num_blocks: int) -> bool:
        return num_blocks <= 0 or num_blocks <= self.gpu.num_free

    def allocate(self, seq: Sequence, num_new_tokens: int) -> None:
        """Give `seq` GPU blocks for its next `num_new_tokens` tokens (new KV is always written on the GPU)."""
        need = self.blocks_needed(seq, num_new_tokens)
        if need:
            seq.block_table.extend(self.gpu.allocate(need))

    def free(self, seq: Sequence) -> None:
        if seq.host_count:
            self.host_moves += 1
        self.gpu.free(b for b in seq.block_table if not is_host(b))
        self.host.free(~b for b in seq.block_table if is_host(b))
        seq.block_table = []
        seq.host_count = 0

    # -- moves between tiers (return block mappings for the plan) -------------------------
    def offload(self, seq: Sequence, n: int) -> list[tuple[int, int]]:
        """Move the first `n` GPU blocks of `seq` (full ones) to the host; async copies, the GPU
        blocks freed at step end. Returns the (gpu, host) mappings."""
        first = seq.host_count                     # host entries come first: the next GPU block
        if first + n > seq.num_full_blocks(self.block_size):
            raise EngineError(f"seq {seq.seq_id} blocks {first}..{first + n - 1} are not all full GPU blocks")
        gpu_ids = seq.block_table[first:first + n]
        host_ids = self.host.allocate(n)
        seq.block_table[first:first + n] = [host_ref(h) for h in host_ids]
        seq.host_count += n
        self.host_moves += 1
        self._pending_gpu.extend(gpu_ids)
        return list(zip(gpu_ids, host_ids))

    def bring_back(self, seq: Sequence, n: int) -> list[tuple[int, int]]:
        """Move the last `n` host blocks of `seq` to new GPU blocks, newest first; blocking copies,
        the host blocks freed at step end. Returns the (host, gpu) mappings."""
        last = seq.host_count
        if not 0 <= n <= last:
            raise EngineError(f"seq {seq.seq_id}: cannot bring back {n} of its {last} host blocks")
        gpu_ids = self.gpu.allocate(n)
        host_ids = [~b for b in reversed(seq.block_table[last - n:last])]
        seq.block_table[last - n:last] = reversed(gpu_ids)
        seq.host_count -= n
        self.host_moves += 1
        self._filled_this_step.update(gpu_ids)
        self._pending_host.extend(host_ids)
        return list(zip(host_ids, gpu_ids))

    def can_swap_out(self, seq: Sequence) -> bool:
        """Swap-out copies run before swap-ins, so a block being filled this step cannot go out."""
        gpu = seq.block_table[seq.host_count:]
        return len(gpu) <= self.host.num_free and self._filled_this_step.isdisjoint(gpu)

    def swap_out(self, seq: Sequence) -> list[tuple[int, int]]:
        """vllm-swap preemption: every GPU block to the host; the copy is blocking, so GPU ids free now."""
        first = seq.host_count
        gpu_ids = seq.block_table[first:]
        host_ids = self.host.allocate(len(gpu_ids))
        seq.block_table[first:] = [host_ref(h) for h in host_ids]
        seq.host_count = len(seq.block_table)       # no host_moves: seq leaves the batch, which the key shows
        self.gpu.free(gpu_ids)
        return list(zip(gpu_ids, host_ids))

    def can_swap_in(self, seq: Sequence, extra: int = 1) -> bool:
        return seq.num_host_blocks() + extra <= self.gpu.num_free

    def swap_in(self, seq: Sequence) -> list[tuple[int, int]]:
        return self.bring_back(seq, seq.host_count)

    def end_step(self) -> None:
        """The step's copies are done: release blocks whose bytes moved away this step."""
        self.gpu.free(self._pending_gpu)
        self.host.free(self._pending_host)
        self._pending_gpu, self._pending_host = [], []
        self._filled_this_step.clear()

    # -- accounting checks (tests and debugging) ------------------------------------------
    def check(self, seqs) -> None:
        gpu = [b for s in seqs for b in s.block_table if not is_host(b)] + self._pending_gpu
        host = [~b for s in seqs for b in s.block_table if is_host(b)] + self._pending_host
        for s in seqs:
            if any(is_host(b) for b in s.block_table[s.host_count:]) or \
                    not all(is_host(b) for b in s.block_table[:s.host_count]):
                raise EngineError(f"seq {s.seq_id}: host blocks must be the first {s.host_count} table entries")
        for name, ids, pool in (("gpu", gpu, self.gpu), ("host", host, self.host)):
            if len(ids) != len(set(ids)):
                raise EngineError(f"{name} block referenced twice: {sorted(ids)}")
            if set(ids) != pool.used_ids():
                raise EngineError(f"{name} blocks leaked or lost: tables {sorted(ids)} vs pool {sorted(pool.used_ids())}")
