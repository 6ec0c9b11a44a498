"""The engine core: scheduling, block accounting, swap planning, control and metrics. Imports no torch."""
