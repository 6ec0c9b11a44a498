"""pie_lab: a workbench for pooling CPU memory with GPU memory in LLM inference (Pie, Berkeley 2024).

The engine core (pie_lab.core) imports no torch; executors and models load lazily.
"""
from .config import ControllerConfig, EngineConfig, POLICIES, EXECUTORS, LIVE_KNOBS, OFFLOAD_MODES
from .errors import ConfigError, EngineError, PieLabError
from .sampling import SamplingParams
from .model_spec import ModelSpec, NAMED_SHAPES, named_spec, real_model_names, spec_from_model
from .core.engine import Engine, RequestOutput
from .engine_factory import create_engine
from .llm import LLM
from .chat import chat_prompt_ids, end_of_turn_ids, load_tokenizer

__version__ = "0.1.0"


__all__ = ["LLM", "Engine", "create_engine", "EngineConfig", "ControllerConfig", "SamplingParams", "RequestOutput",
           "ModelSpec", "NAMED_SHAPES", "named_spec", "real_model_names", "spec_from_model", "ConfigError", "EngineError", "PieLabError",
           "POLICIES", "EXECUTORS", "LIVE_KNOBS", "OFFLOAD_MODES", "chat_prompt_ids", "end_of_turn_ids", "load_tokenizer", "__version__"]
