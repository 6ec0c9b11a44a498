"""Run configs on disk (YAML or JSON by suffix): model, executor, engine settings and, for tuned
configs, how they were found. Loading validates the whole file before anything is built, so a bad
file changes nothing; errors name the field by dotted path and the values it allows.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Mapping, get_type_hints

import yaml

from .config import EXECUTORS, EngineConfig
from .errors import ConfigError, check_choice, check_int

SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_SCALARS = (str, bool, int, float, type(None))


@dataclass(frozen=True)
class Trajectory:
    """What the adaptive controller did during a tuning run."""

    start_budget: int
    final_budget: int                    # where the run ended
    decisions: int
    changes: int                         # decisions that moved the budget
    converged: bool
    settled_budget: int | None = None    # the budget of the last stretch the controller held
    iterations_to_converge: int | None = None   # iterations until that budget was set
    iterations: int = 0

    def __post_init__(self):
        for name in ("start_budget", "final_budget", "decisions", "changes", "iterations"):
            check_int(f"trajectory.{name}", getattr(self, name), 0)
        if not isinstance(self.converged, bool):
            raise ConfigError(f"trajectory.converged must be true or false, got {self.converged!r}")
        for name in ("settled_budget", "iterations_to_converge"):
            if getattr(self, name) is not None:
                check_int(f"trajectory.{name}", getattr(self, name), 0)
        if self.converged and self.settled_budget is None:
            raise ConfigError("trajectory.settled_budget is missing: a converged trajectory needs it")


@dataclass(frozen=True)
class Provenance:
    """How a tuned config was found: the workload, the machine, what was measured, what the controller did."""

    workload: Mapping[str, Any]
    hardware: str
    executor: str
    throughput: Mapping[str, Any]        # requests_per_s, tokens_per_s
    latency: Mapping[str, Any]           # seconds: ttft/tpot/e2e at p50/p90/p99
    trajectory: Trajectory | None        # the controller's run (tune_budget); None for a search
    pie_lab_version: str
    date: str                            # ISO 8601
    notes: str = ""
    tuning: Mapping[str, Any] | None = None   # a search (pie_lab.tune): workload, SLO, space, trials, seed, evidence

    def __post_init__(self):
        if isinstance(self.date, date):             # YAML reads an unquoted 2026-11-26 as a date
            object.__setattr__(self, "date", self.date.isoformat())
        for name in ("hardware", "executor", "pie_lab_version", "date", "notes"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"provenance.{name} must be a string, got {getattr(self, name)!r}")
        check_choice("provenance.executor", self.executor, EXECUTORS)
        try:
            datetime.fromisoformat(self.date)
        except ValueError:
            raise ConfigError(f"provenance.date={self.date!r} is not a date; allowed: ISO 8601, "
                              "e.g. 2026-11-26 or 2026-11-26T10:21:15") from None
        for name in ("workload", "throughput", "latency"):
            object.__setattr__(self, name, _plain_mapping(f"provenance.{name}", getattr(self, name)))
        if isinstance(self.trajectory, Mapping):
            object.__setattr__(self, "trajectory", _build(Trajectory, self.trajectory, "provenance.trajectory"))
        if self.trajectory is not None and not isinstance(self.trajectory, Trajectory):
            raise ConfigError(f"provenance.trajectory must be a mapping or null, got {self.trajectory!r}")
        if self.tuning is not None:
            object.__setattr__(self, "tuning", _plain_tree("provenance.tuning", self.tuning))


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild an engine: `LLM.from_config(rc)` or `create_engine(rc.model, rc.executor, rc.engine)`."""

    model: str
    executor: str = "cpu"
    engine: EngineConfig = field(default_factory=EngineConfig)
    provenance: Provenance | None = None

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model must be a named shape (e.g. 'opt-tiny') or a checkpoint folder, got {self.model!r}")
        check_choice("executor", self.executor, EXECUTORS)
        if not isinstance(self.engine, EngineConfig):
            raise ConfigError(f"engine must be an EngineConfig, got {type(self.engine).__name__}")
        if self.provenance is not None and not isinstance(self.provenance, Provenance):
            raise ConfigError(f"provenance must be a Provenance or absent, got {type(self.provenance).__name__}")

    def to_dict(self) -> dict:
        d = {"model": self.model, "executor": self.executor, "engine": self.engine.to_dict()}
        if self.provenance is not None:
            d["provenance"] = _to_plain(self.provenance)
        return d

    def replace_engine(self, **changes: Any) -> "RunConfig":
        return RunConfig(self.model, self.executor, self.engine.replace(**changes), self.provenance)


def load_run_config(source: str | Path | Mapping[str, Any] | RunConfig) -> RunConfig:
    """A RunConfig from a .yaml/.yml/.json file, a mapping, or a RunConfig (returned as is)."""
    if isinstance(source, RunConfig):
        return source
    if isinstance(source, Mapping):
        return parse_run_config(source)
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"a run config is a file path, a mapping or a RunConfig, got {type(source).__name__}")
    path = Path(source)
    kind = config_format(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        data = yaml.safe_load(text) if kind == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {kind.upper()}: {exc}") from None
    try:
        return parse_run_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse_run_config(data: Any) -> RunConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a run config must be a mapping with keys model, executor, engine, provenance; "
                          f"got {type(data).__name__}")
    if "model" not in data:
        raise ConfigError("model is missing: it is required; allowed: a named shape (e.g. 'opt-tiny') "
                          "or a checkpoint folder")
    return _build(RunConfig, data, "")


