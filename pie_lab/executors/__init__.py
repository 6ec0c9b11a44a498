"""Executors run step plans; the core never imports them directly (see base.create_executor)."""
from .base import Executor, Clock, WallClock, VirtualClock, create_executor, EXECUTOR_REGISTRY

__all__ = ["Executor", "Clock", "WallClock", "VirtualClock", "create_executor", "EXECUTOR_REGISTRY"]
