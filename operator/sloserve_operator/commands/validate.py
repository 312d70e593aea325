"""`sloserve validate -f FILE`: the GitOps pre-flight check.

Checks every ModelService document in the given files (or directories of *.yaml/*.yml, like `kubectl -f`),
prints every problem on stderr as `FILE: ModelService NAME: spec.field.path: what is wrong`, and exits 1 if
there was any, 0 when all are valid. Documents of other kinds (a GitOps repo mixes them) are skipped; finding
no ModelService at all is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sloserve_operator.api.manifest_io import load_documents
from sloserve_operator.api.spec import API_VERSION, GROUP, KIND, validate_document

YAML_SUFFIXES = (".yaml", ".yml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", action="append", required=True,
                        help="YAML file or directory (repeatable; - for stdin)")


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given; directories replaced by their YAML files, sorted (not recursive, like kubectl -f)."""
    expanded: list[str] = []
    for path in paths:
        if path != "-" and Path(path).is_dir():
            expanded.extend(str(child) for child in sorted(Path(path).iterdir()) if child.suffix in YAML_SUFFIXES)
        else:
            expanded.append(path)
    return expanded


def _is_other_kind(document: Any) -> bool:
    """A Deployment or ConfigMap next to the ModelService; a document with no kind is judged as one."""
    if not isinstance(document, dict) or "kind" not in document:
        return False
    api_version = str(document.get("apiVersion", API_VERSION))
    return document["kind"] != KIND and not api_version.startswith(GROUP + "/")


def _label(document: Any, index: int) -> str:
    metadata = document.get("metadata") if isinstance(document, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"ModelService {name}" if isinstance(name, str) and name else f"document #{index + 1}"


def check_file(path: str) -> tuple[int, int]:
    """(documents checked, documents with problems) for one file; prints as it goes."""
    try:
        documents = load_documents(path)
    except Exception as error:  # OSError, UnicodeDecodeError, yaml.YAMLError: all "cannot read"
        print(f"{path}: cannot read: {error}", file=sys.stderr)
        return 1, 1
    checked = failed = 0
    for index, document in enumerate(documents):
        if _is_other_kind(document):
            continue
        checked += 1
        label = _label(document, index)
        _, problems = validate_document(document)
        for problem in problems:
            print(f"{path}: {label}: {problem}", file=sys.stderr)
        if problems:
            failed += 1
        else:
            print(f"{path}: {label}: valid")
    return checked, failed


def run(args: argparse.Namespace) -> int:
    paths = expand_paths(args.filename)
    if not paths:
        print("no YAML files found", file=sys.stderr)
        return 1
    results = [check_file(path) for path in paths]
    if sum(checked for checked, _ in results) == 0:
        print(f"no ModelService documents in {', '.join(paths)}", file=sys.stderr)
        return 1
    return 1 if any(failed for _, failed in results) else 0
