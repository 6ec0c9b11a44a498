"""pie_lab.tune: the targets' defaults as the baseline, the search (reproducible, never below the
defaults), what the export earns, and the report. Small workloads and a few trials keep it fast."""
import pandas as pd
import pytest

from pie_lab import ConfigError
from pie_lab.config_io import load_run_config
from pie_lab.export import export
from pie_lab.export.engine_snapshot import check_export, load_snapshot
from pie_lab.model_spec import named_spec
from pie_lab.tune import SLO, TARGETS, target_defaults, tune
from pie_lab.tune.defaults import KNOBS
from pie_lab.tune.report import pareto, write_report
from pie_lab.workloads import Request

SETUP = dict(hardware="GH200", dtype="float16", num_gpu_blocks=60)


def squeezed():
    """48 requests of 128 + 256 tokens every 10 ms into a 960-token GPU pool: memory-bound."""
    return [Request(i, tuple(range(3, 131)), 256, 0.01 * i) for i in range(48)]


@pytest.fixture(scope="module")
def tuned():
    return tune("opt-13b", squeezed(), trials=6, batch=3, seed=3, progress=False, **SETUP)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("hardware", ["GH200", "A100-80GB", "L4"])
def test_every_default_has_a_value_and_a_source(target, hardware):
    d = target_defaults(target, hardware)
    assert set(d.values) == set(KNOBS) == set(d.sources)
    assert all(len(d.sources[k]) > 20 for k in KNOBS) and d.gpu_class_rule


def test_vllm_defaults_follow_its_gpu_rule():
    large, a100 = target_defaults("vllm", "GH200"), target_defaults("vllm", "A100-80GB")
    assert (large.values["max_num_seqs"], large.values["max_num_batched_tokens"]) == (1024, 8192)
    assert (a100.values["max_num_seqs"], a100.values["max_num_batched_tokens"]) == (256, 2048)   # 80 GB, but an A100
    assert large.values["chunked_prefill"] and large.values["policy"] == "recompute"
    assert target_defaults("sglang", "L4").values["max_num_batched_tokens"] < \
        target_defaults("sglang", "H200").values["max_num_batched_tokens"]


def test_the_baseline_config_is_the_target_at_its_defaults_on_the_setup():
    from pie_lab import EngineConfig
    from pie_lab.tune import baseline_config
    c = baseline_config("opt-13b", "vllm", EngineConfig(**SETUP))
    assert (c.max_num_seqs, c.max_num_batched_tokens, c.chunked_prefill, c.policy) == (1024, 8192, True, "recompute")
    assert c.num_gpu_blocks == 60 and c.num_host_blocks == 0          # the setup's pool at the default share
    assert baseline_config("opt-13b", "transformers", EngineConfig(**SETUP)).block_size == 256


def test_slo_parsing_and_errors():
    slo = SLO.parse("ttft_p99=2s,tpot=100ms")
    assert slo.deadlines == {"ttft": 2.0, "tpot": pytest.approx(0.1)} and slo.percentiles["ttft"] == "p99"
    df = pd.DataFrame({"ttft": [1.0, 3.0, 1.0], "tpot": [0.05, 0.05, 0.2]})
    assert slo.met(df).tolist() == [True, False, False]
    for bad, msg in [("latency=2s", "ttft, tpot, e2e"), ("ttft=soon", "duration"), ("ttft=-1s", "ttft"),
                     ("ttft", "KEY=SECONDS")]:
        with pytest.raises(ConfigError, match=msg):
            SLO.parse(bad)


def test_the_baseline_is_trial_zero_and_the_best_is_never_below_it(tuned):
    df = tuned.table()
    base = df.iloc[0]
    assert base["baseline"] and base["policy"] == "recompute" and base["max_num_seqs"] == 1024
    assert len(df) == 7 and tuned.goodput == df["goodput"].max() >= base["goodput"]
    assert tuned.baseline_goodput == base["goodput"]


def test_the_search_is_reproducible_from_its_seed(tuned):
    again = tune("opt-13b", squeezed(), trials=6, batch=3, seed=3, progress=False, **SETUP)
    cols = ["policy", "max_num_seqs", "block_size", "gpu_share", "host_tier_ratio", "prefetch_depth", "goodput"]
    pd.testing.assert_frame_equal(tuned.table()[cols], again.table()[cols])
    assert again.export == tuned.export


