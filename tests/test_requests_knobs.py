"""The engine's request table and knob gate on their own."""
import pytest

from pie_lab import EngineConfig, SamplingParams
from pie_lab.core.requests import RequestTable
from pie_lab.core.sequence import Sequence
from pie_lab.errors import ConfigError

from fake_executor import make_engine


def seq(i, n=3):
    return Sequence(i, list(range(5, 5 + n)), SamplingParams(max_tokens=4), 0.0)


def test_request_table_from_arrival_to_retirement():
    t = RequestTable()
    t.add(seq(0, 3), "a", 7)
    t.add(seq(1, 9), "b", 12)
    with pytest.raises(ConfigError, match="'a' is already in flight"):
        t.add(seq(2), "a", 7)
    assert not t.quiet and t.sequences() == []              # not taken in yet
    taken = t.take_incoming()
    assert [s.seq_id for s in taken] == [0, 1] and t.quiet and [s.seq_id for s in t.sequences()] == [0, 1]
    assert t.largest("prompt_tokens").request_id == "b" and t.largest("total_tokens").total_tokens == 12
    assert t.abort("b") and not t.abort("zzz") and not t.quiet
    assert t.in_flight() == ["a", "b"] and t.in_flight({0}) == ["a"]
    assert t.retire(taken[1]) == "b"
    assert t.take_aborts() == [] and t.in_flight() == ["a"]    # retired meanwhile: nothing to abort
    t.add(seq(3), "b", 7)                                     # its id is free again


def test_knob_gate_validates_now_and_applies_at_the_next_step():
    engine = make_engine(EngineConfig(block_size=4, max_num_seqs=8))
    engine.add_request([5, 6, 7, 8, 9], SamplingParams(max_tokens=3), request_id="r")
    with pytest.raises(ConfigError, match="max_num_batched_tokens=2 is less than the 5-token prompt of request 'r'"):
        engine.update(max_num_batched_tokens=2)
    assert not engine.knobs.pending
    new = engine.update(max_num_seqs=2)
    assert engine.knobs.pending and new.max_num_seqs == 2 and engine.config.max_num_seqs == 8
    engine.step()
    assert not engine.knobs.pending and engine.config.max_num_seqs == 2
    knob = engine.metrics.events_df().query("kind == 'knob'")
    assert len(knob) == 1 and knob.iloc[0]["max_num_seqs"] == 2
