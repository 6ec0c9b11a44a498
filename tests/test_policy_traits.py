"""The policy-traits table: consistent traits, and the config's rules read from it."""
import pytest

from pie_lab import EngineConfig
from pie_lab.config import POLICIES
from pie_lab.policy_traits import POLICY_TRAITS


@pytest.mark.parametrize("policy", POLICIES)
def test_traits_are_consistent(policy):
    t = POLICY_TRAITS[policy]
    assert not t.budgeted or t.host_resident          # a budget counts host-resident blocks
    assert not t.host_compute or t.budgeted           # hybrid's share is part of the budget
    assert not t.host_resident or t.host_tier
    assert not t.swaps or t.host_tier


@pytest.mark.parametrize("policy", POLICIES)
def test_config_follows_the_traits(policy):
    c = EngineConfig(policy=policy, swap_budget_blocks=4, host_compute_blocks=3)
    t = c.traits
    assert c.budgeted == t.budgeted
    assert c.host_budget_blocks == 4 + (3 if t.host_compute else 0)
    assert c.swap_preemption == t.swaps
    assert (c.host_blocks(10) == 0) == (not t.host_tier and not t.swaps)
    assert EngineConfig(policy=policy, preemption_mode="swap").host_blocks(10) == 20


def test_only_flexgen_follows_the_context():
    assert [p for p in POLICIES if POLICY_TRAITS[p].follows_context] == ["flexgen"]
