"""Where a cpu-executor decode step's time goes (issue 22): linears, attention gather, SDPA, the rest of
the layer's tensor ops, sampling (LM head and argmax), and the Python around them; with a host tier,
the link's copy CPU time.

    python benchmarks/cpu_profile.py [--max-tokens 64] [--policy none] [--threads 2]

SmolLM2-135M, the 32 chat prompts of data/prompts.jsonl, greedy. torch's profiler times every aten
op of the run (prefill included); each op is put in one bucket by name, its self CPU time counted
once. "python + rest" is the wall time not inside any timed op.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch                                                   # noqa: E402

from pie_lab import LLM, SamplingParams                        # noqa: E402

BUCKETS = (                       # first match wins, on the op's name
    ("linears", ("addmm", "aten::mm", "aten::matmul", "aten::linear", "mkldnn", "onednn", "aten::bmm")),
    ("attention gather", ("aten::index", "index_select", "index_copy", "aten::clamp", "aten::nonzero")),
    ("sdpa", ("scaled_dot_product", "_flash_attention", "sdpa", "_efficient_attention")),
    ("paged decode attention (kernel)", ("pie_lab::paged_decode_attention",)),
    ("rope + kv write (kernel)", ("pie_lab::rope_write_kv",)),
    ("sampling", ("argmax", "aten::item", "_local_scalar_dense")),
    ("kv write", ("index_put",)),
)


def bucket(name: str) -> str:
    for label, keys in BUCKETS:
        if any(k in name for k in keys):
            return label
    return "other tensor ops"


def main(argv=None) -> int:
    from cpu_vs_transformers import make_prompts
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--policy", default="none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget", type=int, default=128, help="pie's swap budget (blocks)")
    ap.add_argument("--gpu-blocks", type=int, default=0, help="0: room for every request")
    args = ap.parse_args(argv)
    opts = dict(policy=args.policy, block_size=32, max_num_seqs=32, max_num_batched_tokens=8192,
                num_gpu_blocks=args.gpu_blocks or 32 * 16)
    if args.policy == "pie":
        opts.update(num_host_blocks=256, swap_budget_blocks=args.budget)
    llm = LLM(args.model, "cpu", **opts)
    torch.set_num_threads(args.threads)
    prompts = make_prompts(llm, 32)
    sp = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        llm.generate(prompts, sp)
        wall = time.perf_counter() - t
    it = llm.engine.metrics.iterations_df()
    link_cpu = float(it["link_cpu_time"].sum()) if "link_cpu_time" in it else 0.0
    llm.close()
    sums: dict[str, float] = defaultdict(float)
    for ev in prof.key_averages():
        sums[bucket(ev.key)] += ev.self_cpu_time_total / 1e6
    timed = sum(sums.values())
    sums["python + rest (wall - ops)"] = max(0.0, wall - timed)
    steps = len(it)
    print(f"{args.model}, policy {args.policy}, 32 requests x {args.max_tokens} tokens, {args.threads} threads: "
          f"{wall:.2f} s wall under the profiler, {steps} steps, {32 * args.max_tokens / wall:.0f} tokens/s")
    print(f"{'bucket':<30}{'seconds':>9}{'share':>8}{'ms/step':>9}")
    for name, sec in sorted(sums.items(), key=lambda kv: -kv[1]):
        print(f"{name:<30}{sec:>9.3f}{sec / wall:>8.1%}{1000 * sec / steps:>9.2f}")
    if link_cpu:
        print(f"{'link copies (CPU, threads)':<30}{link_cpu:>9.3f}{link_cpu / wall:>8.1%}"
              f"{1000 * link_cpu / steps:>9.2f}")
    print("top ops:")
    for ev in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]:
        print(f"  {ev.key:<44}{ev.self_cpu_time_total / 1e6:>8.3f} s {ev.count:>8} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
