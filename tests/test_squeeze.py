import pandas as pd
import pytest

from pie_lab.bench.squeeze import cost_model_step, offered_rate, running_context, squeeze
from pie_lab.errors import ConfigError


def test_running_context_weights_by_time_in_batch():
    # a request with 100 prompt and 10 output tokens holds 105 on average, one with 0 and 30: 15;
    # the second runs three times as long, so it counts three times as much
    assert running_context([100, 0], [10, 30]) == pytest.approx((10 * 105 + 30 * 15) / 40)


def test_all_at_once_wants_the_whole_batch():
    s = squeeze([100] * 50, [20] * 50, None, gpu_blocks=100, block_size=16, max_num_seqs=32)
    assert s.in_flight == 32 and s.running_context == 110
    assert s.value == pytest.approx(32 * 110 / 1600)
    few = squeeze([100] * 5, [20] * 5, None, gpu_blocks=100, block_size=16, max_num_seqs=32)
    assert few.in_flight == 5


def test_rate_follows_littles_law_and_caps_at_max_num_seqs():
    step = lambda batch, ctx: 0.01                          # noqa: E731
    s = squeeze([10] * 100, [50] * 100, 20.0, gpu_blocks=10, block_size=16, max_num_seqs=64, step_s=step)
    assert s.in_flight == pytest.approx(20.0 * 50 * 0.01)     # 10 requests in flight
    busy = squeeze([10] * 100, [50] * 100, 500.0, gpu_blocks=10, block_size=16, max_num_seqs=64, step_s=step)
    assert busy.in_flight == 64
    assert "squeeze" in str(s) and f"{s.capacity_tokens:,}" in str(s)


def test_rate_with_a_step_time_that_grows_with_the_batch():
    step = lambda batch, ctx: 0.01 + 0.0001 * batch        # noqa: E731
    s = squeeze([10] * 1000, [100] * 1000, 5.0, gpu_blocks=10, block_size=16, max_num_seqs=1000, step_s=step)
    assert s.in_flight == pytest.approx(5.0 * 100 * step(round(s.in_flight), 0), rel=0.02)


def test_cost_model_step_grows_with_batch_and_context():
    step = cost_model_step("opt-30b", "GH200")
    assert 0 < step(1, 100) < step(64, 100) < step(64, 1000)


def test_bad_input_names_the_value():
    with pytest.raises(ConfigError, match="gpu_blocks"):
        squeeze([1], [1], None, gpu_blocks=0, block_size=16, max_num_seqs=1)
    with pytest.raises(ConfigError, match="step_s"):
        squeeze([1], [1], 2.0, gpu_blocks=1, block_size=16, max_num_seqs=1)


def test_offered_rate():
    assert offered_rate([0.0, 0.0, 0.0]) is None
    assert offered_rate([0.0, 1.0, 2.0, 4.0]) == pytest.approx(0.75)       # 3 gaps in 4 s


def test_every_benchmark_row_carries_the_loads_squeeze():
    from pie_lab.bench import run_benchmark
    from pie_lab.bench.squeeze import ratio_line, workload_squeeze
    from pie_lab.workloads import sharegpt_like
    work = sharegpt_like(24, seed=0, rate=50.0, vocab_size=50272, max_model_len=2048)
    opts = dict(hardware="GH200", dtype="float16", num_gpu_blocks=160, num_host_blocks=1600, max_num_seqs=16)
    res = run_benchmark("opt-1.3b", "sim", ["vllm-swap", "pie", {"policy": "flexgen", "label": "flexgen"}], work,
                        opts, progress=False)
    want = workload_squeeze(work, gpu_blocks=160, block_size=16, max_num_seqs=16,
                            step_s=cost_model_step("opt-1.3b", "GH200"))
    assert res.df["squeeze"].tolist() == pytest.approx([want.value] * 3)      # flexgen's own batch cap aside
    line = ratio_line(res.df)
    assert line.startswith(f"squeeze {want.value:.2f}") and "pie " in line and line.endswith("x vllm-swap")
    from pie_lab.workloads import Request
    small = [Request(i, (5, 6, 7, 8 + i), 4, 0.01 * i) for i in range(4)]
    cpu = run_benchmark("opt-tiny", "cpu", ["none"], small, dict(num_gpu_blocks=8), progress=False)
    assert 0 < cpu.df["squeeze"].iloc[0] < float("inf")         # the run's own median step time


def test_squeeze_chart_places_the_figures_on_the_curve():
    from pie_lab.bench.squeeze_chart import FIGURES, NOW, PAPER, THEN, current_marks, figure_marks, squeeze_chart, squeeze_curve
    curve = squeeze_curve(points=((1400, 5.0), (150, 20.0)), num_requests=12)
    assert set(curve["preset"]) == {"GH200", "H200"} and len(curve) == 4
    assert (curve.groupby("preset")["squeeze"].apply(lambda s: s.iloc[1] > s.iloc[0])).all()   # less GPU: more squeeze
    assert curve["ratio"].tolist() == pytest.approx((curve["pie_tok_s"] / curve["vllm_swap_tok_s"]).tolist())
    marks = figure_marks().set_index("label")
    assert marks.loc[PAPER.label, "squeeze"] == marks.loc[FIGURES[0].label, "squeeze"]   # the paper's set-up
    assert marks.loc["scenarios: 1.50x", "squeeze"] > 2 * marks.loc[PAPER.label, "squeeze"]
    assert (marks["kind"] != NOW).all() and (marks["kind"] == THEN).sum() == len(FIGURES)
    now = current_marks(num_requests=12)
    assert (now["kind"] == NOW).all() and len(now) == 4 and (now["squeeze"] > 0).all()
    assert all(label.endswith(f"now: {r:.2f}x") for label, r in zip(now["label"], now["ratio"]))
    both = pd.concat([marks.reset_index(), now], ignore_index=True)
    spec = squeeze_chart(curve, both).to_dict()
    assert len(spec["layer"]) == 8 and "squeeze" in spec["layer"][1]["encoding"]["x"]["title"]


def test_labels_close_together_are_moved_apart():
    from pie_lab.bench.squeeze_chart import label_rows
    marks = pd.DataFrame({"label": ["a long label", "another long one", "far away"], "ratio": [1.50, 1.49, 1.50],
                          "squeeze": [2.0, 2.05, 20.0]})
    placed = label_rows(marks, (1.0, 30.0), (0.9, 2.0), 600, 300).set_index("label")["label_y"]
    assert abs(placed["a long label"] - placed["another long one"]) >= 12 / 300 * 1.1 - 1e-9
    assert placed["far away"] == pytest.approx(1.50)
