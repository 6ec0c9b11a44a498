"""Parsing of the log that benchmarks/vllm_cpu_worker.py leaves: vLLM's own log lines (one
"Iteration(i): ..." line per engine step with `enable_logging_iteration_details`, a
"Preemptions: n" field in each stats interval's line) and the worker's VS_VLLM_READY /
VS_VLLM_RESULT lines, cut into runs: the lines up to and including a RESULT are that run's.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

ITERATION = re.compile(r"Iteration\((\d+)\): (\d+) context requests, (\d+) context tokens, "
                       r"(\d+) generation requests, (\d+) generation tokens")
PREEMPTIONS = re.compile(r"Preemptions: (\d+)")


@dataclass
class VllmRun:
    """One `generate` of every prompt: per engine step the batch (requests scheduled) and its
    prefill tokens, the preemptions vLLM's stats intervals logged, and the worker's result."""

    batch_sizes: list[int] = field(default_factory=list)
    prefill_tokens: list[int] = field(default_factory=list)
    logged_preemptions: int = 0
    result: dict | None = None

    @property
    def preemptions(self) -> int:
        """vLLM's preemption counter (its Prometheus metric) when the worker read it, else the log's sum."""
        if self.result is not None and self.result.get("preemptions") is not None:
            return int(self.result["preemptions"])
        return self.logged_preemptions


@dataclass
class VllmLog:
    ready: dict | None
    runs: list[VllmRun]


def parse_vllm_log(text: str) -> VllmLog:
    ready, runs, cur = None, [], VllmRun()
    for line in text.splitlines():
        if line.startswith("VS_VLLM_READY "):
            ready = json.loads(line.split(" ", 1)[1])
            cur = VllmRun()                        # the warm-up request's steps are not a run's
            continue
        if line.startswith("VS_VLLM_RESULT "):
            cur.result = json.loads(line.split(" ", 1)[1])
            runs.append(cur)
            cur = VllmRun()
            continue
        m = ITERATION.search(line)
        if m:
            ctx_reqs, ctx_tokens, gen_reqs = int(m[2]), int(m[3]), int(m[4])
            cur.batch_sizes.append(ctx_reqs + gen_reqs)
            cur.prefill_tokens.append(ctx_tokens)
        p = PREEMPTIONS.search(line)
        if p:
            cur.logged_preemptions += int(p[1])
    return VllmLog(ready, runs)
