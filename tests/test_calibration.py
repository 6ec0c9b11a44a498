"""Kernel calibration: the presets' fitted per-layer compute against measured GPU profiles."""
from dataclasses import replace

import pytest

from pie_lab.errors import ConfigError
from pie_lab.model_spec import named_spec
from pie_lab.sim import CostModel, load_preset
from pie_lab.sim.calibration import KernelFit, LayerShape, calibration_status
from pie_lab.sim.validation import error_summary, layer_linear_ms, load_profiles, validation_table


def test_held_out_models_meet_the_target_and_beat_the_roofline():
    """Models the fit never saw (Llama-3-8B on A100, phi-2 on H100): MAE <= 10%, worst <= 20%."""
    rows = validation_table("held-out", tokens=None)
    assert {r["model"] for r in rows} == {"meta-llama/Meta-Llama-3-8B", "microsoft/phi-2"}
    after, before = error_summary(rows, "after"), error_summary(rows, "before")
    assert after["mae"] <= 0.10 and after["worst"] <= 0.20
    assert before["mae"] > 2 * after["mae"]


def test_fit_set_error_matches_what_the_presets_claim():
    rows = validation_table("fit")
    for preset in ("H100-SXM", "A100-80GB"):
        claimed = load_preset(preset).calibration.error["fit"]
        got = error_summary([r for r in rows if r["preset"] == preset], "after")
        assert got["points"] == claimed["points"]
        assert got["mae"] == pytest.approx(claimed["mae"], abs=0.002)
        assert got["worst"] == pytest.approx(claimed["worst"], abs=0.002)


def test_layer_linear_ms_is_what_the_cost_model_charges():
    spec = named_spec("llama-2-7b")
    for tokens in (1, 256, 4096):
        ms = layer_linear_ms(spec, "H100-SXM", tokens)
        cm = CostModel(spec, load_preset("H100-SXM"), "float16")
        assert ms == pytest.approx((cm.linear_time(tokens) + cm.layer_overhead) * 1e3)
    measured = {p.tokens: p.total_ms for p in load_profiles("fit")
                if p.gpu == "h100" and p.model == "meta-llama/Llama-2-7b-hf"}
    for tokens in (1, 64, 256, 1024, 4096):
        assert layer_linear_ms(spec, "H100-SXM", tokens) == pytest.approx(measured[tokens], rel=0.15)
    with pytest.raises(ConfigError, match="num_tokens"):
        layer_linear_ms(spec, "H100-SXM", 0)


def test_uncalibrated_presets_and_fp32_keep_the_roofline():
    spec = named_spec("opt-13b")
    for name in ("L4", "A10G", "H100-PCIe"):
        hw = load_preset(name)
        assert hw.calibration is None and calibration_status(hw).startswith("uncalibrated")
    hw = load_preset("H100-SXM")
    assert "calibrated (measured)" in calibration_status(hw) and "held-out MAE" in calibration_status(hw)
    assert "transferred" in calibration_status(load_preset("GH200"))
    assert calibration_status(hw, "float32").startswith("uncalibrated") and "float32" in calibration_status(hw, "float32")
    plain = CostModel(spec, replace(hw, calibration=None), "float32")
    assert CostModel(spec, hw, "float32").linear_time(512) == plain.linear_time(512)
    assert CostModel(spec, hw, "float16").linear_time(512) != CostModel(spec, replace(hw, calibration=None),
                                                                          "float16").linear_time(512)


def test_fit_validation_names_the_field():
    good = load_preset("H100-SXM").calibration.to_dict()
    assert KernelFit.from_dict(good) == load_preset("H100-SXM").calibration
    with pytest.raises(ConfigError, match="status"):
        KernelFit.from_dict({**good, "status": "guessed"})
    with pytest.raises(ConfigError, match="source"):
        KernelFit.from_dict({**good, "source": " "})
    with pytest.raises(ConfigError, match="gemm_tflops"):
        KernelFit.from_dict({**good, "gemm_tflops": 0})
    with pytest.raises(ConfigError, match="attention_sources"):
        KernelFit.from_dict({**good, "attention_sources": {}})
    with pytest.raises(ConfigError, match="elementwise lacks"):
        KernelFit.from_dict({**good, "elementwise": {"add": [1.0, 0.001]}})


def test_layer_shape_drops_what_a_layer_lacks():
    opt = LayerShape.of(named_spec("opt-13b"))
    fit = load_preset("H100-SXM").calibration
    times = fit.operator_times(opt, 64)
    assert times["attn_rope"] == 0.0 and times["post_attention_layernorm"] > 0
    k, n = opt.gemm("mlp_up_proj")
    assert n == opt.intermediate            # OPT: one up projection, no gate
    llama = LayerShape.of(named_spec("llama-3.1-8b"))
    assert llama.gemm("mlp_up_proj")[1] == 2 * llama.intermediate and llama.gemm("attn_pre_proj")[1] == 4096 + 2 * 1024


def test_whatif_hbm_moves_the_calibrated_compute():
    from pie_lab.bench import WhatIfPoint
    base, faster = WhatIfPoint(), WhatIfPoint(hbm_gbps=7200.0)
    assert "what-if HBM" not in base.calibration and "what-if HBM 7,200" in faster.calibration
    spec = named_spec(base.model)
    slow_t = CostModel(spec, base.hardware(), "float16").linear_time(8)       # memory-bound: weights
    fast_t = CostModel(spec, faster.hardware(), "float16").linear_time(8)
    assert 0.45 * slow_t < fast_t < 0.75 * slow_t
