"""The benchmark harness, never its timings: it alternates sides, pairs ratios, writes result files of the
documented shape, refuses bad options in one line, and regenerates only the README's marked section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed with cnnlab; plain `pytest` may not put the root first
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import Check, Stats, interleaved, paired_ratio  # noqa: E402
from benchmarks.readme import END, START, update_readme  # noqa: E402


def test_interleaved_warms_up_then_alternates_the_order():
    calls = []
    sides = {name: (lambda name=name: calls.append(name) or float(len(calls))) for name in ("a", "b", "c")}
    stats = interleaved(sides, repeats=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert stats["a"].samples == [4.0, 9.0, 10.0] and stats["a"].median == 9.0


def test_paired_ratio_and_stats():
    num, den = Stats.of([2.0, 4.0, 9.0]), Stats.of([1.0, 4.0, 3.0])
    r = paired_ratio(num, den)
    assert r.samples == [2.0, 1.0, 3.0] and r.median == 2.0 and r.spread == pytest.approx(1.0)
    assert Check("x", 0.95, ">=", 0.9).passed and not Check("x", 0.85, ">=", 0.9).passed
    assert Check("y", 1.0, "<=", 1.0).passed and not Check("y", None, "<=", 1.0).passed


def _bench(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("args, message", [
    (["--only", "nope"], "unknown benchmark nope"),
    (["--threads", "-1"], "--threads: must be >= 0"),
    (["--full", "--smoke"], "not allowed with argument"),
    (["--smoke"], "--smoke needs --results DIR"),
])
def test_bad_options_are_one_line(args, message):
    proc = _bench(*args)
    assert proc.returncode == 2 and message in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_smoke_run_writes_results_of_the_documented_shape(tmp_path):
    proc = _bench("--smoke", "--only", "data,throughput", "--threads", "1", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "throughput.json"]
    for name in ("data", "throughput"):
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["schema_version"] == 1 and doc["name"] == name and doc["mode"] == "smoke"
        assert doc["threads"] == 1 and doc["torch"] and doc["machine"]["cpu"]["logical_cores"] == os.cpu_count()
        assert set(doc["git"]) == {"commit", "dirty"} and doc["rows"] and doc["checks"]
        for check in doc["checks"]:
            assert set(check) >= {"what", "value", "op", "threshold", "passed"}
    ratio = json.loads((tmp_path / "throughput.json").read_text())["figures"]["cpu_fp32"]["ratio"]
    assert len(ratio["samples"]) == 2 and ratio["low"] <= ratio["median"] <= ratio["high"]
    assert "cnnlab benchmarks" in proc.stdout and "throughput ratio cnnlab / bare" in proc.stdout


def test_readme_section_is_regenerated_between_the_markers_only(tmp_path):
    doc = {"schema_version": 1, "name": "data", "title": "Data pipeline", "mode": "quick", "threads": 2,
           "device": "cpu", "finished": "2026-01-01T00:00:00+00:00", "seconds": 12.3, "torch": "2.13.0",
           "git": {"commit": "0123456789abcdef", "dirty": False}, "load_average_after": [1.0, 1.0, 1.0],
           "machine": {"short": "Test CPU, 2 cores", "cpu": {"flags": {"avx512f": True}, "idle_cores": [0, 1],
                                                             "usable_cores": 2}},
           "skipped": None, "rows": [["batched vs per-sample", "**12.0×**"]], "notes": ["measured twice"],
           "checks": [{"what": "speed-up", "value": 12.0, "op": ">=", "threshold": 3.0, "passed": True, "note": ""}],
           "figures": {}}
    results = tmp_path / "results"
    results.mkdir()
    (results / "data.json").write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\nbefore\n{START}\nold figure 99×\n{END}\nafter\n")
    update_readme(results, readme)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old figure" not in text and "| batched vs per-sample | **12.0×** |" in text
    assert "quick mode, 2 thread(s)" in text and "commit 0123456789" in text and "Test CPU, 2 cores" in text
    assert "speed-up >= 3: 12 **pass**" in text and "Measured twice." in text
    update_readme(results, readme)
    assert readme.read_text() == text  # idempotent


def test_example_net_is_the_pytorch_examples_mnist_network():
    """pytorch/examples mnist/main.py's Net: conv 1→32 (3×3), conv 32→64 (3×3), fc 9216→128, fc 128→10 —
    320 + 18,496 + 1,179,776 + 1,290 = 1,199,882 parameters; log-probabilities out; dropout active in training."""
    import torch

    from benchmarks.baselines import ExampleNet

    net = ExampleNet()
    assert sum(p.numel() for p in net.parameters()) == 320 + 18_496 + 1_179_776 + 1_290 == 1_199_882
    x = torch.randn(4, 1, 28, 28)
    net.eval()
    out = net(x)
    assert out.shape == (4, 10) and torch.allclose(out.exp().sum(1), torch.ones(4), atol=1e-5)
    called = []
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.register_forward_hook(lambda mod, inp, out: called.append((mod.p, tuple(inp[0].shape))))
    net.train()
    torch.manual_seed(0)
    assert not torch.allclose(net(x), net(x))  # dropout is on in training
    assert called[:2] == [(0.25, (4, 64, 12, 12)), (0.5, (4, 128))]  # after the pool, and after fc1's ReLU


def test_make_bench_runs_the_training_data_inference_and_analysis_benchmarks():
    # Issue 16: `make bench` runs training (throughput, time to accuracy, defaults across the families),
    # data, inference and analysis benchmarks: each must be registered with the harness.
    proc = _bench("--list")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert {"throughput", "time_to_accuracy", "defaults", "data", "inference", "analysis"} <= set(listed)


@pytest.mark.slow
def test_defaults_smoke_run_checks_each_family_against_chance(tmp_path):
    proc = _bench("--smoke", "--only", "defaults", "--threads", "1", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "defaults.json").read_text())
    families = doc["figures"]["families"]
    assert list(families) == ["LeNet-1", "LeNet-5"] and doc["figures"]["threshold"] == 0.8
    for family in families.values():  # the numbers the defaults chose, as the run saved them
        assert family["lr"] == 0.1 and family["batch_size"] == 32 and family["epochs"] == 1
    assert [c["what"] for c in doc["checks"]] == [f"{f}: test accuracy with defaults alone" for f in families]
