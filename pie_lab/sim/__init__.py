"""Simulation without tensors: hardware presets, the analytical cost model, FlexGen-style policy search."""
from .hardware import Hardware, list_presets, load_preset
from .cost_model import CostModel
from .step_shape import StepShape
from .flexgen_search import FlexGenPolicy, flexgen_search

__all__ = ["Hardware", "list_presets", "load_preset", "CostModel", "StepShape", "FlexGenPolicy", "flexgen_search"]
