"""One-line text of a metrics dict, as every mode and loop logs it; JSON result files written atomically."""
from __future__ import annotations


def format_metrics(metrics: dict, sep: str = " ") -> str:
    """{'fid': 3.14159, 'step': 10} -> 'fid=3.1416 step=10' (floats to 4 decimals)."""
    return sep.join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def write_json(path: str, obj) -> None:
    """Write `obj` as JSON to `path` atomically: a temp file beside it, fsynced, then `os.replace`,
    so a reader (or a resumed run) sees the old file or the new one, never a torn write."""
    import json
    import os

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: str, what: str):
    """The JSON in `path`; a file that does not parse raises ValueError naming it and `what` it is."""
    import json

    with open(path) as fh:
        text = fh.read()
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path} ({what}) is not valid JSON ({e}); move it aside to continue") from None
