"""Simulation without tensors: hardware presets, the analytical cost model, FlexGen-style policy search."""
from .hardware import Hardware, list_presets, load_preset
from .calibration import KernelFit, calibration_status
from .cost_model import CostModel
from .step_shape import StepShape
from .flexgen_search import FlexGenPolicy, flexgen_search

__all__ = ["Hardware", "list_presets", "load_preset", "KernelFit", "calibration_status", "CostModel", "StepShape", "FlexGenPolicy", "flexgen_search"]
