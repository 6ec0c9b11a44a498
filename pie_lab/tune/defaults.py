"""The target engines' own defaults by GPU class (`data/target_defaults.yaml`), each with its source:
the baseline every tune result and export is measured against."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError, check_choice
from ..export.host_tier import load_defaults_file
from ..sim.hardware import load_preset

TARGETS = ("vllm", "sglang", "transformers")
KNOBS = ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "gpu_share", "policy",
         "host_tier_ratio")


@dataclass(frozen=True)
class TargetDefaults:
    """One target's defaults on one GPU class: `values` in pie_lab's terms, `sources` per value."""

    target: str
    engine: str              # the release, e.g. "vLLM 0.33"
    gpu_class: str
    gpu_class_rule: str
    values: Mapping[str, Any]
    sources: Mapping[str, str]

    def to_dict(self) -> dict:
        return {"target": self.target, "engine": self.engine, "gpu_class": self.gpu_class,
                "gpu_class_rule": self.gpu_class_rule, "values": dict(self.values)}


def gpu_class(target: str, hardware: str) -> str:
    """The target's GPU class for a hardware preset, by the rule the target's own code applies."""
    check_choice("target", target, TARGETS)
    hw = load_preset(hardware)
    classes = load_defaults_file()["targets"][target]["classes"]
    for name, rule in classes.items():
        if any(x.lower() in hw.name.lower() for x in rule.get("exclude", ())):
            continue
        if "min_gpu_memory_gib" in rule and hw.gpu_memory_gib < rule["min_gpu_memory_gib"]:
            continue
        if "max_gpu_memory_gib" in rule and hw.gpu_memory_gib >= rule["max_gpu_memory_gib"]:
            continue
        return name
    return list(classes)[-1]


def target_defaults(target: str, hardware: str) -> TargetDefaults:
    """`target`'s defaults on `hardware` (a preset name)."""
    cls = gpu_class(target, hardware)
    d = load_defaults_file()["targets"][target]
    values = {k: (v[cls] if isinstance(v, Mapping) else v) for k, v in d["values"].items()}
    missing = set(KNOBS) - set(values)
    if missing or set(d["sources"]) != set(values):
        raise ConfigError(f"data/target_defaults.yaml: target {target} needs a value and a source for each of {', '.join(KNOBS)}")
    return TargetDefaults(target, d["engine"], cls, d["classes"][cls]["when"], values, dict(d["sources"]))
