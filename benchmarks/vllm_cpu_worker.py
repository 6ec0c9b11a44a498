"""vLLM's CPU engine, driven by benchmarks/vs_vllm_cpu.py: runs inside vLLM's own venv
(scripts/setup_vllm_cpu.sh), never imports pie_lab.

    /opt/vllm-venv/bin/python benchmarks/vllm_cpu_worker.py JOB.json

JOB.json: model folder, block_size, num_blocks (the KV block budget), max_num_seqs, prompts (token ids),
max_tokens. The engine is built once (its start-up timed: `LLM(...)` to the first token of a one-token
request), then each line read from stdin ("run") runs every prompt once, greedy, and prints one line
`VS_VLLM_RESULT {json}`: seconds, token ids, vLLM's preemption counter. With the iteration details and a
short stats interval on, vLLM's own log has a line per step (batch) and "Preemptions: n" per interval;
the driver keeps that log and parses it (vs_vllm_log.py).
"""
from __future__ import annotations

import json
import sys
import time


def counter(llm, name: str) -> float:
    return sum(getattr(m, "value", 0) or 0 for m in llm.get_metrics() if m.name == name)


def main() -> int:
    job = json.loads(open(sys.argv[1]).read())
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    t0 = time.perf_counter()
    llm = LLM(model=job["model"], dtype="float32", block_size=job["block_size"],
              num_gpu_blocks_override=job["num_blocks"], max_num_seqs=job["max_num_seqs"],
              max_model_len=job["max_model_len"], max_num_batched_tokens=job["max_num_batched_tokens"],
              enforce_eager=True, enable_prefix_caching=False, seed=0, disable_log_stats=False,
              enable_logging_iteration_details=True)
    first = llm.generate([TokensPrompt(prompt_token_ids=job["prompts"][0])],
                         SamplingParams(temperature=0, max_tokens=1), use_tqdm=False)
    startup = time.perf_counter() - t0
    print("VS_VLLM_READY " + json.dumps({"startup_s": startup, "first": list(first[0].outputs[0].token_ids)}),
          flush=True)
    sp = SamplingParams(temperature=0, max_tokens=job["max_tokens"], ignore_eos=True)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in job["prompts"]]
    for line in sys.stdin:
        if line.strip() != "run":
            break
        before = counter(llm, "vllm:num_preemptions")
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        sec = time.perf_counter() - t
        print("VS_VLLM_RESULT " + json.dumps({
            "seconds": sec, "tokens": [list(o.outputs[0].token_ids) for o in outs],
            "preemptions": counter(llm, "vllm:num_preemptions") - before}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
