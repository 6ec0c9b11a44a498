"""Checks of model files before any library reads them: a broken download or a half-written file
gives a `ConfigError` that names the file, what is wrong with it and what to do, not a library's
parse error. Only headers and tables are read (no weights); imports no torch.

- GGUF: magic number, version, metadata and tensor table, every tensor's bytes inside the file.
- safetensors: header length, JSON header, every tensor's offsets inside the file.
- checkpoint folder: a readable config.json and at least one weights file, each checked.
"""
from __future__ import annotations

import glob
import json
import os
import struct
import zipfile

from ..errors import ConfigError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
REDOWNLOAD = "download or copy it again (a download that stopped early leaves a file like this)"


class _Truncated(Exception):
    pass


class _Reader:
    def __init__(self, f, size: int):
        self.f, self.size = f, size

    def take(self, n: int) -> bytes:
        if n > self.size - self.f.tell():         # never ask read() for more than is there
            raise _Truncated
        b = self.f.read(n)
        if len(b) < n:
            raise _Truncated
        return b

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> bytes:
        return self.take(self.unpack("Q"))

    def value(self, vtype: int):
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _GGUF_SCALARS:                   # skip the items: only their bytes matter here
                self.f.seek(struct.calcsize("<" + _GGUF_SCALARS[item]) * count, os.SEEK_CUR)
                return None
            return [self.value(item) for _ in range(count)]
        if vtype not in _GGUF_SCALARS:
            raise ValueError(f"unknown metadata value type {vtype}")
        return self.unpack(_GGUF_SCALARS[vtype])


def _bad(path: str, what: str, todo: str = REDOWNLOAD) -> ConfigError:
    return ConfigError(f"model file {path}: {what}; {todo}")


def _size(path: str) -> int:
    size = os.path.getsize(path)
    if size == 0:
        raise _bad(path, "empty (0 bytes)")
    return size


def check_gguf(path: str) -> None:
    """Raises ConfigError unless `path` is a complete GGUF file of a version this reader knows."""
    size = _size(path)
    with open(path, "rb") as f:
        r = _Reader(f, size)
        head = f.read(4)
        if head != GGUF_MAGIC[:len(head)] or not head:
            raise _bad(path, f"not a GGUF file (it starts with {head!r}, a GGUF file with {GGUF_MAGIC!r})",
                       "give a .gguf model file (llama.cpp's format) or a checkpoint folder")
        try:
            if len(head) < 4:
                raise _Truncated
            version = r.unpack("I")
            if version not in GGUF_VERSIONS:
                raise _bad(path, f"GGUF version {version} is not supported (versions "
                                 f"{', '.join(map(str, GGUF_VERSIONS))})", "convert it with a current llama.cpp")
            n_tensors, n_kv = r.unpack("Q"), r.unpack("Q")
            alignment = 32
            for _ in range(n_kv):
                key = r.string()
                value = r.value(r.unpack("I"))
                if key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
            tensors = [_tensor_info(r) for _ in range(n_tensors)]
            table_end = f.tell()
        except _Truncated:
            raise _bad(path, f"truncated at {size:,} bytes, inside its header (the file is incomplete)") from None
        except ConfigError:
            raise
        except (ValueError, struct.error, OverflowError, MemoryError) as exc:
            raise _bad(path, f"its header is corrupt ({exc})") from None
    if table_end > size:
        raise _bad(path, f"truncated at {size:,} bytes, inside its header (the file is incomplete)")
    data_start = -(-table_end // alignment) * alignment
    needed = max((data_start + off + nbytes for off, nbytes in tensors), default=table_end)
    if needed > size:
        raise _bad(path, f"truncated at {size:,} of {needed:,} bytes")


def _tensor_info(r: _Reader) -> tuple[int, int]:
    """-> (offset from the data section, bytes) of one entry of the tensor table."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    r.string()
    n_dims = r.unpack("I")
    if n_dims > 8:
        raise ValueError(f"a tensor with {n_dims} dimensions")
    elems = 1
    for _ in range(n_dims):
        elems *= r.unpack("Q")
    ggml_type, offset = r.unpack("I"), r.unpack("Q")
    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown tensor type {ggml_type}") from None
    return offset, elems // block * block_bytes


def check_safetensors(path: str) -> None:
    """Raises ConfigError unless the header is whole and every tensor lies inside the file."""
    size = _size(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _bad(path, f"truncated at {size:,} bytes, before its 8-byte header length")
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            raise _bad(path, f"truncated at {size:,} of at least {8 + n:,} bytes (its header alone is {n:,} bytes)"
                       if n < 100 * 2**20 else f"not a safetensors file (a header length of {n:,} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _bad(path, f"its JSON header is corrupt ({exc})") from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object")
    ends = [v.get("data_offsets", [0, 0])[1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    needed = 8 + n + max(ends, default=0)
    if needed > size:
        raise _bad(path, f"truncated at {size:,} of {needed:,} bytes")


def check_torch_bin(path: str) -> None:
    """A zip-format pytorch_model*.bin must have its central directory (written last)."""
    with open(path, "rb") as f:
        zipped = f.read(2) == b"PK"
    if zipped and not zipfile.is_zipfile(path):
        raise _bad(path, f"truncated at {os.path.getsize(path):,} bytes (its zip directory is missing)")


def weight_files(folder: str) -> list[str]:
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    return files or sorted(glob.glob(os.path.join(folder, "pytorch_model*.bin")))


def check_folder(folder: str) -> list[str]:
    """A checkpoint folder: a readable config.json and weight files, each checked; -> the weight files."""
    cfg = os.path.join(folder, "config.json")
    if not os.path.isfile(cfg):
        raise ConfigError(f"checkpoint folder {folder} has no config.json; a checkpoint folder needs "
                          "config.json and its weights (*.safetensors or pytorch_model*.bin) side by side")
    try:
        with open(cfg) as f:
            json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(cfg, f"not valid JSON ({exc})") from None
    files = weight_files(folder)
    if not files:
        raise ConfigError(f"checkpoint folder {folder} has no weights: no *.safetensors or pytorch_model*.bin "
                          "files; copy the weights next to its config.json")
    for path in files:
        (check_safetensors if path.endswith(".safetensors") else check_torch_bin)(path)
    return files
