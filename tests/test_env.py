"""`cnnlab env` / describe_machine() against facts read elsewhere: /proc/cpuinfo and lscpu, torch's own
CPUID checks, sysconf, and a core kept busy on purpose."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from cnnlab.env import describe_machine, idle_by_core, parse_cpuinfo

linux_only = pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="needs Linux /proc")


@pytest.fixture(scope="module")
def info():
    return describe_machine(idle_interval=0.1)


def _lscpu() -> dict:
    if shutil.which("lscpu") is None:
        pytest.skip("lscpu is not installed")
    out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"}).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


@linux_only
def test_cpu_model_cores_and_flags_agree_with_lscpu(info):
    facts = _lscpu()
    assert info.cpu.model == facts["Model name"]
    assert info.cpu.logical_cores == int(facts["CPU(s)"]) == os.cpu_count()
    per_core = int(facts.get("Thread(s) per core", 1))
    assert info.cpu.physical_cores == int(facts["CPU(s)"]) // per_core
    lscpu_flags = set(facts.get("Flags", "").split())
    for flag, present in info.cpu.flags.items():
        assert present == (flag in lscpu_flags), flag


@linux_only
def test_vector_features_agree_with_torch_cpuid_checks(info):
    """torch reads CPUID itself; /proc/cpuinfo is the kernel's view: the two must agree."""
    assert info.cpu.flags["avx512_bf16"] == torch.cpu._is_avx512_bf16_supported()
    assert info.cpu.flags["amx_tile"] == torch.cpu._is_amx_tile_supported()
    assert info.cpu.flags["avx2"] == torch.cpu._is_avx2_supported()
    if torch.cpu._is_avx512_supported():  # torch needs F, BW, VL and DQ together
        assert info.cpu.flags["avx512f"]
    assert info.cpu.torch_capability == torch.backends.cpu.get_cpu_capability()
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert info.cpu.torch_bf16_native == native


def test_versions_memory_and_cuda(info):
    assert info.torch == torch.__version__
    assert info.python == ".".join(map(str, sys.version_info[:3]))
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names and os.path.exists("/proc/meminfo"):
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        assert abs(info.memory_total_bytes - physical) <= 4096
        assert 0 < info.memory_available_bytes <= info.memory_total_bytes
    assert len(info.cuda) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    device = next(c for c in info.defaults if c.option == "device")
    assert device.value == ("cpu" if not info.cuda else f"cuda:0 ({info.cuda[0].name})")


def test_speed_defaults_follow_trainconfig(info):
    from cnnlab.train import TrainConfig

    cfg = TrainConfig()
    chosen = {c.option: c for c in info.defaults}
    assert chosen["amp"].value == cfg.amp
    # channels-last by where training runs: on for CPU training, on CUDA only with AMP
    assert chosen["channels_last"].value == ("off" if info.cuda else "on")
    assert 1 <= int(chosen["threads"].value) <= os.cpu_count()
    if not info.cuda:
        assert ("has native bf16" in chosen["amp"].why) == info.cpu.torch_bf16_native


@linux_only
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_a_busy_core_is_not_reported_idle():
    """A process spinning on core 0 (pinned there) must show core 0 busy."""
    code = ("import os, time\nos.sched_setaffinity(0, {0})\nprint('pinned', flush=True)\n"
            "end = time.time() + 10\nwhile time.time() < end: pass\n")
    spinner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert spinner.stdout.readline() == "pinned\n"  # spinning on core 0 from here on
        shares = idle_by_core(0.3)
        busy = describe_machine(idle_interval=0.3)
    finally:
        spinner.kill()
        spinner.wait()
    assert set(shares) == set(range(os.cpu_count())) and shares[0] < 0.2
    assert busy.cpu.idle_fraction[0] < 0.2 and 0 not in busy.cpu.idle_cores


def test_parse_cpuinfo_finds_amx_on_a_sapphire_rapids_excerpt():
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
            "physical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
            "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nphysical id\t: 0\ncore id\t\t: 0\n"
            "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n\n"
            "processor\t: 2\nphysical id\t: 1\ncore id\t\t: 0\nflags\t\t: fpu\n")
    parsed = parse_cpuinfo(text)
    assert parsed["model"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "amx_tile", "avx512_bf16"} <= parsed["flags"]
    assert parsed["physical_cores"] == 2  # two hyper-threads of core 0 on socket 0, core 0 on socket 1


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cnnlab", "env", *args], capture_output=True, text=True, timeout=120)


@linux_only
def test_cli_json_and_table():
    proc = _cli("--format", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema_version"] == 1 and doc["torch"] == torch.__version__
    with open("/proc/cpuinfo") as fh:
        flags = set(re.search(r"^flags\s*:\s*(.*)$", fh.read(), re.M).group(1).split())
    assert doc["cpu"]["flags"]["avx512f"] == ("avx512f" in flags)
    assert {c["option"] for c in doc["defaults"]} == {"device", "threads", "amp", "channels_last", "compile"}
    table = _cli()
    assert table.returncode == 0 and "torch" in table.stdout and doc["cpu"]["model"] in table.stdout
    assert ("AVX-512 BF16" in table.stdout.split("not present")[0]) == ("avx512_bf16" in flags)
    bad = _cli("--format", "yaml")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--format" in bad.stderr
