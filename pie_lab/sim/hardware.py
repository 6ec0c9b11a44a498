"""Hardware presets: the figures the cost model runs on, each with its source.

Presets live in `data/hardware_presets.yaml` at the repository root. Units are the ones people
read on datasheets: TFLOP/s (dense), GB/s (1e9 bytes/s), GiB, microseconds.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError, check_float
from .calibration import KernelFit

def _data_dir() -> Path:
    """data/ of a checkout (or editable install), else the copy a wheel installs under share/pie_lab."""
    checkout = Path(__file__).resolve().parents[2] / "data"
    if (checkout / "hardware_presets.yaml").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "pie_lab"


DATA_DIR = _data_dir()
PRESETS_PATH = DATA_DIR / "hardware_presets.yaml"

# Upper bounds only catch unit mistakes (bytes/s typed where GB/s is expected).
_FIGURES: dict[str, float] = {
    "tflops_16bit_peak": 1e5, "tflops_16bit": 1e5,
    "tflops_fp32_peak": 1e5, "tflops_fp32": 1e5,
    "hbm_gbps_peak": 1e5, "hbm_gbps": 1e5,
    "gpu_memory_gib": 1e5,
    "h2d_gbps": 1e5, "d2h_gbps": 1e5,
    "link_latency_us": 1e6, "layer_overhead_us": 1e6, "step_overhead_us": 1e7,
    "host_memory_gbps": 1e5,
    "host_cores": 1e4, "host_core_attention_gbps": 1e3,
}
_MAY_BE_ZERO = ("link_latency_us", "layer_overhead_us", "step_overhead_us")


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    tflops_16bit_peak: float      # fp16/bf16 tensor-core matmul, dense
    tflops_16bit: float           # achievable
    tflops_fp32_peak: float       # fp32 matmul without TF32
    tflops_fp32: float
    hbm_gbps_peak: float          # device memory bandwidth
    hbm_gbps: float               # achievable
    gpu_memory_gib: float
    h2d_gbps: float               # pinned host-to-device copies
    d2h_gbps: float
    link_latency_us: float        # fixed cost of one copy call
    layer_overhead_us: float      # fixed cost of one decoder layer (kernel launches, gaps)
    step_overhead_us: float       # fixed host-side cost of one engine step
    host_memory_gbps: float
    host_cores: float             # CPU cores (threads) the host's attention may use (policy hybrid)
    host_core_attention_gbps: float   # KV bytes/s one core's decode attention sustains over host memory
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    calibration: KernelFit | None = None   # per-layer compute fitted to measured kernels (sim/calibration.py)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"hardware name must be a non-empty string, got {self.name!r}")
        for f, hi in _FIGURES.items():
            object.__setattr__(self, f, check_float(f"{self.name}.{f}", getattr(self, f), 0.0, hi,
                                                    lo_open=f not in _MAY_BE_ZERO))
        for achieved, peak in (("tflops_16bit", "tflops_16bit_peak"), ("tflops_fp32", "tflops_fp32_peak"),
                               ("hbm_gbps", "hbm_gbps_peak")):
            if getattr(self, achieved) > getattr(self, peak):
                raise ConfigError(f"{self.name}.{achieved}={getattr(self, achieved)} exceeds "
                                  f"{peak}={getattr(self, peak)}: achievable must be <= peak")
        if not isinstance(self.sources, Mapping):
            raise ConfigError(f"{self.name}.sources must be a mapping figure -> source text")
        missing = [f for f in _FIGURES if not str(self.sources.get(f, "")).strip()]
        if missing:
            raise ConfigError(f"hardware {self.name!r} has no source for: {', '.join(missing)}; "
                              "every figure needs a datasheet reference, a measurement or an estimate note")
        unknown = set(self.sources) - set(_FIGURES)
        if unknown:
            raise ConfigError(f"hardware {self.name!r} has sources for unknown figures: {', '.join(sorted(unknown))}")
        object.__setattr__(self, "sources", dict(self.sources))
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", KernelFit.from_dict(self.calibration))
        elif self.calibration is not None and not isinstance(self.calibration, KernelFit):
            raise ConfigError(f"{self.name}.calibration must be a calibration mapping or None")

    @classmethod
    def figure_names(cls) -> tuple[str, ...]:
        return tuple(_FIGURES)

    def matmul_flops(self, dtype: str) -> float:
        """Achievable matmul FLOP/s for a model dtype."""
        return (self.tflops_fp32 if dtype == "float32" else self.tflops_16bit) * 1e12

    @property
    def host_attention_gbps(self) -> float:
        """The host's decode-attention rate over host KV: its cores, capped by host memory bandwidth."""
        return min(self.host_cores * self.host_core_attention_gbps, self.host_memory_gbps)

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.hbm_gbps * 1e9

    @property
    def gpu_memory_bytes(self) -> int:
        return int(self.gpu_memory_gib * 2**30)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str | None = None) -> "Hardware":
        d = dict(d)
        if name is not None:
            d.setdefault("name", name)
        d.setdefault("description", "")
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ConfigError(f"hardware {d.get('name', '?')!r}: unknown field(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {', '.join(sorted(allowed))}")
        missing = allowed - set(d) - {"sources", "calibration"}
        if missing:
            raise ConfigError(f"hardware {d.get('name', '?')!r}: missing field(s) {', '.join(sorted(missing))}")
        return cls(**d)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["sources"] = dict(self.sources)
        if self.calibration is None:
            del d["calibration"]
        else:
            d["calibration"] = self.calibration.to_dict()
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Hardware":
        """One preset in a YAML file: a mapping with `name`, the figures and `sources`."""
        d = _read_yaml(Path(path))
        if "presets" in d:
            presets = d["presets"]
            if len(presets) != 1:
                raise ConfigError(f"{path} holds {len(presets)} presets; use load_preset(name, path)")
            (name, body), = presets.items()
            return cls.from_dict(body, name=name)
        return cls.from_dict(d)

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, width=120)
        if path is not None:
            Path(path).write_text(text)
        return text


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"hardware preset file {path} does not exist")
    d = yaml.safe_load(path.read_text())
    if not isinstance(d, dict):
        raise ConfigError(f"{path} must hold a YAML mapping")
    return d


def _presets(path: Path | None) -> dict[str, dict]:
    d = _read_yaml(path or PRESETS_PATH)
    presets = d.get("presets")
    if not isinstance(presets, dict):
        raise ConfigError(f"{path or PRESETS_PATH} must have a top-level 'presets' mapping")
    return presets


def list_presets(path: str | Path | None = None) -> list[str]:
    return list(_presets(Path(path) if path else None))


def load_preset(name: str, path: str | Path | None = None) -> Hardware:
    """A preset by name (case-insensitive), or a single-preset YAML file given by its path."""
    if not isinstance(name, str):
        raise ConfigError(f"hardware must be a preset name or a YAML path, got {name!r}")
    if name.endswith((".yaml", ".yml")) and path is None:
        return Hardware.from_yaml(name)
    presets = _presets(Path(path) if path else None)
    key = name if name in presets else next((k for k in presets if k.lower() == name.lower()), None)
    if key is None:
        raise ConfigError(f"unknown hardware preset {name!r}; presets: {', '.join(presets)} "
                          "(or give a preset YAML path)")
    return Hardware.from_dict(presets[key], name=key)


def resolve_hardware(hardware: "str | Hardware | None", default: str) -> Hardware:
    if isinstance(hardware, Hardware):
        return hardware
    return load_preset(default if hardware is None else hardware)
