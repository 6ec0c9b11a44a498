"""pie_lab's own CPU kernels (issue 22): decode attention that reads paged K/V in place, RoPE fused with
the K/V write, RMSNorm and silu(gate) * up, each one op where torch needs several
(`csrc/`: decode_attention.cpp, cpu_kernels.cpp, common.h).

Built once per machine with torch's C++ extension JIT (a C++ compiler and ninja; 10-20 s) and cached under
torch's extensions folder, keyed by the source and the CPU's instruction set (the build uses
-march=native). `load()` builds or loads them; the cpu executor calls it at load time. Until then, where
they cannot be built, or with PIE_LAB_CPU_KERNELS=0, the model runs its plain torch code, which stays the
reference: the kernels' tests compare against it (tests/test_cpu_kernels.py).

Results: RoPE and the K/V write are bit-identical to the torch code; RMSNorm, silu and attention sum in
another order, so they differ in the last bits, as a BLAS change does (the parity tests' float64
settling of near ties covers it).
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "cpu_kernels.cpp", CSRC / "decode_attention.cpp")     # and CSRC / "common.h"
DTYPES = (torch.float32, torch.bfloat16)
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp"]
ENV_SWITCH = "PIE_LAB_CPU_KERNELS"

OPS = ("attention", "rope_write_kv", "rms_norm", "silu_mul")

_state = {"loaded": False, "error": None, "off": frozenset()}


def _build_key() -> str:
    """A short hash of the sources and of this CPU's model and flags: a build of other sources or for
    another CPU is never loaded here."""
    text = platform.machine() + "".join(p.read_text() for p in sorted(CSRC.iterdir()) if p.suffix in (".cpp", ".h"))
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        text += "".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
    except OSError:
        text += platform.processor()
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def _find_ninja() -> None:
    """pip's `ninja` wheel puts the tool beside the interpreter, which need not be on PATH (a venv's python
    run by its full path): torch's build looks for it on PATH, so add its folder there."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


def why_unavailable() -> str | None:
    """None when the kernels can be built here, else the reason."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return f"{ENV_SWITCH}=0"
    _find_ninja()
    hints = {"c++": "a C++ compiler such as g++", "ninja": "pip install ninja"}
    missing = [f"{tool} ({hint})" for tool, hint in hints.items() if shutil.which(tool) is None]
    if missing:
        return f"not on PATH: {', '.join(missing)}"
    return None


def load(verbose: bool = False) -> bool:
    """Build (first time on this machine) or load the kernels; True when they are in use. A failed
    build is logged once and leaves the torch code in use."""
    if _state["loaded"] or _state["error"]:
        return _state["loaded"]
    reason = why_unavailable()
    if reason:
        _state["error"] = reason
        log.info("pie_lab CPU kernels off: %s", reason)
        return False
    from torch.utils import cpp_extension
    name = f"pie_lab_cpu_{_build_key()}"
    try:
        folder = Path(cpp_extension._get_build_directory(name, verbose))     # private in torch: may move
    except Exception:
        folder = None
    if folder is None or not (folder / f"{name}.so").exists():
        log.warning("building pie_lab's CPU kernels once for this machine (10-20 s) in %s", folder or "torch's cache")
    try:
        cpp_extension.load(name, [str(p) for p in SOURCES], extra_cflags=FLAGS, extra_ldflags=["-fopenmp"],
                           is_python_module=False, verbose=verbose)
    except Exception as exc:                                  # a compiler error: keep running on torch
        _state["error"] = f"build failed: {exc}"
        log.warning("pie_lab CPU kernels not built, running plain torch: %s", exc)
        return False
    _state["loaded"] = True
    return True


def active(x: Tensor, op: str) -> bool:
    """Whether kernel `op` (one of OPS) runs for tensors like x (on the CPU, float32 or bfloat16)."""
    return _state["loaded"] and op not in _state["off"] and x.device.type == "cpu" and x.dtype in DTYPES


@contextmanager
def disabled(*ops: str):
    """Run the plain torch code for these ops (all when none is named) inside: A/B measurements and the
    kernels' own tests."""
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown kernel op(s) {sorted(unknown)}; allowed: {', '.join(OPS)}")
    before = _state["off"]
    _state["off"] = before | frozenset(ops or OPS)
    try:
        yield
    finally:
        _state["off"] = before


def status() -> str:
    if _state["loaded"]:
        off = [op for op in OPS if op in _state["off"]]
        return f"on, except {', '.join(off)}" if off else "on"
    return f"off ({_state['error'] or 'not loaded'})"


def paged_decode_attention(q: Tensor, pool: Tensor, staged: Tensor | None, tables: Tensor, context_lens: Tensor,
                           scale: float, window: int | None) -> Tensor:
    """q [B, nh, hd] over pool [G, 2, bs, kvh, hd] (+ staged [S, ...]) through tables [B, nb] -> [B, nh, hd]."""
    return torch.ops.pie_lab.paged_decode_attention(q, pool, staged, tables, context_lens, scale, window or 0)


def rope_write_kv(qkv: Tensor, nh: int, kvh: int, cos: Tensor, sin: Tensor, pool: Tensor, slots: Tensor) -> Tensor:
    """qkv [T, (nh + 2 kvh) hd] -> q [T, nh, hd] rotated; rotated k and v written to pool at slots [T]."""
    return torch.ops.pie_lab.rope_write_kv(qkv, nh, kvh, cos, sin, pool, slots)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return torch.ops.pie_lab.rms_norm(x, weight, eps)


def silu_mul(gate_up: Tensor) -> Tensor:
    """[..., 2 I] (gate then up) -> silu(gate) * up [..., I]."""
    return torch.ops.pie_lab.silu_mul(gate_up)
