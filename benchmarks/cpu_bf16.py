"""The cpu executor's bf16 mode (issue 22): `LLM(..., dtype="bfloat16")`, off by default. Its speed against
float32 (interleaved, best of --rounds) and its parity rule, checked: greedy tokens equal transformers'
own bf16 `generate` of the same weights, or they part at a near tie, which the float64 forward of the
same bf16 weights settles (the top two float64 logits at the parting token closer than --tie).

    python benchmarks/cpu_bf16.py [--max-tokens 64] [--threads 2] [--rounds 2]

SmolLM2-135M, the 32 chat prompts of data/prompts.jsonl. bf16 GEMMs use AVX512-BF16 where the CPU has it
(oneDNN picks it). Not part of CI.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch                                                   # noqa: E402

from pie_lab import LLM, SamplingParams                        # noqa: E402


def hf_generate(hf, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        ids = torch.tensor([prompt])
        g = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return g[0, len(prompt):].tolist()


def margin64(hf64, tokens: list[int]) -> float:
    """float64 logit gap between the best and second-best next token after `tokens`."""
    with torch.inference_mode():
        logits = hf64(torch.tensor([tokens])).logits[0, -1]
    top = logits.topk(2).values
    return float(top[0] - top[1])


def main(argv=None) -> int:
    from cpu_vs_transformers import make_prompts
    from transformers import AutoModelForCausalLM

    from pie_lab.model import gguf
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tie", type=float, default=0.25, help="float64 top-2 logit gap that counts as a near tie")
    args = ap.parse_args(argv)
    opts = dict(block_size=32, max_num_seqs=32, max_num_batched_tokens=8192)
    engines = {d: LLM("smollm2-135m", "cpu", dtype=d, **opts) for d in ("float32", "bfloat16")}
    torch.set_num_threads(args.threads)
    prompts = make_prompts(engines["float32"], 32)
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    best, tokens = {d: 0.0 for d in engines}, {}
    for _ in range(args.rounds):
        for d, llm in engines.items():
            t = time.perf_counter()
            outs = llm.generate(prompts, sp)
            best[d] = max(best[d], 32 * args.max_tokens / (time.perf_counter() - t))
            tokens[d] = [o.token_ids for o in outs]
    for llm in engines.values():
        llm.close()
    print(f"smollm2-135m, 32 chat prompts x {args.max_tokens} tokens, {args.threads} threads, best of {args.rounds} "
          f"interleaved, load average {os.getloadavg()[0]:.1f}")
    print(f"float32 {best['float32']:.1f} tokens/s, bfloat16 {best['bfloat16']:.1f} tokens/s "
          f"({best['bfloat16'] / best['float32']:.2f}x)")

    folder = gguf.resolve("smollm2-135m")
    hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    hf16.generation_config.eos_token_id = None
    hf64 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval().double()   # bf16 weights, f64 math
    equal, ties, other = 0, [], []
    for i, p in enumerate(prompts):
        ref, ours = hf_generate(hf16, p, args.max_tokens), tokens["bfloat16"][i]
        if ours == ref:
            equal += 1
            continue
        k = next(k for k, (a, b) in enumerate(zip(ours, ref)) if a != b)
        gap = margin64(hf64, p + ours[:k])
        (ties if gap < args.tie else other).append((i, k, gap))
    print(f"bf16 tokens equal transformers' bf16 generate: {equal}/32; parted at a near tie (float64 gap < "
          f"{args.tie}): {len(ties)}; parted elsewhere: {len(other)}")
    for i, k, gap in ties + other:
        print(f"  prompt {i}: first difference at token {k}, float64 top-2 gap {gap:.4f}")
    same32 = sum(a == b for a, b in zip(tokens["bfloat16"], tokens["float32"]))
    print(f"bf16 tokens equal pie_lab's float32 tokens: {same32}/32 (bf16 rounding moves near ties)")
    return 0 if not other else 1


if __name__ == "__main__":
    raise SystemExit(main())
