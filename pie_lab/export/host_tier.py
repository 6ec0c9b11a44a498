"""How big an exported host KV tier is, and why (issue 23).

The targets' host tiers hold copies of KV blocks (vLLM's CPU offloading connector, SGLang's HiCache)
or evicted requests' KV (transformers' cpu_offload_space). A tier smaller than the GPU pool churns:
it evicts what it just stored before anything reads it back (NVIDIA Dynamo's KVBM docs warn of
this), and SGLang adds no tier at all unless its host pool exceeds the device pool. So the tier is
the host pool the pie_lab run used, at least the GPU KV pool, and at most `HOST_SHARE` of the host
memory the user states (`host_memory_gb`, else the hardware preset's host in
data/target_defaults.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass

from functools import lru_cache

import yaml

from ..errors import ConfigError, check_float
from ..sim.hardware import DATA_DIR, load_preset

GiB = 2**30
HOST_SHARE = 0.5             # of the host memory, offered to the KV tier (pie_lab.tune sizes its trials so too)
DEFAULTS_PATH = DATA_DIR / "target_defaults.yaml"


@lru_cache(maxsize=None)
def load_defaults_file() -> dict:
    """data/target_defaults.yaml: the targets' defaults (pie_lab.tune.defaults) and each preset's host memory."""
    if not DEFAULTS_PATH.is_file():
        raise ConfigError(f"target defaults file {DEFAULTS_PATH} does not exist")
    return yaml.safe_load(DEFAULTS_PATH.read_text())


def host_memory_gib(hardware: str) -> tuple[float, str]:
    """Host memory a deployment on this preset has (GiB), and its source."""
    table = load_defaults_file()["host_memory_gib"]
    name = load_preset(hardware).name
    if name not in table:
        raise ConfigError(f"no host memory figure for hardware {name!r}; pass host_memory_gb "
                          f"(presets with one: {', '.join(table)})")
    return float(table[name]["value"]), str(table[name]["source"])


@dataclass(frozen=True)
class HostTier:
    blocks: int              # pie_lab blocks (of the run's block size)
    gib: float
    why: str

    def ratio(self, gpu_blocks: int) -> float:
        return self.blocks / gpu_blocks


def host_memory(hardware: str, host_memory_gb: float | None) -> tuple[float | None, str]:
    """Host memory in GiB and where the figure comes from (None: unknown)."""
    if host_memory_gb is not None:
        return check_float("host_memory_gb", host_memory_gb, 0.0, 1e6, lo_open=True), "as given (--host-memory-gb)"
    try:
        gib, source = host_memory_gib(hardware)
    except ConfigError:                # a preset file path, or no figure for this preset
        return None, "unknown for this hardware: pass --host-memory-gb"
    return gib, f"the {hardware} preset's host ({source})"


def size_tier(run_blocks: int | None, gpu_blocks: int | None, block_bytes: int, hardware: str,
              host_memory_gb: float | None = None) -> HostTier | None:
    """The exported tier from the run's host pool `run_blocks`; None when nothing fixes a size."""
    mem, mem_src = host_memory(hardware, host_memory_gb)
    cap = None if mem is None else int(HOST_SHARE * mem * GiB // block_bytes)
    base = run_blocks or 0
    parts = [f"the pie_lab run's host pool: {base} blocks ({base * block_bytes / GiB:.3g} GiB)"]
    blocks = base
    if gpu_blocks is not None and blocks < gpu_blocks:
        blocks = gpu_blocks
        parts.append(f"raised to the GPU KV pool ({gpu_blocks} blocks, {gpu_blocks * block_bytes / GiB:.3g} GiB): "
                     "a host tier smaller than the GPU pool churns, evicting what it stored before it is read back")
    if cap is not None and blocks > cap:
        blocks = cap
        parts.append(f"capped at {HOST_SHARE:.0%} of {mem:g} GiB host memory, {mem_src}"
                     + (": smaller than the GPU pool, so expect churn" if gpu_blocks and cap < gpu_blocks else ""))
    elif mem is not None:
        parts.append(f"within {HOST_SHARE:.0%} of {mem:g} GiB host memory, {mem_src}")
    else:
        parts.append(f"host memory {mem_src}")
    if blocks <= 0:
        return None
    return HostTier(blocks, blocks * block_bytes / GiB, "; ".join(parts))
