"""`python -m cnnlab` (also what `torchrun -m cnnlab` runs)."""

import sys

from .cli import main

sys.exit(main())