def test_each_exported_knob_beats_its_default_by_the_margin(tuned):
    e = tuned.export
    margin = tuned.tuning["margin"]
    for knob, ev in e["earned"].items():
        assert ev["goodput_with"] >= (1 + margin) * ev["goodput_without"] and ev["value"] != ev["default"]
    assert set(e["earned"]) | set(e["left_at_default"]) == {"max_num_seqs", "max_num_batched_tokens", "chunked_prefill",
                                                            "block_size", "gpu_share", "host_tier"}
    if e["earned"]:
        assert e["goodput"] >= (1 + margin) * e["baseline_goodput"]
    else:                                   # the export's point (and its blocks) is the defaults' when nothing is earned
        assert e["point"] == tuned.tuning["defaults"] and e["goodput"] == e["baseline_goodput"]
    tr = export(tuned.run_config, "vllm")
    assert tr.argv[:3] == ("vllm", "serve", "facebook/opt-13b")
    assert not check_export(tr, load_snapshot(), named_spec("opt-13b").max_position_embeddings)
    flags = {a for a in tr.argv if a.startswith("--")}
    assert flags <= {"--max-num-seqs", "--max-num-batched-tokens", "--disable-chunked-prefill", "--max-model-len",
                     "--block-size", "--gpu-memory-utilization", "--kv-offloading-size", "--kv-offloading-backend"}
    assert len(tr.exact) + len(tr.approximate) == len(e["earned"])
    assert {n.setting for n in tr.left_at_default} == {f"tuned.{k}" for k in e["left_at_default"]}


def test_nothing_beats_the_defaults_so_only_the_model_is_exported():
    light = [Request(i, tuple(range(3, 35)), 32, 0.5 * i) for i in range(6)]      # no pressure, all meet the SLO
    res = tune("opt-13b", light, trials=4, progress=False, hardware="H200", dtype="float16", num_gpu_blocks=400)
    assert res.export["earned"] == {} and "the defaults stay" in res.export["reason"]
    assert res.export["point"] == res.tuning["defaults"]
    tr = export(res.run_config, "vllm")
    assert tr.argv == ("vllm", "serve", "facebook/opt-13b") and "1.00x" in tr.report()


def test_the_tuned_yaml_records_how_it_was_found(tuned, tmp_path):
    path = tuned.save(tmp_path / "t.yaml", tmp_path / "trials.csv")
    rc = load_run_config(path)
    t = rc.provenance.tuning
    assert t["slo"] == "ttft_p99=2s,tpot_p99=0.1s" and t["trials"] == 6 and t["seed"] == 3
    assert set(t["search_space"]) >= {"max_num_seqs", "policy", "host_tier_ratio", "prefetch_depth", "gpu_share"}
    assert t["calibration"].startswith("calibrated") and "held-out MAE" in t["calibration"] and rc.provenance.workload["num_requests"] == 48
    assert rc.engine.policy == t["best"]["point"]["policy"] and len(pd.read_csv(tmp_path / "trials.csv")) == 7
    assert export(rc, "vllm").to_dict() == export(tuned.run_config, "vllm").to_dict()
    assert export(rc, "sglang").preface == ()         # tuned against vLLM: SGLang gets a plain translation


def test_report_draws_trials_front_and_importance(tuned, tmp_path):
    page = write_report(tuned, tmp_path / "r.html").read_text()
    assert "Pareto front" in page and "which knobs mattered" in page and "left at default" in page
    df = pd.DataFrame({"ttft_p99_s": [1, 2, 3, 0.5], "goodput": [5, 6, 4, 1]})
    assert pareto(df)[["ttft_p99_s", "goodput"]].values.tolist() == [[0.5, 1], [1, 5], [2, 6]]


def test_bad_arguments_name_the_value():
    with pytest.raises(ConfigError, match="target"):
        tune("opt-13b", squeezed(), target="trt", trials=1, progress=False, **SETUP)
    with pytest.raises(ConfigError, match="policies"):
        tune("opt-13b", squeezed(), target="sglang", policies=("vllm-swap",), trials=1, progress=False, **SETUP)


def test_tuning_provenance_is_plain_data(tuned):
    from pie_lab.config_io import parse_run_config
    d = tuned.run_config.to_dict()
    d["provenance"]["tuning"]["export"]["earned"] = {"max_num_seqs": object()}
    with pytest.raises(ConfigError, match=r"provenance\.tuning\.export\.earned\.max_num_seqs"):
        parse_run_config(d)


def test_throughput_objective_scores_every_finished_request():
    res = tune("opt-13b", squeezed(), objective="throughput", trials=2, progress=False, **SETUP)
    df = res.table()
    assert (df["goodput"] == df["throughput"]).all() and (df["slo_met"] < 1).any()
    assert res.tuning["objective"] == "throughput"


def test_a_knob_left_because_the_whole_export_fell_short_says_it_won_alone():
    from pie_lab.export.tuned import _left_why
    alone = {"value": 0.9, "tuned": 0.95, "goodput_with": 1.936, "goodput_without": 1.795}     # 1.08x alone
    assert "by the margin alone" in _left_why(alone, 0.05)
    assert _left_why(alone, 0.10).endswith("not by the margin")
    assert _left_why({"value": 16}, 0.05) == "the search's best point uses the default"
