"""CPU: pie_lab vs transformers' `generate` on the same tiny model and prompts (tokens/s and ratio).

    python benchmarks/cpu_vs_transformers.py [--model opt-tiny] [--requests 32] [--max-tokens 64]

transformers runs the whole batch at once (left padding, greedy, its default cache); pie_lab runs
continuous batching on its cpu executor. Both are greedy; the script checks they agree.
"""
from __future__ import annotations

import argparse
import random
import time

import torch

from pie_lab import LLM, SamplingParams
from pie_lab.model.loader import build_hf_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="opt-tiny")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 500) for _ in range(rng.randint(8, 128))] for _ in range(args.requests)]
    n_tokens = args.requests * args.max_tokens

    llm = LLM(args.model, "cpu", block_size=16, max_num_seqs=args.requests, num_gpu_blocks=4096,
              max_num_batched_tokens=8192)
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2))
    pie_times, outs = [], None
    for _ in range(args.repeats):
        t = time.perf_counter()
        outs = llm.generate(prompts, sp)
        pie_times.append(time.perf_counter() - t)

    hf = build_hf_model(args.model, seed=0)
    pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    hf_times, gen = [], None
    with torch.inference_mode():
        for _ in range(args.repeats):
            t = time.perf_counter()
            gen = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.max_tokens,
                              min_new_tokens=args.max_tokens, do_sample=False, pad_token_id=pad)
            hf_times.append(time.perf_counter() - t)
    agree = sum(o.token_ids == gen[i, width:].tolist() for i, o in enumerate(outs))

    pie_best, hf_best = min(pie_times), min(hf_times)
    print(f"model {args.model}, {args.requests} prompts (8-128 tokens), {args.max_tokens} new tokens each, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'engine':<28}{'seconds':>9}{'tokens/s':>11}")
    print(f"{'pie_lab (cpu executor)':<28}{pie_best:>9.3f}{n_tokens / pie_best:>11,.0f}")
    print(f"{'transformers generate':<28}{hf_best:>9.3f}{n_tokens / hf_best:>11,.0f}")
    print(f"ratio pie_lab / transformers: {hf_best / pie_best:.2f}x; greedy outputs agree on {agree}/{len(outs)} "
          "(padding in the batched transformers run can flip near-ties)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
