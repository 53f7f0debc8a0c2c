"""Run every benchmark in this folder in one process tree and print their tables (`make bench`).

Benchmarks report ratios measured in the same run (the machine is shared and noisy); they are never
timed unit tests. Each script also accepts `--json PATH` to save its figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("bench_*.py"))
    failed = 0
    for script in scripts:
        print(f"\n=== {script.name}", flush=True)
        failed += subprocess.call([sys.executable, str(script), *sys.argv[1:]]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
