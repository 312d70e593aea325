"""Where one local ModelService keeps its files: `.run/<name>/` (state, Prometheus config and data, logs)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BASE = Path(".run")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def for_service(cls, name: str, base: Path | str = DEFAULT_BASE) -> RunDir:
        return cls(Path(base) / name)

    @property
    def state_file(self) -> Path:
        """Written by the controller every tick, read by `sloserve status`."""
        return self.root / "state.json"

    @property
    def targets_file(self) -> Path:
        """Prometheus file-based service discovery: one entry per replica with its labels."""
        return self.root / "targets.json"

    @property
    def prometheus_config(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def prometheus_data(self) -> Path:
        return self.root / "prometheus-data"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_for(self, process_name: str) -> Path:
        return self.logs / f"{process_name}.log"

    def ensure(self) -> RunDir:
        self.logs.mkdir(parents=True, exist_ok=True)
        return self


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers (status, Prometheus file_sd) must never see a half-written file: write, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(data, file, indent=1)
            file.write("\n")
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def find_run_dirs(base: Path | str = DEFAULT_BASE) -> list[RunDir]:
    """Run directories under `base` that hold a state file, newest first."""
    base = Path(base)
    if not base.is_dir():
        return []
    found = [RunDir(path) for path in base.iterdir() if (path / "state.json").is_file()]
    return sorted(found, key=lambda run: run.state_file.stat().st_mtime, reverse=True)
