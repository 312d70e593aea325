"""`python -m sloserve_runtime.kernels`: build the C++ kernels now (so the first server start does not)."""

import logging
import sys

from sloserve_runtime.kernels import build_directory, cpu_kernels_available

logging.basicConfig(level=logging.INFO, format="%(message)s")
if cpu_kernels_available():
    print(f"sloserve kernels ready in {build_directory()}")
    sys.exit(0)
print("sloserve kernels could not be built; the runtime will use its torch path", file=sys.stderr)
sys.exit(1)
