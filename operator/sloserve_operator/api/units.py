"""Durations and Kubernetes quantities as users write them ("500ms", "5m", "32Gi", "500m").

Specs keep the user's string (so status and `kubectl get -o yaml` show what was written); these helpers
validate it and turn it into a number where the code needs one.
"""

from __future__ import annotations

import re
from decimal import Decimal

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
CPU_PATTERN = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"
PERCENT_PATTERN = r"^[0-9]{1,2}(\.[0-9]+)?%$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MEMORY_FACTORS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as "500ms", "1m30s" or "2h"."""
    if not re.fullmatch(DURATION_PATTERN, text or ""):
        raise ValueError(f"invalid duration {text!r}: use a number with ms, s, m or h, e.g. '500ms' or '5m'")
    return sum(float(value) * _DURATION_SECONDS[unit] for value, unit in _DURATION_PART.findall(text))


def parse_cpu(text: str) -> float:
    """Cores in a Kubernetes CPU quantity ("4", "0.5", "500m")."""
    if not re.fullmatch(CPU_PATTERN, text or ""):
        raise ValueError(f"invalid CPU quantity {text!r}: use cores ('2', '0.5') or millicores ('500m')")
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def parse_memory(text: str) -> int:
    """Bytes in a Kubernetes memory quantity ("32Gi", "512Mi", "1G")."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", text or "")
    if not match:
        raise ValueError(f"invalid memory quantity {text!r}: use e.g. '32Gi', '512Mi' or '1G'")
    return int(Decimal(match.group(1)) * _MEMORY_FACTORS[match.group(2) or ""])


def percent_value(text: str) -> float:
    """The fraction a percentage such as "99%" or "0.5%" writes, 0 included (the format alone)."""
    if not re.fullmatch(PERCENT_PATTERN, text or ""):
        raise ValueError(f"invalid percentage {text!r}: use e.g. '99%' or '99.9%' (below 100%)")
    return float(text[:-1]) / 100


def parse_percent(text: str) -> float:
    """A fraction in (0, 1) from a percentage such as "99%" or "99.9%"."""
    value = percent_value(text)
    if not 0 < value < 1:
        raise ValueError(f"invalid percentage {text!r}: must be above 0% and below 100%")
    return value


def format_ms(seconds: float) -> str:
    """A compact human duration for status and logs."""
    return f"{seconds * 1000:.0f}ms" if seconds < 10 else f"{seconds:.1f}s"
