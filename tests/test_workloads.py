import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from pie_lab.errors import ConfigError
from pie_lab.workloads import (Request, Workload, alpaca_like, load_alpaca, load_sharegpt, mixed,
                               sharegpt_like)
from pie_lab.workloads.generators import clipped_lognormal_mean, fit_lognormal_mu

DATA = Path(__file__).parent / "data"
TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"


class WordTokenizer:
    """Stands in for a real tokenizer: one id per character, offset past the special ids."""

    def encode(self, text):
        return [3 + ord(c) % 500 for c in text]


@pytest.mark.parametrize("gen,mean_in,mean_out", [(sharegpt_like, 161.31, 337.99), (alpaca_like, 19.31, 58.45)])
def test_means_match_published_statistics(gen, mean_in, mean_out):
    w = gen(10_000, seed=7)
    d = w.describe()
    assert d["input_mean"] == pytest.approx(mean_in, rel=0.05)
    assert d["output_mean"] == pytest.approx(mean_out, rel=0.05)
    assert d["input_p50"] < d["input_mean"] and d["output_p50"] < d["output_mean"]   # right-skewed
    assert all(r.prompt_len + r.max_tokens <= 2048 for r in w)


def test_clipped_mean_is_exact_and_clip_shift_is_bounded():
    mu = fit_lognormal_mu(337.99, 0.7, 1, 1024)
    assert clipped_lognormal_mean(mu, 0.7, 1, 1024) == pytest.approx(337.99, rel=1e-6)
    assert abs(math.exp(mu + 0.245) / 337.99 - 1) <= 0.05
    with pytest.raises(ConfigError, match="max_model_len"):
        sharegpt_like(10, seed=0, max_model_len=512)          # mean output 338 cannot fit in 256
    with pytest.raises(ConfigError, match="moves the mean"):
        sharegpt_like(10, seed=0, max_model_len=1024)


def test_reproducible_by_seed_and_token_range():
    a, b, c = (sharegpt_like(300, seed=s, rate=2.0, vocab_size=1000) for s in (3, 3, 4))
    assert a == b and a != c
    ids = [t for r in a for t in r.prompt_token_ids]
    assert min(ids) >= 3 and max(ids) < 1000


def test_poisson_rate_and_bursty_cv():
    w = alpaca_like(10_000, seed=1, rate=8.0)
    t = np.array([r.arrival_time for r in w])
    assert np.all(np.diff(t) >= 0)
    assert len(t) / t[-1] == pytest.approx(8.0, rel=0.05)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    b = np.array([r.arrival_time for r in alpaca_like(10_000, seed=1, rate=8.0, arrival="bursty")])
    bg = np.diff(b)
    assert len(b) / b[-1] == pytest.approx(8.0, rel=0.15)
    assert bg.std() / bg.mean() > 1.5
    assert all(r.arrival_time == 0.0 for r in alpaca_like(50, seed=1))                  # offline by default
    with pytest.raises(ConfigError, match="needs a rate"):
        alpaca_like(5, seed=1, arrival="poisson")
    with pytest.raises(ConfigError, match="arrival"):
        alpaca_like(5, seed=1, rate=1.0, arrival="uniform")


def test_jsonl_round_trip_and_shipped_traces(tmp_path):
    w = alpaca_like(50, seed=2, rate=3.0)
    w.to_jsonl(tmp_path / "w.jsonl")
    assert Workload.from_jsonl(tmp_path / "w.jsonl").requests == w.requests
    assert Workload.from_jsonl(TRACES / "sharegpt_like_200.jsonl").requests == sharegpt_like(200, seed=0, rate=2.0).requests
    assert Workload.from_jsonl(TRACES / "alpaca_like_200.jsonl").requests == alpaca_like(200, seed=0, rate=10.0).requests
    (tmp_path / "bad.jsonl").write_text('{"request_id": 1}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        Workload.from_jsonl(tmp_path / "bad.jsonl")


def test_request_validation_remap_and_mixed():
    with pytest.raises(ConfigError, match="max_tokens"):
        Request(0, (5,), 0)
    with pytest.raises(ConfigError, match="prompt_token_ids"):
        Request(0, (), 4)
    with pytest.raises(ConfigError, match="duplicate"):
        Workload((Request(0, (5,), 1), Request(0, (6,), 1)))
    small = sharegpt_like(20, seed=0).remap_vocab(512)
    assert all(3 <= t < 512 for r in small for t in r.prompt_token_ids)
    m = mixed([alpaca_like(5, seed=0, rate=1.0), sharegpt_like(5, seed=0, rate=1.0)])
    assert [r.request_id for r in m] == list(range(10))
    assert [r.arrival_time for r in m] == sorted(r.arrival_time for r in m)


def test_load_sharegpt_with_tokenizer():
    w = load_sharegpt(DATA / "sharegpt_sample.json", tokenizer=WordTokenizer())
    tok = WordTokenizer()
    assert len(w) == 4          # conversations without a human turn followed by a gpt turn are skipped
    assert w[0].prompt_token_ids == tuple(tok.encode("What is the capital of France?"))
    assert w[0].max_tokens == len(tok.encode("The capital of France is Paris, a city on the Seine known for its museums and cafes."))
    assert w[2].prompt_token_ids == tuple(tok.encode("Explain paged attention in two sentences."))


def test_load_without_tokenizer_warns_and_approximates():
    with pytest.warns(UserWarning, match="approximated"):
        w = load_sharegpt(DATA / "sharegpt_sample.json", seed=1, rate=2.0)
    assert w[0].prompt_len == math.ceil(6 * 1.3) and w[3].max_tokens == math.ceil(4 * 1.3)
    assert w[0].arrival_time > 0
    with pytest.warns(UserWarning):
        again = load_sharegpt(DATA / "sharegpt_sample.json", seed=1, rate=2.0)
    assert again == w


def test_load_alpaca_and_limits():
    tok = WordTokenizer()
    w = load_alpaca(DATA / "alpaca_sample.json", tokenizer=tok)
    assert len(w) == 4          # missing instruction or empty output: skipped
    assert w[1].prompt_token_ids == tuple(tok.encode("Translate the sentence into French.\n\nThe cache is full."))
    assert w[3].max_tokens == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(load_alpaca(DATA / "alpaca_sample.json", max_requests=2)) == 2
        assert all(r.prompt_len + r.max_tokens <= 20
                   for r in load_alpaca(DATA / "alpaca_sample.json", max_model_len=20))
    with pytest.raises(ConfigError, match="does not exist"):
        load_alpaca(DATA / "nope.json", tokenizer=tok)
    with pytest.raises(ConfigError, match="encode"):
        load_alpaca(DATA / "alpaca_sample.json", tokenizer=object())
