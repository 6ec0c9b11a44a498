"""What each offload policy does, as a table: the engine tests these traits, never a policy's name."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyTraits:
    host_tier: bool          # keeps KV in a host pool by itself (else only preemption_mode="swap" needs one)
    swaps: bool              # preempted sequences go to the host swap space by default (else recomputed)
    host_resident: bool      # running sequences keep full blocks on the host (the swap planner moves them)
    budgeted: bool           # ... up to swap_budget_blocks (+ host_compute_blocks), else flexgen_fraction of each
    host_compute: bool       # host_compute_blocks of them are attended on the host (sub-batch H)

    @property
    def follows_context(self) -> bool:
        """The host share is a fraction of every sequence's context, so blocks move as it grows."""
        return self.host_resident and not self.budgeted


# name: (host_tier, swaps, host_resident, budgeted, host_compute); the order is POLICIES'
POLICY_TRAITS: dict[str, PolicyTraits] = {
    "none": PolicyTraits(False, False, False, False, False),
    "recompute": PolicyTraits(False, False, False, False, False),
    "pie": PolicyTraits(True, True, True, True, False),
    "vllm-swap": PolicyTraits(True, True, False, False, False),
    "flexgen": PolicyTraits(True, False, True, False, False),
    "hybrid": PolicyTraits(True, True, True, True, True),
}
