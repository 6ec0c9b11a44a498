"""A request as the engine tracks it: tokens, KV progress, block table and timestamps."""
from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, field

from ..sampling import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"        # queued, or preempted for recompute (no KV)
    RUNNING = "running"
    SWAPPED = "swapped"        # vllm-swap: all KV in the host swap space, not scheduled
    FINISHED = "finished"


host_count_of = operator.attrgetter("host_count")            # sum(map(host_count_of, seqs)): host blocks held


def is_host(block: int) -> bool:
    """Block-table entries are GPU block ids (>= 0) or host block ids encoded as ~id (< 0)."""
    return block < 0


def host_ref(host_index: int) -> int:
    return ~host_index


@dataclass(eq=False)
class Sequence:
    seq_id: int
    prompt_token_ids: list[int]
    sampling: SamplingParams
    arrival_time: float
    output_token_ids: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    finish_reason: str | None = None
    host_count: int = 0           # host entries in block_table; they are always its first entries
    num_preemptions: int = 0
    num_swaps: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def last_token(self) -> int:
        return self.output_token_ids[-1] if self.output_token_ids else self.prompt_token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    @property
    def in_prefill(self) -> bool:
        return self.num_computed_tokens < self.num_tokens - 1

    def num_full_blocks(self, block_size: int) -> int:
        """Blocks whose KV is complete (every slot computed): the only ones that may go to the host."""
        return self.num_computed_tokens // block_size

    def num_host_blocks(self) -> int:
        return self.host_count
