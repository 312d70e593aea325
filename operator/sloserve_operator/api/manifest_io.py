"""Reading ModelService YAML files (one or many documents) and writing objects as YAML."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def load_documents(path: str) -> list[Any]:
    """All YAML documents in a file ("-" reads stdin); empty documents are skipped."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def dump_objects(objects: Iterable[dict[str, Any]]) -> str:
    """Objects as a multi-document YAML stream, keys in the order they were built."""
    return "".join("---\n" + yaml.safe_dump(obj, sort_keys=False) for obj in objects)
