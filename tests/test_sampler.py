"""Sampler: greedy, top-k, top-p, and per-request seeded reproducibility."""
from __future__ import annotations

import torch

from pie_lab.core.plan import SeqWork
from pie_lab.model.sampler import Sampler, filter_logits
from pie_lab.sampling import SamplingParams

V = 50


def _work(seq_id: int, num_generated: int = 0, **sampling) -> SeqWork:
    return SeqWork(seq_id, (1,), 0, (0,), True, SamplingParams(**sampling), num_generated)


def _logits(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, V, generator=torch.Generator().manual_seed(seed))


def test_greedy_is_argmax():
    logits = _logits(6)
    assert Sampler().sample(logits, [_work(i) for i in range(6)]) == logits.argmax(-1).tolist()


def test_top_k_one_equals_greedy():
    logits = _logits(6)
    works = [_work(i, temperature=1.5, top_k=1, seed=i) for i in range(6)]
    assert Sampler().sample(logits, works) == logits.argmax(-1).tolist()


def test_seeded_sampling_ignores_batch_composition():
    logits = _logits(8)
    target = _work(42, num_generated=3, temperature=1.0, top_p=0.9, seed=7)
    alone = Sampler(seed=0).sample(logits[3:4], [target])
    others = [_work(i, temperature=0.8) for i in range(7)]
    batched = Sampler(seed=99).sample(logits, others[:3] + [target] + others[3:])
    assert batched[3] == alone[0]
    # the draw depends on the output index, and repeats after a release
    s = Sampler()
    draws = [s.sample(logits[3:4], [_work(42, k, temperature=1.0, seed=7)])[0] for k in range(20)]
    s.release([42])
    again = [s.sample(logits[3:4], [_work(42, k, temperature=1.0, seed=7)])[0] for k in range(20)]
    assert draws == again and len(set(draws)) > 1


def test_unseeded_requests_use_engine_seed_and_seq_id():
    logits = _logits(1).expand(2, V)
    a = [Sampler(seed=1).sample(logits[:1], [_work(5, k, temperature=1.0)])[0] for k in range(20)]
    b = [Sampler(seed=1).sample(logits[:1], [_work(5, k, temperature=1.0)])[0] for k in range(20)]
    c = [Sampler(seed=2).sample(logits[:1], [_work(5, k, temperature=1.0)])[0] for k in range(20)]
    assert a == b and a != c


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    x = filter_logits(probs.log(), 1.0, 0, 0.7)
    assert torch.isfinite(x).tolist() == [True, True, False, False]
    x = filter_logits(probs.log(), 1.0, 0, 0.8)            # mass before token 2 is 0.8: dropped
    assert torch.isfinite(x).tolist() == [True, True, False, False]
    x = filter_logits(probs.log(), 1.0, 0, 0.81)
    assert torch.isfinite(x).tolist() == [True, True, True, False]
    x = filter_logits(probs.log(), 1.0, 0, 0.1)             # the top token always stays
    assert torch.isfinite(x).tolist() == [True, False, False, False]
    s = Sampler()
    draws = {s.sample(probs.log()[None], [_work(0, k, temperature=1.0, top_p=0.7, seed=1)])[0] for k in range(200)}
    assert draws == {0, 1}


def test_top_k_filters():
    x = filter_logits(torch.tensor([1.0, 4.0, 3.0, 2.0]), 1.0, 2, 1.0)
    assert torch.isfinite(x).tolist() == [False, True, True, False]
