"""Runs INSIDE the throwaway engines venv (see scripts/check_exports.py); imports no pie_lab.

Usage: python exports_engine_probe.py IN.json OUT.json. IN holds {"entries": [{"name", "target",
"argv", "max_position_embeddings"}]}; every argv is parsed and validated with the released
engine's own code; OUT gets the engines' versions, their flag tables, the validation rules found in
their code, and one verdict per entry.

vLLM: `make_arg_parser` (the `vllm serve` parser: FrontendArgs + AsyncEngineArgs.add_cli_args) and
`validate_parsed_serve_args`, `AsyncEngineArgs.from_cli_args`, then `CacheConfig` and
`SchedulerConfig` built from those args as `create_engine_config` builds them (that function also
needs the model's HF config, which the check cannot download: `max_model_len` falls back to the
model's `max_position_embeddings`, passed in), then the CUDA attention backends'
`supports_block_size`. Not stubbed, but set: VLLM_TARGET_DEVICE=cpu, so platform detection works
without a GPU; it changes the CLI only in `--mm-processor-device`'s choices, which exports never set.

SGLang: `prepare_server_args` (the `launch_server` parser + `ServerArgs.from_cli_args`), then
`check_server_args` with `served_model_name` and `tokenizer_path` filled in from the model path as
SGLang's `handle_missing_default_values` does (the rest of its resolution loads the model's config),
then HiCache's host pool rule from `mem_cache/pool_host/base.py`: host tokens = device tokens x
`hicache_ratio` must exceed the device pool or SGLang warns and the tier does nothing.
"""
import argparse
import contextlib
import io
import json
import os
import sys

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
CUDA_BACKENDS = ("FLASH_ATTN", "FLASHINFER", "TRITON_ATTN", "FLEX_ATTENTION")


def kind_of(action) -> dict:
    if action.nargs == 0:
        return {"kind": "flag"}
    conv = action.type or str
    kind = "str"
    with contextlib.suppress(Exception):
        if conv("1.5") == 1.5:
            kind = "float"
    with contextlib.suppress(Exception):
        if conv("12") == 12 and kind != "float":
            kind = "int"
    return {"kind": kind, "choices": sorted(map(str, action.choices)) if action.choices else None}


def flag_table(parser) -> dict:
    return {opt: kind_of(a) for a in parser._actions for opt in a.option_strings if opt.startswith("--")}


