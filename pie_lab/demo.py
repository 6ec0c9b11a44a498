"""`python -m pie_lab.demo`: a few answers from the real SmolLM2-135M-Instruct with swapping off and on
(identical); then generate with the embedded default (opt-tiny, random weights) on the cpu executor, with and without host-memory swapping, and print a per-request table and throughput;
then two named scenarios (data/scenarios.yaml) in the sim: where the host tier pays and where it cannot."""
from __future__ import annotations

import argparse
import random
import time

from .errors import ConfigError
from .llm import LLM
from .sampling import SamplingParams

REAL_MODEL = "smollm2-135m"


def run(model: str, executor: str, num_requests: int, max_tokens: int, **options) -> tuple:
    rng = random.Random(0)
    prompts = [[rng.randrange(3, 500) for _ in range(rng.randint(8, 96))] for _ in range(num_requests)]
    llm = LLM(model, executor, **options)
    t = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
    elapsed = time.perf_counter() - t
    it = llm.engine.metrics.iterations_df()
    llm.close()
    return outs, elapsed, it


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="opt-tiny", help="named shape or checkpoint folder (default opt-tiny)")
    ap.add_argument("--executor", default="cpu", choices=["cpu", "cuda", "sim"])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--answers", type=int, default=4,
                    help=f"prompts of data/prompts.jsonl that {REAL_MODEL} answers, swapping off and on (0: skip)")
    ap.add_argument("--scenario-requests", type=int, default=48,
                    help="requests per named sim scenario in the closing comparison (0: skip it)")
    args = ap.parse_args(argv)
    answers_same = answers(args.answers) if args.answers else True
    base = dict(block_size=16, num_gpu_blocks=48, max_num_seqs=16)
    runs = {
        "none (GPU only)": dict(policy="none"),
        "pie (budget 64 blocks)": dict(policy="pie", swap_budget_blocks=64, num_host_blocks=256,
                                       link_bandwidth_gbps=5.0),
    }
    results = {}
    for label, opts in runs.items():
        outs, elapsed, it = run(args.model, args.executor, args.requests, args.max_tokens, **base, **opts)
        results[label] = outs
        tokens = sum(len(o.token_ids) for o in outs)
        print(f"\n== {label}: {args.model} on {args.executor}"
              f"{' (emulated link)' if it['emulated_link'].any() else ''} ==")
        print(f"{'req':>4} {'prompt':>6} {'out':>4} {'ttft ms':>8} {'tpot ms':>8} {'preempt':>7}  first tokens")
        for o in outs:
            m = o.metrics
            print(f"{o.request_id:>4} {len(o.prompt_token_ids):>6} {len(o.token_ids):>4} {m['ttft'] * 1e3:>8.1f} "
                  f"{m['tpot'] * 1e3:>8.2f} {m['preemptions']:>7}  {o.token_ids[:6]}")
        print(f"{tokens} tokens in {elapsed:.2f} s: {tokens / elapsed:,.0f} tokens/s, "
              f"{len(it)} iterations, mean batch {it['batch_size'].mean():.1f}, "
              f"peak host blocks {it['host_blocks_used'].max()}, stall {it['stall'].sum() * 1e3:.1f} ms")
    same = all([o.token_ids for o in outs] == [o.token_ids for o in results[next(iter(results))]]
               for outs in results.values())
    print(f"\ngreedy tokens identical with and without swapping: {same}")
    print("\nOn the cpu executor the link is emulated: its copies share the CPU with compute, so swapping "
          "costs time here; the run above shows it never changes the tokens.")
    if args.scenario_requests:
        compare_scenarios(args.scenario_requests)
    return 0 if same and answers_same else 1


def answers(num: int, max_tokens: int = 64) -> bool:
    """The real model answers `num` instruction prompts with swapping off, then with every full KV block
    in host memory; prints the answers and whether they are identical."""
    from .workloads.prompts import read_prompts
    prompts = read_prompts()[:num]
    convs = [[{"role": "user", "content": p}] for p in prompts]
    runs = {"swapping off (policy none)": dict(policy="none"),
            "swapping on (policy pie, every full block in host memory)":
                dict(policy="pie", swap_budget_blocks=512, num_host_blocks=512, offload="eager",   # GPU room or not
                     link_bandwidth_gbps=5.0)}
    texts = {}
    for label, opts in runs.items():
        try:
            llm = LLM(REAL_MODEL, "cpu", block_size=16, num_gpu_blocks=256, max_num_seqs=16, **opts)
        except ConfigError as exc:
            print(f"== answers: {REAL_MODEL} is not available ({exc}); skipped ==")
            return True
        t = time.perf_counter()
        outs = llm.chat(convs, SamplingParams(max_tokens=max_tokens))
        elapsed = time.perf_counter() - t
        streamed = llm.engine.metrics.iterations_df()["streamed_blocks"].sum()
        llm.close()
        texts[label] = [o.token_ids for o in outs]
        print(f"\n== {REAL_MODEL} answers, {label}: {elapsed:.1f} s, {streamed} KV blocks streamed from the host ==")
        for p, o in zip(prompts, outs):
            print(f"> {p}\n  {o.text.strip()}")
    same = len({repr(v) for v in texts.values()}) == 1
    print(f"\nanswers identical with swapping off and on: {same}")
    return same


SCENARIOS = ("memory-bound-gh200", "memory-bound-pcie")


def compare_scenarios(num_requests: int) -> None:
    """When the host tier changes throughput and when it cannot: two named scenarios in the sim."""
    from .bench.scenarios import compare, load_scenario
    print(f"\n== when the host tier pays: named scenarios (sim executor, OPT-30B, {num_requests} requests, "
          "cost-model predictions) ==")
    for name in SCENARIOS:
        print(f"{name}: {load_scenario(name).why}")
    df = compare(list(SCENARIOS), num_requests=num_requests)
    print(df[["scenario", "policy", "tokens_per_s", "vs_vllm_swap", "preemptions", "final_swap_budget"]]
          .to_string(index=False, float_format=lambda x: f"{x:.3g}"))


if __name__ == "__main__":
    raise SystemExit(main())
