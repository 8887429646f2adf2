"""One-line text of a metrics dict, as every mode and loop logs it."""
from __future__ import annotations


def format_metrics(metrics: dict, sep: str = " ") -> str:
    """{'fid': 3.14159, 'step': 10} -> 'fid=3.1416 step=10' (floats to 4 decimals)."""
    return sep.join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
