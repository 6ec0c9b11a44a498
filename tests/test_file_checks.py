"""Model files the tests corrupt themselves: each gives a ConfigError naming the file, what is wrong
and what to do (exit 2 from the CLI), before any library parses it."""
import json
import struct

import numpy as np
import pytest

from pie_lab.cli import main
from pie_lab.errors import ConfigError
from pie_lab.model.file_checks import check_folder, check_gguf, check_safetensors, check_torch_bin

gguf = pytest.importorskip("gguf")


@pytest.fixture
def good_gguf(tmp_path):
    path = tmp_path / "good.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(50)])
    w.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def cut(src, dst, n):
    dst.write_bytes(src.read_bytes()[:n])
    return dst


def test_a_whole_gguf_passes(good_gguf):
    check_gguf(str(good_gguf))


def test_truncated_gguf_names_bytes_present_and_needed(good_gguf, tmp_path):
    data = good_gguf.read_bytes()
    short = cut(good_gguf, tmp_path / "short.gguf", len(data) - 100)
    with pytest.raises(ConfigError, match=rf"short.gguf: truncated at {len(data) - 100:,} of {len(data):,} bytes; "
                                          "download or copy it again"):
        check_gguf(str(short))
    for n in (5, 30, 200):                  # in the fixed header, in the metadata, in the tensor table
        with pytest.raises(ConfigError, match=rf"truncated at {n:,} bytes, inside its header"):
            check_gguf(str(cut(good_gguf, tmp_path / f"h{n}.gguf", n)))


def test_not_gguf_wrong_version_and_empty(good_gguf, tmp_path):
    rand = tmp_path / "rand.gguf"
    rand.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    with pytest.raises(ConfigError, match=r"rand.gguf: not a GGUF file .*give a .gguf model file"):
        check_gguf(str(rand))
    v9 = tmp_path / "v9.gguf"
    v9.write_bytes(b"GGUF" + struct.pack("<I", 9) + good_gguf.read_bytes()[8:])
    with pytest.raises(ConfigError, match=r"^model file \S+v9.gguf: GGUF version 9 is not supported \(versions 2, "
                                          r"3\); convert it with a current llama.cpp$"):
        check_gguf(str(v9))
    huge = tmp_path / "huge.gguf"                # a key 1 TiB long: refused, never read
    huge.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 1, 1, 2**40) + b"x" * 100)
    with pytest.raises(ConfigError, match="huge.gguf: truncated at 132 bytes, inside its header"):
        check_gguf(str(huge))
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty.gguf: empty \(0 bytes\)"):
        check_gguf(str(empty))


def test_cli_exits_2_naming_the_gguf(good_gguf, tmp_path, capsys):
    short = cut(good_gguf, tmp_path / "bad.gguf", 5)
    assert main(["run", "--model", str(short), "--num-requests", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(short) in err and "truncated at 5 bytes" in err


def write_safetensors(path):
    from safetensors.numpy import save_file
    save_file({"a": np.ones((100, 10), np.float32), "b": np.zeros(7, np.float16)}, str(path))
    return path


def test_safetensors_header_and_offsets(tmp_path):
    good = write_safetensors(tmp_path / "model.safetensors")
    check_safetensors(str(good))
    data = good.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    with pytest.raises(ConfigError, match=rf"truncated at {len(data) - 1:,} of {len(data):,} bytes"):
        check_safetensors(str(cut(good, tmp_path / "c1.safetensors", len(data) - 1)))
    with pytest.raises(ConfigError, match=rf"truncated at 20 of at least {8 + n:,} bytes"):
        check_safetensors(str(cut(good, tmp_path / "c2.safetensors", 20)))
    with pytest.raises(ConfigError, match="before its 8-byte header length"):
        check_safetensors(str(cut(good, tmp_path / "c3.safetensors", 3)))
    bad = tmp_path / "c4.safetensors"
    bad.write_bytes(data[:8] + b"{" * n + data[8 + n:])
    with pytest.raises(ConfigError, match="c4.safetensors: its JSON header is corrupt"):
        check_safetensors(str(bad))


def test_folder_needs_config_and_whole_weights(tmp_path, capsys):
    from pie_lab.model.loader import load_model
    from pie_lab.model_spec import named_spec
    folder = tmp_path / "ckpt"
    folder.mkdir()
    with pytest.raises(ConfigError, match="has no config.json; a checkpoint folder needs config.json and its weights"):
        check_folder(str(folder))
    (folder / "config.json").write_text(json.dumps(dict(named_spec("opt-tiny").hf_config)))
    with pytest.raises(ConfigError, match="has no weights"):
        check_folder(str(folder))
    weights = write_safetensors(folder / "model.safetensors")
    assert check_folder(str(folder)) == [str(weights)]
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(ConfigError, match=r"model.safetensors: truncated at 300 of"):
        load_model(str(folder))
    assert main(["run", "--model", str(folder), "--num-requests", "1", "--no-progress"]) == 2
    assert "truncated at 300 of" in capsys.readouterr().err


def test_truncated_torch_zip(tmp_path):
    import torch
    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.ones(100)}, path)
    check_torch_bin(str(path))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ConfigError, match="pytorch_model.bin: truncated at 200 bytes"):
        check_torch_bin(str(path))
