"""Each of pie_lab's CPU kernels measured on its own (issue 22): one engine, the kernels switched on one
after another (`cpu_kernels.disabled`), variants interleaved round by round, best of --rounds.

    python benchmarks/cpu_kernels_ab.py [--max-tokens 256] [--threads 2] [--rounds 3] [--policy none]

SmolLM2-135M, the 32 chat prompts of data/prompts.jsonl, greedy, ignore_eos. Per variant: tokens/s (wall),
process CPU seconds per run, and whether its tokens equal the all-torch variant's. Not part of CI.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch                                                   # noqa: E402

from pie_lab import LLM, SamplingParams                        # noqa: E402
from pie_lab.model import cpu_kernels                          # noqa: E402

VARIANTS = ("torch", "+attention", "+rope_write_kv", "+rms_norm", "+silu_mul")


def off_for(variant: str) -> tuple[str, ...]:
    """Ops still on torch in a variant: each variant switches one more kernel on, in OPS order."""
    on = VARIANTS.index(variant)
    return cpu_kernels.OPS[on:]


def main(argv=None) -> int:
    from cpu_vs_transformers import make_prompts
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--policy", default="none", choices=["none", "pie"])
    args = ap.parse_args(argv)
    opts = dict(policy=args.policy, block_size=32, max_num_seqs=32, max_num_batched_tokens=8192)
    if args.policy == "pie":
        opts.update(num_gpu_blocks=48, num_host_blocks=256, swap_budget_blocks=128)
    llm = LLM(args.model, "cpu", **opts)
    if not cpu_kernels.load():
        print(f"CPU kernels unavailable: {cpu_kernels.status()}")
        return 1
    torch.set_num_threads(args.threads)
    prompts = make_prompts(llm, 32)
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2))
    best = {v: (0.0, float("inf")) for v in VARIANTS}
    tokens = {}
    for _ in range(args.rounds):
        for v in VARIANTS:
            off = off_for(v)
            with cpu_kernels.disabled(*off) if off else nullcontext():
                c0, t0 = time.process_time(), time.perf_counter()
                outs = llm.generate(prompts, sp)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            tokens[v] = [o.token_ids for o in outs]
            rate = sum(len(t) for t in tokens[v]) / wall
            best[v] = (max(best[v][0], rate), min(best[v][1], cpu))
    llm.close()
    load = os.getloadavg()[0]
    print(f"{args.model}, policy {args.policy}, 32 prompts x {args.max_tokens} tokens, {args.threads} threads, "
          f"best of {args.rounds} interleaved, load average {load:.1f}")
    print("| variant | tokens/s | x torch | CPU s per run | tokens equal to torch's |")
    print("|---|---|---|---|---|")
    base = best["torch"][0]
    for v in VARIANTS:
        same = sum(a == b for a, b in zip(tokens[v], tokens["torch"]))
        print(f"| {v} | {best[v][0]:.1f} | {best[v][0] / base:.2f} | {best[v][1]:.2f} | {same}/{len(prompts)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
