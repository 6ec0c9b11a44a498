"""Workloads: requests with arrival times, seeded generators and loaders for real dataset files."""
from .generators import (Request, Workload, alpaca_like, arrival_times, mixed, sharegpt_like, synthetic,
                         ALPACA, SHAREGPT)
from .loaders import load_alpaca, load_sharegpt
from .prompts import read_prompts
from .sharegpt_v3 import load_sharegpt_v3

__all__ = ["Request", "Workload", "sharegpt_like", "alpaca_like", "synthetic", "mixed", "arrival_times",
           "load_sharegpt", "load_alpaca", "load_sharegpt_v3", "read_prompts", "SHAREGPT", "ALPACA"]
