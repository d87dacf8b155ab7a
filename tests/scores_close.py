"""Comparing annotate outputs whose scores may differ in their last digits.

Entities are the same on every engine and process count; their probabilities are
float sums whose order depends on torch's thread count (the in-process engine runs
on torch's threads, worker processes and Ray actors on one each), so they agree to
about 1e-10, not bit for bit.
"""
import json
import math
from pathlib import Path
from typing import Any

RTOL = 1e-6
ATOL = 1e-9


def close(a: Any, b: Any) -> bool:
    """RETURNS (bool): Whether two JSON values are equal, floats within RTOL/ATOL."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    return a == b


def same_file(a: Path, b: Path) -> bool:
    """RETURNS (bool): Whether two output files are the same: JSON lines row by row
    (scores within tolerance), other files byte for byte."""
    if a.suffix == ".jsonl":
        rows_a = [json.loads(line) for line in a.read_text(encoding="utf8").splitlines()]
        rows_b = [json.loads(line) for line in b.read_text(encoding="utf8").splitlines()]
        return close(rows_a, rows_b)
    return a.read_bytes() == b.read_bytes()
