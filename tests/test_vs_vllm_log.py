"""benchmarks/vs_vllm_log.py on a recorded vLLM 0.32 CPU log (tests/data/vllm_cpu_pressure.log: the
worker's output of one pressure run, 32 prompts x 64 tokens, 48 blocks of 32; vLLM's per-step
"Iteration" lines kept, its interval lines after the first three and the prompt's token lists cut)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_vllm_log import parse_vllm_log   # noqa: E402

LOG = (ROOT / "tests" / "data" / "vllm_cpu_pressure.log").read_text()


def test_recorded_pressure_run():
    log = parse_vllm_log(LOG)
    assert log.ready["first"] == [504]                           # the warm-up request's one token
    assert len(log.runs) == 1
    run = log.runs[0]
    steps = [l for l in LOG.splitlines() if "Iteration(" in l]
    assert len(run.batch_sizes) == len(steps) - 1                # the warm-up's step is not the run's
    assert run.batch_sizes[0] == 23 and run.prefill_tokens[0] == 919   # 23 prompts fit 48 blocks
    assert max(run.batch_sizes) == 23 and min(run.batch_sizes) < 23    # preemption shrinks the batch
    assert sum(run.prefill_tokens) > 919                          # preempted prompts are recomputed
    assert run.preemptions == 20 == run.result["preemptions"]     # vLLM's counter
    assert run.logged_preemptions == 0                            # its interval lines never showed one
    assert len(run.result["tokens"]) == 32


def test_runs_are_cut_at_results_and_the_log_sum_stands_in_for_a_missing_counter():
    text = "\n".join([
        "VS_VLLM_READY {\"startup_s\": 1.0, \"first\": [7]}",
        "x Iteration(5): 2 context requests, 40 context tokens, 1 generation requests, 1 generation tokens, y",
        "x Running: 3 reqs, Waiting: 0 reqs, Preemptions: 2 CPU KV cache usage: 50.0%",
        "VS_VLLM_RESULT {\"seconds\": 2.0, \"tokens\": [], \"preemptions\": null}",
        "x Iteration(6): 0 context requests, 0 context tokens, 4 generation requests, 4 generation tokens, y",
        "VS_VLLM_RESULT {\"seconds\": 1.5, \"tokens\": [], \"preemptions\": 1}",
    ])
    log = parse_vllm_log(text)
    assert [r.batch_sizes for r in log.runs] == [[3], [4]]
    assert [r.prefill_tokens for r in log.runs] == [[40], [0]]
    assert [r.preemptions for r in log.runs] == [2, 1]
