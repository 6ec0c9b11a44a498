"""CPU: pie_lab vs transformers on the same model and prompts (tokens/s and ratios), same thread count.

    python benchmarks/cpu_vs_transformers.py [--model smollm2-135m] [--requests 32] [--max-tokens 64]

Default: the real SmolLM2-135M-Instruct, the 32 chat prompts of data/prompts.jsonl, 64 new tokens each
(greedy, past the end of turn). A named shape (e.g. --model opt-tiny) uses random prompt ids instead.
Compared: pie_lab's continuous batching on its cpu executor (policy none), transformers' `generate` on
the whole batch at once (left padding), and transformers' continuous-batching `generate_batch`.
Every engine runs with torch's thread count set to --threads (default: all cores).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import torch

from pie_lab import LLM, SamplingParams

PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts.jsonl"


def make_prompts(llm: LLM, n: int) -> list[list[int]]:
    if llm.tokenizer is None:
        rng = random.Random(0)
        return [[rng.randrange(3, 500) for _ in range(rng.randint(8, 128))] for _ in range(n)]
    texts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines()]
    texts = (texts * (n // len(texts) + 1))[:n]
    tok = llm.tokenizer
    return [tok.encode(tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                               add_generation_prompt=True), add_special_tokens=False) for t in texts]


def reference_model(llm: LLM, model: str):
    from pie_lab.model import gguf
    from pie_lab.model.loader import build_hf_model
    if llm.tokenizer is None:
        return build_hf_model(model, seed=0)
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(gguf.resolve(model), dtype=torch.float32).eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-generate-batch", action="store_true", help="leave out transformers' generate_batch")
    args = ap.parse_args(argv)
    n, new = args.requests, args.max_tokens

    llm = LLM(args.model, "cpu", policy="none", block_size=16, max_num_seqs=n, num_gpu_blocks=64 * n,
              max_num_batched_tokens=8192)
    torch.set_num_threads(args.threads)
    prompts = make_prompts(llm, n)
    sp = SamplingParams(max_tokens=new, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(max_tokens=2))
    hf = reference_model(llm, args.model)
    hf.generation_config.eos_token_id = None           # plain greedy for exactly max_tokens, like ignore_eos
    pad = hf.config.pad_token_id if hf.config.pad_token_id is not None else 0
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def padded():
        gen = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=pad)
        return [gen[i, width:].tolist() for i in range(n)]

    def batch():
        from transformers import GenerationConfig
        cfg = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=pad)
        res = hf.generate_batch(inputs=prompts, generation_config=cfg)
        return [list(r.generated_tokens) for r in
                sorted(res.values(), key=lambda r: int(str(r.request_id).rsplit("_", 1)[-1]))]

    engines = {"pie_lab (cpu executor, policy none)": lambda: [o.token_ids for o in llm.generate(prompts, sp)],
               "transformers generate (padded batch)": padded}
    if not args.skip_generate_batch:
        engines["transformers generate_batch"] = batch
    rows, outs = {name: float("inf") for name in engines}, {}
    with torch.inference_mode():
        for _ in range(args.repeats):                   # interleaved, so a load change hits every engine
            for name, run in engines.items():
                t = time.perf_counter()
                outs[name] = run()
                rows[name] = min(rows[name], time.perf_counter() - t)
    llm.close()
    ours = outs["pie_lab (cpu executor, policy none)"]
    agree = {name: sum(a == b for a, b in zip(ours, o)) for name, o in outs.items()}

    tokens = n * new
    print(f"model {args.model}, {n} prompts ({min(map(len, prompts))}-{width} tokens), {new} new tokens each, "
          f"torch threads {torch.get_num_threads()} for every engine, best of {args.repeats} interleaved runs")
    print(f"{'engine':<40}{'seconds':>9}{'tokens/s':>10}{'pie_lab x':>11}{'agree':>8}")
    ref = rows["pie_lab (cpu executor, policy none)"]
    for name, sec in rows.items():
        print(f"{name:<40}{sec:>9.2f}{tokens / sec:>10.1f}{sec / ref:>10.2f}x{agree.get(name, n):>5}/{n}")
    print("pie_lab x: pie_lab's speed relative to that engine (> 1: pie_lab faster). agree: requests whose "
          "greedy tokens equal pie_lab's (padding can flip float32 near ties)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
