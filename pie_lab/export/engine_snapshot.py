"""Checks a vLLM or SGLang export against a snapshot of the engine's flags and validation rules
(data/export_engines.json, written by scripts/check_exports.py from the released engines' own
parsers; CI cannot install the engines, so it checks against the snapshot instead).

The flag check replays the parser: every option must exist, take a value of its type (one of its
choices, if any) or none. The rules are those the engines' validators enforce, with the constants
the snapshot read from the engines' code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from ..sim.hardware import DATA_DIR
from .base import Translation

SNAPSHOT = DATA_DIR / "export_engines.json"
PREFIX = {"vllm": 2, "sglang": 3}       # "vllm serve", "python -m sglang.launch_server"


def load_snapshot(path: Path = SNAPSHOT) -> dict:
    return json.loads(Path(path).read_text())


def check_export(tr: Translation, snapshot: Mapping[str, Any], max_position_embeddings: int) -> list[str]:
    """What the target engine would reject in `tr` (empty when it parses and validates)."""
    engine = snapshot["engines"][tr.target]
    args, problems = _parse(list(tr.argv[PREFIX[tr.target]:]), engine["flags"])
    rules = engine["rules"]
    if tr.target == "vllm":
        problems += _vllm_rules(args, rules, max_position_embeddings)
    else:
        problems += _sglang_rules(args, rules)
    return problems


def _parse(argv: list[str], flags: Mapping[str, dict]) -> tuple[dict, list[str]]:
    args: dict[str, Any] = {}
    problems: list[str] = []
    i = 0
    while i < len(argv):
        opt = argv[i]
        if not opt.startswith("--"):
            args.setdefault("positional", []).append(opt)
            i += 1
            continue
        spec = flags.get(opt)
        if spec is None:
            problems.append(f"unrecognized argument {opt}")
            i += 1
            continue
        if spec["kind"] == "flag":
            args[opt] = True
            i += 1
            continue
        if i + 1 >= len(argv):
            problems.append(f"{opt} needs a value")
            break
        value = argv[i + 1]
        try:
            args[opt] = {"int": int, "float": float, "str": str}[spec["kind"]](value)
        except ValueError:
            problems.append(f"{opt} takes a {spec['kind']}, got {value!r}")
        if spec.get("choices") and value not in spec["choices"]:
            problems.append(f"{opt} {value!r} is not one of {spec['choices']}")
        i += 2
    return args, problems


def _vllm_rules(args: dict, rules: Mapping[str, Any], max_position: int) -> list[str]:
    problems = []
    block = args.get("--block-size")
    kernels = rules["kernel_block_sizes"]
    if block is not None and not any(block % size == 0 for sizes in kernels.values() for size in sizes):
        problems.append(f"no valid attention backend for --block-size {block} (kernel block sizes {kernels})")
    max_len = args.get("--max-model-len", max_position)
    batched = args.get("--max-num-batched-tokens")
    if args.get("--disable-chunked-prefill") and batched is not None and batched < max_len:
        problems.append(f"--max-num-batched-tokens {batched} < max_model_len {max_len} without chunked prefill")
    return problems


def _sglang_rules(args: dict, rules: Mapping[str, Any]) -> list[str]:
    problems = []
    chunk, page = args.get("--chunked-prefill-size", -1), args.get("--page-size", 1)
    if chunk > 0 and chunk % page:
        problems.append(f"--chunked-prefill-size {chunk} is not divisible by --page-size {page}")
    if args.get("--enable-hierarchical-cache") and not args.get("--hicache-size"):
        ratio = args.get("--hicache-ratio", rules["hicache_ratio_default"])
        if ratio <= 1:
            problems.append(f"--hicache-ratio {ratio}: the host pool must exceed the device pool")
    return problems
