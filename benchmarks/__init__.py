"""cnnlab's benchmarks: `python -m benchmarks` (`make bench`). Speed is reported as ratios measured in one
run against a baseline on the same machine, never asserted in unit tests; see __main__.py for the options
and harness.py for how each figure is taken."""
