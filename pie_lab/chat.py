"""Chat prompts through a checkpoint's tokenizer: the chat template, and the token that ends a turn.

Used by `LLM.chat` and by anything that feeds an engine chat requests (the dashboard's instruction
workload). `load_tokenizer` gives a model's tokenizer without building the model.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .errors import ConfigError

Conversation = Sequence[Mapping[str, str]]


def load_tokenizer(model: Any):
    """The tokenizer of a checkpoint folder, .gguf file or real model (e.g. "smollm2-135m"); None for
    named shapes (random weights, no tokenizer)."""
    import os
    from .model_spec import NAMED_SHAPES
    if not isinstance(model, (str, os.PathLike)) or os.fspath(model) in NAMED_SHAPES:
        return getattr(model, "tokenizer", None)
    from .model import gguf
    from .model.loader import TOKENIZER_FILES
    path = os.fspath(gguf.resolve(model))
    if not any(os.path.exists(os.path.join(path, t)) for t in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def check_conversation(conv: Any, index: int = 0) -> list:
    conv = list(conv) if isinstance(conv, (list, tuple)) else conv
    bad = [m for m in conv if not isinstance(m, Mapping) or not {"role", "content"} <= set(m)] \
        if isinstance(conv, list) else [conv]
    if bad or not conv:
        raise ConfigError(f"conversation {index} must be a non-empty list of {{'role', 'content'}} messages; "
                          f"got {bad[0] if bad else conv!r}")
    return conv


def chat_prompt_ids(tokenizer, conversation: Conversation) -> list[int]:
    """Token ids of `conversation` through the chat template, with the assistant's turn opened."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ConfigError("this checkpoint's tokenizer has no chat template: use plain text prompts")
    text = tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


def end_of_turn_ids(tokenizer) -> tuple[int, ...]:
    """The special token the chat template writes right after an assistant's message, and EOS."""
    marker = "pie_lab_answer"
    text = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
                                         tokenize=False)
    after = tokenizer.encode(text[text.index(marker) + len(marker):], add_special_tokens=False)[:1]
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    ids = [t for t in after if t in special]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return tuple(dict.fromkeys(ids))