def reason(exc: BaseException) -> str:
    """One line: pydantic's 'Value error, ...' line when there is one, else the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    return f"{type(exc).__name__}: " + next((line for line in lines if line.startswith("Value error")),
                                             " ".join(lines[:2]))


def parse_quietly(parser, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv), ""
    except SystemExit:
        return None, err.getvalue().strip().splitlines()[-1]


class VLLM:
    def __init__(self):
        import vllm
        from vllm.config import CacheConfig, SchedulerConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.common.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.attention.backends.registry import AttentionBackendEnum
        self.version = vllm.__version__
        self.parser = make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))
        self.validate, self.EngineArgs = validate_parsed_serve_args, AsyncEngineArgs
        self.CacheConfig, self.SchedulerConfig = CacheConfig, SchedulerConfig
        self.backends = {b: AttentionBackendEnum[b].get_class() for b in CUDA_BACKENDS}

    def check(self, argv, max_position):
        assert argv[:2] == ["vllm", "serve"], argv[:2]
        args, err = parse_quietly(self.parser, argv[2:])
        if args is None:
            return err
        self.validate(args)
        ea = self.EngineArgs.from_cli_args(args)
        self.CacheConfig(block_size=ea.block_size, gpu_memory_utilization=ea.gpu_memory_utilization,
                         kv_cache_memory_bytes=ea.kv_cache_memory_bytes,
                         num_gpu_blocks_override=ea.num_gpu_blocks_override,
                         kv_offloading_size=ea.kv_offloading_size, kv_offloading_backend=ea.kv_offloading_backend)
        chunked = True if ea.enable_chunked_prefill is None else ea.enable_chunked_prefill
        self.SchedulerConfig(max_num_batched_tokens=ea.max_num_batched_tokens, max_num_seqs=ea.max_num_seqs,
                             max_model_len=ea.max_model_len or max_position, enable_chunked_prefill=chunked,
                             is_encoder_decoder=False)
        if ea.block_size is not None and not any(b.supports_block_size(ea.block_size) for b in self.backends.values()):
            return f"No valid attention backend: block size {ea.block_size} fits none of {', '.join(CUDA_BACKENDS)}"
        return ""

    def rules(self) -> dict:
        sizes = {name: [s.base if hasattr(s, "base") else s for s in b.get_supported_kernel_block_sizes()]
                 for name, b in self.backends.items()}
        try:
            self.SchedulerConfig(max_num_batched_tokens=2048, max_num_seqs=8, max_model_len=4096,
                                 enable_chunked_prefill=False, is_encoder_decoder=False)
            probe = ""
        except Exception as e:                       # noqa: BLE001 (the engine's own error, recorded)
            probe = reason(e)
        # A block size fits a backend when it is a multiple of one of its kernel sizes (supports_block_size).
        return {"kernel_block_sizes": sizes, "no_chunking_needs_batched_tokens_ge_max_model_len": probe}


class SGLang:
    def __init__(self):
        import sglang
        from sglang.srt.arg_groups.hicache_hook import handle_hicache_ratio_default
        from sglang.srt.arg_groups.model_override_base import resolving_view
        from sglang.srt.server_args import ServerArgs, prepare_server_args
        self.version = sglang.__version__
        self.prepare, self.ratio_default, self.view = prepare_server_args, handle_hicache_ratio_default, resolving_view
        self.parser = argparse.ArgumentParser(prog="sglang serve")
        ServerArgs.add_cli_args(self.parser)

    def check(self, argv, max_position):
        assert argv[:3] == ["python", "-m", "sglang.launch_server"], argv[:3]
        args, err = parse_quietly(self.parser, argv[3:])
        if args is None:
            return err
        sa = self.prepare(argv[3:])
        sa.served_model_name = sa.tokenizer_path = sa.model_path
        try:
            sa.check_server_args()
        except AssertionError as e:
            return f"AssertionError: {e}"
        if sa.enable_hierarchical_cache and not sa.hicache_size:
            self.ratio_default(sa)
            ratio = self.view(sa).hicache_ratio
            if ratio <= 1:
                return f"HiCache host pool ({ratio} x device pool) is not above the device pool"
        return ""

    def rules(self) -> dict:
        sa = self.prepare(["--model-path", "m", "--page-size", "24", "--chunked-prefill-size", "2048"])
        sa.served_model_name = sa.tokenizer_path = sa.model_path
        try:
            sa.check_server_args()
            probe = ""
        except AssertionError as e:
            probe = str(e)
        sa = self.prepare(["--model-path", "m", "--enable-hierarchical-cache"])
        self.ratio_default(sa)
        default_ratio = self.view(sa).hicache_ratio
        return {"chunked_prefill_size_divisible_by_page_size": probe, "hicache_ratio_default": default_ratio,
                "hicache_host_pool_must_exceed_device_pool": True}


def main():
    with open(sys.argv[1]) as f:
        entries = json.load(f)["entries"]
    engines = {"vllm": VLLM(), "sglang": SGLang()}
    verdicts = []
    for e in entries:
        try:
            problem = engines[e["target"]].check(e["argv"], e["max_position_embeddings"])
        except Exception as exc:                      # noqa: BLE001 (the engine's own error, recorded)
            problem = reason(exc)
        verdicts.append({"name": e["name"], "ok": not problem, "problem": problem})
    out = {name: {"version": eng.version, "flags": flag_table(eng.parser), "rules": eng.rules()}
           for name, eng in engines.items()}
    with open(sys.argv[2], "w") as f:
        json.dump({"engines": out, "verdicts": verdicts}, f)


if __name__ == "__main__":
    main()
