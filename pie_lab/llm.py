"""The offline entry point: `LLM(model, executor, **engine_options).generate(prompts, params)`."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

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

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ConfigError("string prompts need the checkpoint's tokenizer, and this model has none "
                                  "(named shapes have random weights and no tokenizer): pass token-id lists")
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

    def _with_text(self, out: RequestOutput) -> RequestOutput:
        if self.tokenizer is None:
            return out
        from dataclasses import replace
        return replace(out, text=self.tokenizer.decode(out.token_ids, skip_special_tokens=True))

    def close(self) -> None:
        self.engine.close()


def _progress(total: int):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc="requests", unit="req")
