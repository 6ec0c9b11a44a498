"""The offline entry point: `LLM(model, executor, **engine_options).generate(prompts, params)`,
and `LLM.chat(conversations, params)` through the checkpoint's chat template."""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping, Sequence

from .chat import chat_prompt_ids, check_conversation, end_of_turn_ids
from .config import EngineConfig
from .core.engine import RequestOutput
from .engine_factory import create_engine
from .errors import ConfigError
from .sampling import SamplingParams


class LLM:
    def __init__(self, model: Any = "opt-tiny", executor: str = "cpu", config: EngineConfig | None = None,
                 **engine_options: Any):
        self.engine = create_engine(model, executor, config, **engine_options)
        self.tokenizer = getattr(self.engine.executor, "tokenizer", None)

    @classmethod
    def from_config(cls, path_or_config) -> "LLM":
        from .config_io import load_run_config
        rc = load_run_config(path_or_config)
        return cls(rc.model, rc.executor, rc.engine)

    @property
    def config(self) -> EngineConfig:
        return self.engine.config

    def _need_tokenizer(self, what: str) -> None:
        if self.tokenizer is None:
            raise ConfigError(f"{what} need the checkpoint's tokenizer, and this model has none "
                              "(named shapes have random weights and no tokenizer): pass token-id lists, "
                              "or use a real model such as 'smollm2-135m'")

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            self._need_tokenizer("string prompts")
            return list(self.tokenizer.encode(prompt))
        return list(prompt)

    def generate(self, prompts: str | Sequence[int] | Iterable, sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ConfigError(f"got {len(params)} sampling params for {len(prompts)} prompts; "
                                  "give one, or one per prompt")
        # every prompt is checked before any is queued: a bad one leaves nothing behind
        checked = []
        for i, (p, sp) in enumerate(zip(prompts, params)):
            try:
                checked.append(self.engine.check_request(self.encode(p), sp))
            except ConfigError as exc:
                raise ConfigError(f"prompts[{i}]: {exc}") from None
        ids = []
        try:
            for prompt, sp in zip(checked, params):
                ids.append(self.engine.add_request(prompt, sp))
            outputs: dict = {}
            mine = set(ids)
            bar = _progress(len(prompts)) if use_tqdm else None
            while mine - outputs.keys() and self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.request_id in mine:
                        outputs[out.request_id] = self._with_text(out)
                        if bar:
                            bar.update(1)
            if bar:
                bar.close()
        except BaseException:
            for rid in ids:                       # an interrupted call leaves nothing queued
                self.engine.abort(rid)
            raise
        return [outputs[i] for i in ids]

    def chat(self, conversations: Sequence[Mapping[str, str]] | Iterable[Sequence[Mapping[str, str]]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             use_tqdm: bool = False) -> list[RequestOutput]:
        """One conversation (a list of {"role", "content"} messages) or a list of them -> one answer each.

        Applies the chat template with the assistant's turn opened, and stops at its end-of-turn token
        as at EOS: not with `ignore_eos` (as vLLM, whose end of turn is one of the model's EOS ids).
        Otherwise the params are generate's: `max_tokens`, `stop_token_ids`, sampling.
        """
        self._need_tokenizer("chat conversations")
        conversations = list(conversations)
        if conversations and isinstance(conversations[0], Mapping):
            conversations = [conversations]
        prompts = [chat_prompt_ids(self.tokenizer, check_conversation(c, i)) for i, c in enumerate(conversations)]
        stops = self.end_of_turn_ids()
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            sampling_params = [sampling_params or SamplingParams()] * len(prompts)
        params = [sp if sp.ignore_eos else replace(sp, stop_token_ids=tuple(dict.fromkeys((*sp.stop_token_ids, *stops))))
                  for sp in sampling_params]
        return self.generate(prompts, params, use_tqdm=use_tqdm)

    def end_of_turn_ids(self) -> tuple[int, ...]:
        """The token the chat template ends an assistant's turn with (and EOS)."""
        self._need_tokenizer("chat conversations")
        return end_of_turn_ids(self.tokenizer)

    def _with_text(self, out: RequestOutput) -> RequestOutput:
        if self.tokenizer is None:
            return out
        return replace(out, text=self.tokenizer.decode(out.token_ids, skip_special_tokens=True))

    def close(self) -> None:
        self.engine.close()


def _progress(total: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="requests", unit="req")
