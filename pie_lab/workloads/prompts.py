"""Text prompts for real models: data/prompts.jsonl (a small instruction set written for pie_lab), or a
file the user passes: one prompt per line, or JSONL records with a "prompt" field."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError


def default_prompts_path() -> Path:
    from ..sim.hardware import DATA_DIR
    return DATA_DIR / "prompts.jsonl"


def read_prompts(path: str | Path | None = None) -> list[str]:
    """The prompts of `path` (default: data/prompts.jsonl). Blank lines are skipped."""
    path = Path(path) if path is not None else default_prompts_path()
    if not path.is_file():
        raise ConfigError(f"prompts file {path} does not exist")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl" or line.lstrip().startswith("{"):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path} line {n} is not valid JSON: {exc.msg}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or not rec["prompt"].strip():
                raise ConfigError(f"{path} line {n}: a JSONL record needs a non-empty string field 'prompt'")
            prompts.append(rec["prompt"])
        else:
            prompts.append(line.strip())
    if not prompts:
        raise ConfigError(f"prompts file {path} has no prompts: give one per line, or JSONL with a 'prompt' field")
    return prompts