def save_run_config(rc: RunConfig, path: str | Path) -> Path:
    """Write `rc` as YAML or JSON, chosen by the suffix of `path`; returns the path."""
    if not isinstance(rc, RunConfig):
        raise ConfigError(f"save_run_config needs a RunConfig, got {type(rc).__name__}")
    path = Path(path)
    kind = config_format(path)
    d = rc.to_dict()
    if kind == "yaml":
        text = ("# pie_lab run config: LLM.from_config(path) or `pie-lab run --config path`\n"
                + yaml.safe_dump(d, sort_keys=False, width=100))
    else:
        text = json.dumps(d, indent=2) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def apply_run_config(engine, source) -> dict:
    """Load a config into a running engine, as one atomic update of its live knobs.

    Everything is checked first: a different executor, or a change to a setting that cannot change
    while running (`Engine.update`'s check), raises ConfigError and the engine is left as it was.
    Returns the applied changes.
    """
    rc = load_run_config(source)
    if rc.executor != engine.executor_name:
        raise ConfigError(f"executor={rc.executor!r} differs from the running engine's "
                          f"{engine.executor_name!r}; allowed: {engine.executor_name!r} (or build a new engine)")
    current = engine.config
    changes = {f.name: getattr(rc.engine, f.name) for f in fields(EngineConfig)
               if getattr(rc.engine, f.name) != getattr(current, f.name)}
    if changes:
        engine.update(**changes)
    return changes


# -- parsing ---------------------------------------------------------------------------------------
def config_format(path: str | Path) -> str:
    """"yaml" or "json" by suffix; ConfigError naming the allowed suffixes otherwise."""
    path = Path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"config file {path} has suffix {path.suffix!r}; allowed: {', '.join(SUFFIXES)}")
    return kind


def _build(cls, data: Any, path: str):
    """Instantiate dataclass `cls` from a mapping, nested dataclasses first; errors carry the dotted path."""
    names = [f.name for f in fields(cls)]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'the run config'} must be a mapping with fields {', '.join(names)}; got {data!r}")
    unknown = [k for k in data if k not in names]
    if unknown:
        key = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"{key} is not a known field; allowed fields{' of ' + path if path else ''}: "
                          f"{', '.join(names)}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        key = f"{path}.{missing[0]}" if path else missing[0]
        raise ConfigError(f"{key} is missing: it is required; fields{' of ' + path if path else ''}: "
                          f"{', '.join(names)}")
    hints = get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = f"{path}.{name}" if path else name
        hint = _strip_optional(hints[name])
        if is_dataclass(hint) and not (value is None and hint is not hints[name]):
            value = _build(hint, value, sub)
        kwargs[name] = value
    if cls is EngineConfig and "hardware" in kwargs:
        check_hardware(f"{path}.hardware", kwargs["hardware"])
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(_qualify(str(exc), path, names)) from None


def _strip_optional(hint):
    args = [a for a in getattr(hint, "__args__", ()) if a is not type(None)]
    return args[0] if len(args) == 1 and type(None) in getattr(hint, "__args__", ()) else hint


def _qualify(msg: str, path: str, names: list[str]) -> str:
    """Prefix a constructor's message with the dotted path of the object it validated."""
    if not path:
        return msg
    last = path.rsplit(".", 1)[-1]
    if msg.startswith(last + "."):               # ControllerConfig says "controller.x"
        return f"{path.rsplit('.', 1)[0]}.{msg}" if "." in path else msg
    if any(msg.startswith(n) for n in names):
        return f"{path}.{msg}"
    return f"{path}: {msg}"


def check_hardware(where: str, name: Any) -> None:
    """A hardware preset name (checked against the presets where they are available) or a YAML path."""
    if not isinstance(name, str):
        raise ConfigError(f"{where} must be a string: a hardware preset name or a preset YAML path; got {name!r}")
    if name.endswith((".yaml", ".yml")):
        return
    try:
        from .sim.hardware import list_presets
        presets = list_presets()
    except (ImportError, ConfigError):           # presets not available here: checked when used
        return
    if name.lower() not in {p.lower() for p in presets}:
        raise ConfigError(f"{where}={name!r} is not a hardware preset; choose one of "
                          f"{', '.join(map(repr, presets))} (or a preset YAML path)")


def _plain_mapping(where: str, value: Any) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {value!r}")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ConfigError(f"{where} keys must be strings, got {k!r}")
        if isinstance(v, numbers.Real) and not isinstance(v, (bool, int, float)):
            v = float(v)                          # numpy scalars
        if isinstance(v, float) and not math.isfinite(v):
            v = None                              # NaN / inf: YAML and strict JSON disagree on them
        if not isinstance(v, _SCALARS):
            raise ConfigError(f"{where}.{k} must be a number, a string, true/false or null, got {v!r}")
        out[k] = v
    return out


def _plain_tree(where: str, value: Any) -> Any:
    """Nested mappings and lists of scalars (numpy scalars become floats); anything else is refused."""
    if isinstance(value, Mapping):
        return {str(k): _plain_tree(f"{where}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_tree(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return _plain_mapping(where, {"value": value})["value"]


def _to_plain(obj: Any) -> Any:
    if is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    return obj


__all__ = ["RunConfig", "Provenance", "Trajectory", "load_run_config", "parse_run_config", "save_run_config",
           "apply_run_config", "config_format", "check_hardware"]
