"""Load a bench script (bench/*.py is not a package) as a module, the way the tests of its pure parts need it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench(script: str, name: str) -> ModuleType:
    """bench/`script` as module `name`, registered first: its dataclasses look their module up while built."""
    spec = importlib.util.spec_from_file_location(name, BENCH / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
