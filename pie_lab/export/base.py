"""What every translation shares: the result type, and the sizes a target needs (model shape, KV
block bytes, GPU memory) worked out from a RunConfig."""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..config_io import RunConfig
from ..errors import check_float
from ..model_spec import DTYPE_BYTES, NAMED_SHAPES, ModelSpec, spec_from_model

# Published checkpoints for the named shapes; the tiny shapes have none.
HF_IDS = {
    "opt-125m": "facebook/opt-125m", "opt-1.3b": "facebook/opt-1.3b", "opt-6.7b": "facebook/opt-6.7b",
    "opt-13b": "facebook/opt-13b", "opt-30b": "facebook/opt-30b", "opt-66b": "facebook/opt-66b",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B", "llama-2-7b": "meta-llama/Llama-2-7b-hf",
}
# Activations, CUDA context and allocator slack that a serving engine needs beyond weights and KV
# (an estimate; the targets profile the real figure at start-up).
RUNTIME_RESERVE_GIB = 1.0
MAX_MEMORY_FRACTION = 0.95
GiB = 2**30
# The releases each translation was checked against (scripts/check_exports.py, data/export_engines.json).
ENGINE_VERSIONS = {"vllm": "vLLM 0.33.0", "sglang": "SGLang 0.5.23", "transformers": "transformers 5.24"}


@dataclass(frozen=True)
class Note:
    """One pie_lab setting and what became of it in the target."""

    setting: str          # pie_lab field, e.g. "engine.max_num_seqs"
    target: str           # the target's flag or key ("" when there is none)
    value: Any            # the value given to the target (None when nothing was set)
    why: str = ""

    def to_dict(self) -> dict:
        return {"setting": self.setting, "target": self.target, "value": self.value, "why": self.why}


