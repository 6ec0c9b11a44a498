"""The dashboard speaks: the finished-requests panel shows prompt and answer as text for the real model
(instruction workload through the chat template, ending at the end of turn), token ids otherwise."""
import pytest

pytest.importorskip("ipywidgets")

from pie_lab import ConfigError, SamplingParams, create_engine   # noqa: E402
from pie_lab.live import LiveRunner                               # noqa: E402
from pie_lab.model import gguf                                    # noqa: E402
from pie_lab.workloads.prompts import read_prompts                # noqa: E402
from widgets import Dashboard                                     # noqa: E402
from widgets.answers import AnswersPanel                          # noqa: E402
from widgets.workload import WorkloadSource, engine_capacity      # noqa: E402


def test_panel_without_tokenizer_shows_token_ids():
    eng = create_engine("opt-tiny", "cpu", num_gpu_blocks=64)
    runner = LiveRunner(eng)
    runner.start()
    runner.submit([5, 6, 7], SamplingParams(max_tokens=4, ignore_eos=True), request_id="r0")
    assert runner.wait_idle(30)
    runner.stop()
    panel = AnswersPanel()
    assert panel.update(list(runner.outputs)) and not panel.update(list(runner.outputs))
    assert panel.entries[0]["prompt"] == "3 token ids" and "r0" in panel.widget.value
    with pytest.raises(ConfigError, match="instructions.*needs a model with a tokenizer"):
        WorkloadSource("instructions", 1.0, eng.spec.vocab_size, eng.max_model_len)
    eng.close()


def test_real_model_answers_in_the_dashboard():
    try:
        gguf.REAL_MODELS["smollm2-135m"].path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    from pie_lab import load_tokenizer
    tok = load_tokenizer("smollm2-135m")
    eng = create_engine("smollm2-135m", "cpu", policy="pie", num_gpu_blocks=64, num_host_blocks=128,
                        swap_budget_blocks=32, link_bandwidth_gbps=5.0)
    source = WorkloadSource("instructions", 50.0, eng.spec.vocab_size, eng.max_model_len, limit=2,
                            capacity=engine_capacity(eng), tokenizer=tok)
    runner = LiveRunner(eng, source)
    dash = Dashboard(runner, start=False)
    assert eng.spec.name == "smollm2-135m" and dash.controls.model.value == "smollm2-135m"   # not its cache folder
    runner.start()
    assert runner.wait_idle(300)
    dash.refresh()
    runner.stop()
    prompts = set(read_prompts())
    assert len(dash.answers.entries) == 2
    for e in dash.answers.entries:
        assert e["prompt"] in prompts and e["answer"].strip()
        assert e["finish_reason"] == "stop" or e["tokens"] == 96         # ends at the end of turn, or its limit
    assert any(e["finish_reason"] == "stop" for e in dash.answers.entries)
    dash.close()
