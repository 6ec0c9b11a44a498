"""`pie-lab` through `main([...])`: exit codes, messages, files written; and tuning."""
import importlib.util
import os
import json
import sys

import pandas as pd
import pytest

from pie_lab.cli import main
from pie_lab.config_io import load_run_config
from pie_lab.tune import analyse, tune_budget
from pie_lab.workloads import Request

GOLDEN = "tests/golden/configs/opt13b_pie_tuned.yaml"
SMALL = ["--set", "block_size=4", "--set", "num_gpu_blocks=32", "--set", "num_host_blocks=64", "--no-progress"]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "w.jsonl"
    with open(path, "w") as f:
        for i in range(5):
            f.write(json.dumps(Request(i, tuple(range(3 + i, 15 + i)), 16, 0.01 * i).to_dict()) + "\n")
    return str(path)


def test_help_and_usage_errors(capsys):
    assert main(["--help"]) == 0
    assert "export" in capsys.readouterr().out
    for cmd in ("run", "tune", "export", "bench", "lab"):
        assert main([cmd, "--help"]) == 0
    assert main([]) == 2
    assert main(["run", "--bogus"]) == 2
    assert main(["export", GOLDEN, "--to", "trt"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_run_writes_results(tmp_path, jsonl, capsys):
    out = tmp_path / "r.csv"
    assert main(["run", "--model", "opt-tiny", "--executor", "cpu", "--workload", jsonl, "--out", str(out)] + SMALL) == 0
    df = pd.read_csv(out)
    assert len(df) == 1 and df["requests"].iloc[0] == 5 and df["policy"].iloc[0] == "none"
    assert "tokens_per_s" in capsys.readouterr().out
    assert main(["run", "--config", GOLDEN, "--workload", jsonl, "--out", str(tmp_path / "r.json"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())[0]["policy"] == "pie"


def test_config_errors_exit_2_and_name_the_field(tmp_path, jsonl, capsys):
    assert main(["run", "--workload", jsonl, "--set", "controller.target_overhead=2"] + SMALL) == 2
    err = capsys.readouterr().err
    assert "engine.controller.target_overhead" in err and "(0.0, 1.0]" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: opt-tiny\nengine:\n  polcy: pie\n")
    assert main(["run", "--config", str(bad), "--workload", jsonl]) == 2
    assert "engine.polcy" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert main(["run", "--workload", "imdb", "--no-progress"]) == 2
    assert main(["run", "--set", "nokey"]) == 2
    assert main(["tune", "--out", str(tmp_path / "t.txt"), "--workload", jsonl]) == 2
    assert "allowed: .yaml, .yml, .json" in capsys.readouterr().err


@pytest.mark.parametrize("executor", ["cpu", "sim"])
def test_broken_checkpoint_folders_exit_2_naming_the_file(tmp_path, capsys, executor):
    from pie_lab.model_spec import named_spec
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "opt",\n')
    assert main(["run", "--model", str(broken), "--executor", executor, "--num-requests", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(broken / "config.json") in err and "not valid JSON" in err
    if executor == "cpu":                         # the sim needs only the shape
        bare = tmp_path / "bare"
        bare.mkdir()
        (bare / "config.json").write_text(json.dumps(dict(named_spec("opt-tiny").hf_config, max_position_embeddings=128)))
        assert main(["run", "--model", str(bare), "--num-requests", "2", "--no-progress"]) == 2
        assert "has no weights" in capsys.readouterr().err


def test_runtime_failures_exit_1(jsonl, capsys, monkeypatch):
    from pie_lab.core.engine import Engine

    def boom(self):
        raise RuntimeError("device lost")
    monkeypatch.setattr(Engine, "step", boom)
    assert main(["run", "--workload", jsonl, "--executor", "sim"] + SMALL) == 1
    assert "pie-lab: failed: RuntimeError: device lost" in capsys.readouterr().err


def test_export(tmp_path, capsys):
    assert main(["export", GOLDEN, "--to", "vllm"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("vllm serve facebook/opt-13b") and "no equivalent:" in out
    path = tmp_path / "t.json"
    assert main(["export", GOLDEN, "--to", "transformers", "--format", "json", "--out", str(path),
                 "--gpu-memory-gib", "80"]) == 0
    assert json.loads(path.read_text())["settings"]["continuous_batching_config"]["num_blocks"] == 1500
    assert main(["export", GOLDEN, "--to", "sglang", "--model-id", "org/model"]) == 0
    assert "--model-path org/model" in capsys.readouterr().out


def settled_budget(events: pd.DataFrame, stable: int = 3):
    """Independent reading of the controller's events: the budget of the last stretch it held."""
    budget, run = None, 0
    for old, new, count in zip(events["old_budget"], events["new_budget"], events["count"]):
        run = run + count if old == new else 0
        if run >= stable:
            budget = int(new)
    return budget


def test_tune_searches_and_exports_what_it_earned(tmp_path, jsonl, capsys):
    out, trials, report = tmp_path / "tuned.yaml", tmp_path / "trials.csv", tmp_path / "r.html"
    assert main(["tune", "--model", "opt-13b", "--set", "hardware=GH200", "--set", "dtype=float16", "--set",
                 "num_gpu_blocks=200", "--workload", jsonl, "--trials", "3", "--out", str(out), "--trials-out",
                 str(trials), "--report", str(report), "--no-progress"]) == 0
    rc = load_run_config(out)
    t = rc.provenance.tuning
    assert t["target"] == "vllm" and t["trials"] == 3 and rc.provenance.workload["num_requests"] == 5
    assert len(pd.read_csv(trials)) == 4 and "Pareto" in report.read_text()
    assert "left at default" in capsys.readouterr().out
    assert main(["export", str(out), "--to", "vllm", "--host-memory-gb", "64"]) == 0
    assert capsys.readouterr().out.startswith("tuned for vLLM")
    assert main(["tune", "--model", "opt-13b", "--out", str(out), "--slo", "ttft=soon"]) == 2
    assert "ttft" in capsys.readouterr().err


def test_tune_budget_api_and_trajectory_analysis():
    reqs = [Request(i, tuple(range(3, 15)), 64) for i in range(8)]
    res = tune_budget("opt-tiny", reqs, executor="sim", engine_options=dict(block_size=4, num_gpu_blocks=32,
                      num_host_blocks=64, controller=dict(warmup_iterations=1, window=2)), progress=False)
    assert res.budget == settled_budget(res.events) and res.converged
    ev = pd.DataFrame({"step": [3, 5, 7, 9, 11, 13], "old_budget": [0, 4, 4, 4, 4, 9], "new_budget": [4, 4, 4, 4, 9, 9]})
    t = analyse(ev, 0, 20)
    assert (t.settled_budget, t.iterations_to_converge, t.final_budget, t.changes) == (4, 4, 9, 2)
    assert not analyse(ev.iloc[:3], 0, 20).converged and analyse(ev.iloc[:0], 5, 0).final_budget == 5
    runs = pd.DataFrame({"step": [3, 5, 11], "old_budget": [0, 4, 4], "new_budget": [4, 4, 9], "count": [1, 3, 1]})
    t = analyse(runs, 0, 20)                               # three holds folded into one event
    assert (t.settled_budget, t.iterations_to_converge, t.decisions, t.changes) == (4, 4, 5, 2)


def test_bench_harness_and_sweep(tmp_path, jsonl):
    out = tmp_path / "b.csv"
    assert main(["bench", "--executor", "sim", "--workload", jsonl, "--policies", "none,pie", "--budgets", "4,8",
                 "--out", str(out), "--chart", str(tmp_path / "c.json")] + SMALL) == 0
    assert list(pd.read_csv(out)["policy"]) == ["none", "pie(4)", "pie(8)"]
    assert (tmp_path / "c.json").is_file()
    assert main(["bench", "--executor", "sim", "--workload", jsonl, "--policies", "none", "--rates", "5,50",
                 "--workers", "2", "--out", str(out)] + SMALL) == 0
    df = pd.read_csv(out)
    assert list(df["rate"]) == [5.0, 50.0] and (df["requests"] == 5).all()
    assert main(["bench", "--workload", jsonl, "--budgets", "x"] + SMALL) == 2
    assert main(["bench", "--workload", jsonl, "--out", str(tmp_path / "b.txt")] + SMALL) == 2


def test_lab_dry_run(capsys):
    assert main(["lab", "--dry-run", "--no-browser", "--port", "8899"]) == 0
    out = capsys.readouterr().out
    assert "jupyter lab" in out and "01_quickstart.ipynb" in out and "--port=8899" in out
    assert ("--allow-root" in out) == (os.geteuid() == 0)
    assert main(["lab", "--dry-run", "--", "--ServerApp.ip=0.0.0.0"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("--ServerApp.ip=0.0.0.0")
    assert main(["lab", "--voila", "--dry-run"]) == 0
    assert f"{sys.executable} -m voila" in capsys.readouterr().out
    assert main(["lab", "--notebook", "no/such.ipynb"]) == 2
    if importlib.util.find_spec("voila") is None:
        assert main(["lab", "--voila"]) == 2
        assert "pip install voila" in capsys.readouterr().err
