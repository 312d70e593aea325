"""`sloserve validate -f FILE`: the GitOps pre-flight check."""

from __future__ import annotations

import argparse
import sys

from ..api import validate_document
from ..manifest_io import load_documents


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", action="append", required=True, help="YAML file (repeatable; - for stdin)")


def run(args: argparse.Namespace) -> int:
    failed = False
    for path in args.filename:
        try:
            documents = load_documents(path)
        except (OSError, ValueError) as error:
            print(f"{path}: cannot read: {error}", file=sys.stderr)
            failed = True
            continue
        if not documents:
            print(f"{path}: no documents", file=sys.stderr)
            failed = True
        for index, document in enumerate(documents):
            name = document.get("metadata", {}).get("name", f"#{index}") if isinstance(document, dict) else f"#{index}"
            _, problems = validate_document(document)
            for problem in problems:
                print(f"{path}: ModelService {name}: {problem}", file=sys.stderr)
            failed = failed or bool(problems)
            if not problems:
                print(f"{path}: ModelService {name}: valid")
    return 1 if failed else 0
