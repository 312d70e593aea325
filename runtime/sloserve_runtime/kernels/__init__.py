"""C++ kernels for the CPU hot path, compiled on first use with torch's cpp_extension and cached on disk.

Why: some steps are memory-bound in ways torch ops cannot fuse. Decode attention is the case here: the torch
path copies every sequence's KV blocks into one batch before two batched matmuls; the kernel reads each K/V
row once where it lies (paged_attention.cpp has the numbers). Every kernel has a torch path in model/llama.py,
used on other devices, when the build fails (no C++ compiler: a warning says so), and with SLOSERVE_KERNELS=0.

The build takes ~20 s once per machine and torch version; `python -m sloserve_runtime.kernels` does it ahead
of time (`make setup` and the runtime image run it). The cache key includes the CPU's feature flags because
the code is compiled with -march=native, and the sources' directory: ninja's build file names the sources by
path, so two checkouts sharing one cache would otherwise rebuild in turn, and a process killed mid-build
leaves cpp_extension's lock behind, on which every later build waits forever.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
from pathlib import Path

import torch

log = logging.getLogger(__name__)

KERNEL_DIR = Path(__file__).parent
SOURCES = [KERNEL_DIR / name for name in ("paged_attention.cpp", "elementwise.cpp")]
# Let the compiler vectorize float sums (dot products, softmax totals) by reassociating them; no -ffast-math:
# infinities and NaNs keep their meaning.
REDUCTION_FLAGS = ["-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math"]
_available: bool | None = None


def build_directory() -> Path:
    root = Path(os.environ.get("SLOSERVE_KERNEL_CACHE", Path.home() / ".cache" / "sloserve" / "kernels"))
    checkout = hashlib.sha256(str(KERNEL_DIR.resolve()).encode()).hexdigest()[:8]
    return root / f"torch-{torch.__version__}-{platform.machine()}-{_cpu_fingerprint()}-{checkout}"


def _cpu_fingerprint() -> str:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = platform.processor()
    return hashlib.sha256(flags.encode()).hexdigest()[:12]


def _put_ninja_on_path() -> None:
    """cpp_extension runs `ninja` from PATH; the PyPI package installs it inside the venv, often not on PATH."""
    if shutil.which("ninja") is None:
        with contextlib.suppress(ImportError):
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def cpu_kernels_available() -> bool:
    """Build (or load from the cache) once per process; False means: use the torch path."""
    global _available
    if _available is None:
        _available = _load()
    return _available


def _load() -> bool:
    if os.environ.get("SLOSERVE_KERNELS", "1").strip().lower() in ("0", "false", "off", "no"):
        log.info("C++ kernels disabled by SLOSERVE_KERNELS")
        return False
    try:
        from torch.utils.cpp_extension import load

        _put_ninja_on_path()

        directory = build_directory()
        directory.mkdir(parents=True, exist_ok=True)
        # cpp_extension rebuilds when the sources or flags change; the header's hash in a flag covers simd.h.
        version = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(KERNEL_DIR.glob("*.[ch]*")))).hexdigest()
        load(name="sloserve_kernels", sources=[str(s) for s in SOURCES], build_directory=str(directory),
             extra_cflags=["-O3", "-march=native", "-fopenmp", *REDUCTION_FLAGS, f"-DSLOSERVE_KERNELS={version[:16]}"],
             extra_ldflags=["-fopenmp"], extra_include_paths=[str(KERNEL_DIR)],
             is_python_module=False, verbose=False)
        return True
    except Exception as error:  # no compiler, no ninja, a read-only home...: serve anyway, a bit slower
        reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        log.warning("C++ kernels unavailable, using the torch path: %s", reason)
        return False
