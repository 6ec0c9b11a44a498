"""Workloads: requests with arrival times, seeded generators and loaders for real dataset files."""
from .generators import (Request, Workload, alpaca_like, arrival_times, mixed, sharegpt_like, synthetic,
                         ALPACA, SHAREGPT)
from .loaders import load_alpaca, load_sharegpt
from .prompts import read_prompts

__all__ = ["Request", "Workload", "sharegpt_like", "alpaca_like", "synthetic", "mixed", "arrival_times",
           "load_sharegpt", "load_alpaca", "read_prompts", "SHAREGPT", "ALPACA"]
