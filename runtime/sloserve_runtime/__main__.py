"""`python -m sloserve_runtime`: same as the `sloserve-runtime` console script."""

import sys

from sloserve_runtime.cli import main

sys.exit(main())