@dataclass(frozen=True)
class Translation:
    """A RunConfig in another engine's terms.

    `command` is a shell command (vllm, sglang) or a Python snippet (transformers); `settings` the
    same as data. `exact`, `approximate` and `unsupported` say, setting by setting, how faithful it is;
    `engine` names the release the translation targets.
    """

    target: str
    command: str
    settings: Mapping[str, Any]
    exact: tuple[Note, ...] = ()
    approximate: tuple[Note, ...] = ()
    unsupported: tuple[Note, ...] = ()
    argv: tuple[str, ...] = field(default=())
    left_at_default: tuple[Note, ...] = ()     # a tuned export: the knobs that stay at the target's defaults
    preface: tuple[str, ...] = ()              # a tuned export: how it was tuned and the predicted gain

    @property
    def engine(self) -> str:
        return ENGINE_VERSIONS[self.target]

    def to_dict(self) -> dict:
        return {"target": self.target, "engine": self.engine, "command": self.command, "argv": list(self.argv),
                "settings": _plain(self.settings),
                "exact": [n.to_dict() for n in self.exact],
                "approximate": [n.to_dict() for n in self.approximate],
                "unsupported": [n.to_dict() for n in self.unsupported],
                **({"left_at_default": [n.to_dict() for n in self.left_at_default], "preface": list(self.preface)}
                   if self.preface else {})}

    def report(self) -> str:
        lines = [*self.preface, *([""] if self.preface else []), self.command, "", f"for {self.engine}", ""]
        kinds = (("exact", self.exact), ("approximate", self.approximate), ("no equivalent", self.unsupported))
        if self.preface:
            kinds = (("tuned, earned", self.exact), ("tuned, host tier", self.approximate),
                     ("left at the target's default", self.left_at_default))
        for title, notes in kinds:
            lines.append(f"{title}:")
            for n in notes:
                target = f" -> {n.target}" if n.target else ""
                value = f" = {n.value}" if n.value is not None else ""
                lines.append(f"  {n.setting}{target}{value}" + (f"  ({n.why})" if n.why else ""))
            if not notes:
                lines.append("  (none)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


class Notes:
    """Collects the three lists while a translation is built."""

    def __init__(self):
        self.exact: list[Note] = []
        self.approximate: list[Note] = []
        self.unsupported: list[Note] = []

    def add(self, kind: str, setting: str, target: str = "", value: Any = None, why: str = "") -> None:
        getattr(self, kind).append(Note(setting, target, value, why))


@dataclass(frozen=True)
class Sizes:
    spec: ModelSpec
    model_id: str
    block_bytes: int              # one KV block, all layers
    weight_bytes: int
    gpu_blocks: int | None        # None: pie_lab would derive it from the executor at run time
    gpu_memory_bytes: int | None

    def gib(self, blocks: int) -> float:
        return blocks * self.block_bytes / GiB

    def memory_fraction(self) -> float | None:
        """Share of GPU memory for weights + the GPU KV pool + a runtime reserve."""
        if self.gpu_blocks is None or self.gpu_memory_bytes is None:
            return None
        need = self.weight_bytes + self.gpu_blocks * self.block_bytes + RUNTIME_RESERVE_GIB * GiB
        return need / self.gpu_memory_bytes


def sizes(rc: RunConfig, gpu_memory_gib: float | None = None, model_id: str | None = None) -> Sizes:
    e = rc.engine
    spec = spec_from_model(rc.model)
    block = spec.kv_block_bytes(e.block_size, e.dtype)
    gpu = e.num_gpu_blocks
    if gpu is None and e.gpu_kv_limit_gb is not None:
        gpu = int(e.gpu_kv_limit_gb * GiB // block)
    if gpu_memory_gib is not None:
        mem = int(check_float("gpu_memory_gib", gpu_memory_gib, 0.0, 1e5, lo_open=True) * GiB)
    else:
        mem = _preset_memory(e.hardware)
    return Sizes(spec, model_id or HF_IDS.get(rc.model, rc.model), block,
                 spec.num_params() * DTYPE_BYTES[e.dtype], gpu, mem)


def _preset_memory(hardware: str) -> int | None:
    try:
        from ..sim.hardware import load_preset
    except ImportError:
        return None
    return load_preset(hardware).gpu_memory_bytes


def model_notes(rc: RunConfig, s: Sizes, notes: Notes, target_key: str) -> None:
    if s.model_id == rc.model and rc.model in NAMED_SHAPES:
        notes.add("unsupported", "model", target_key, rc.model,
                  f"{rc.model!r} is a random-weight test shape with no published checkpoint; pass model_id")
    else:
        notes.add("exact", "model", target_key, s.model_id)


def memory_notes(s: Sizes, notes: Notes, flag: str, what: str) -> float | None:
    """The target's memory fraction for weights + KV, or None (left at its default) with the reason noted."""
    frac = s.memory_fraction()
    if frac is None:
        why = ("pie_lab sizes the GPU pool from the executor at run time (no num_gpu_blocks or gpu_kv_limit_gb)"
               if s.gpu_blocks is None else "the GPU's memory is unknown: pass gpu_memory_gib")
        notes.add("approximate", "engine.num_gpu_blocks", flag, None, f"left at the target's default; {why}")
        return None
    value = round(min(frac, MAX_MEMORY_FRACTION), 4)
    why = (f"({s.weight_bytes / GiB:.3g} GiB weights + {s.gib(s.gpu_blocks):.3g} GiB KV + "
           f"{RUNTIME_RESERVE_GIB:g} GiB runtime reserve) / {s.gpu_memory_bytes / GiB:.3g} GiB; {what}")
    if frac > MAX_MEMORY_FRACTION:
        why += f"; capped at {MAX_MEMORY_FRACTION}: the pool does not fit this GPU"
    notes.add("approximate", "engine.num_gpu_blocks", flag, value, why)
    return value


def common_notes(rc: RunConfig, notes: Notes) -> None:
    e = rc.engine
    notes.add("unsupported", "engine.prefetch_depth", "", e.prefetch_depth,
              "no target streams host-resident KV into the GPU layer by layer during the forward pass")
    if e.budgeted or e.controller.enabled:
        notes.add("unsupported", "engine.controller", "", e.controller.enabled,
                  "no adaptive budget: the target's host tier is fixed at start, sized from the run's host "
                  f"pool (the current budget is {e.swap_budget_blocks} blocks)")
    if e.policy == "hybrid":
        notes.add("unsupported", "engine.policy", "", "hybrid",
                  "no target attends over host-resident KV on the host CPU and merges the partial results "
                  "(NEO and FastDecode do; they are research systems, not these servers)")
        notes.add("unsupported", "engine.host_compute_blocks", "", e.host_compute_blocks,
                  "no host-computed share of running requests' KV")
    if e.policy == "flexgen":
        notes.add("unsupported", "engine.flexgen_fraction", "", e.flexgen_fraction,
                  "no static KV fraction on the host (weight offloading is a different thing)")
    if e.link_bandwidth_gbps is not None:
        notes.add("unsupported", "engine.link_bandwidth_gbps", "", e.link_bandwidth_gbps,
                  "an emulated or modelled link; a real server uses the real one")


def shell(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def sig(x: float, digits: int = 4) -> float:
    """Round to `digits` significant digits, keeping tiny sizes non-zero."""
    if x == 0:
        return 0.0
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    return obj
