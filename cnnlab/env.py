"""What training will run on: `describe_machine()` gathers the lectures' "Check your GPUs" for this
machine — Python and torch versions, the CPU, its cores and which are idle now, its vector features,
the CUDA devices with their memory, and the speed options `cnnlab train` picks by default here, with why.

The library returns a `MachineInfo` (`to_dict()` for JSON); `cnnlab env` prints it and the benchmarks
record it beside every figure. Linux facts come from /proc (cpuinfo, stat, meminfo); elsewhere those
fields are None rather than guessed.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1

# /proc/cpuinfo flag → what it means for training. AVX-512 BF16 gives native bf16 dot products (what
# `--amp bf16` needs to be fast on a CPU); AMX is the tile matrix unit of Intel's Sapphire Rapids and
# later (bf16 and int8 matmuls several times faster than AVX-512).
VECTOR_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA3",
    "avx512f": "AVX-512 (foundation)",
    "avx512_vnni": "AVX-512 VNNI (int8 dot products)",
    "avx512_bf16": "AVX-512 BF16 (native bf16 dot products)",
    "avx512_fp16": "AVX-512 FP16",
    "amx_tile": "AMX tiles",
    "amx_bf16": "AMX BF16",
    "amx_int8": "AMX INT8",
}
IDLE_THRESHOLD = 0.5  # a core idle at least half of the sampled interval counts as idle


@dataclass
class CpuInfo:
    """The processor as Linux and torch see it."""

    model: str | None
    logical_cores: int
    usable_cores: int  # the ones this process may run on (affinity / cgroup cpuset)
    physical_cores: int | None
    idle_fraction: dict[int, float] | None  # core index → share of the sampled interval it sat idle
    idle_cores: list[int] | None  # the cores idle at least IDLE_THRESHOLD of that interval
    flags: dict[str, bool]  # VECTOR_FLAGS keys → present in /proc/cpuinfo
    torch_capability: str  # torch.backends.cpu.get_cpu_capability(): the kernels torch dispatches to
    torch_bf16_native: bool  # torch's own check: AVX-512 BF16 or AMX usable by oneDNN


@dataclass
class CudaDevice:
    """One CUDA device: name, memory and the precision it supports natively."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int | None
    capability: str
    bf16: bool


@dataclass
class SpeedChoice:
    """A speed option `cnnlab train` uses by default on this machine, and why."""

    option: str
    value: str
    why: str


@dataclass
class MachineInfo:
    """Everything `cnnlab env` prints."""

    python: str
    torch: str
    platform: str
    cpu: CpuInfo
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    cuda: list[CudaDevice] = field(default_factory=list)
    defaults: list[SpeedChoice] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-ready dict with `schema_version` (idle cores keyed by strings, as JSON requires)."""
        out = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        idle = out["cpu"]["idle_fraction"]
        if idle is not None:
            out["cpu"]["idle_fraction"] = {str(k): round(v, 3) for k, v in idle.items()}
        return out

    def short(self) -> str:
        """One line naming the machine, as the benchmarks label their figures."""
        mem = f", {self.memory_total_bytes / 2**30:.0f} GiB" if self.memory_total_bytes else ""
        gpus = "".join(f", {d.name}" for d in self.cuda)
        return (f"{self.cpu.model or platform.processor() or 'unknown CPU'}, {self.cpu.usable_cores} cores"
                f"{mem}{gpus}, PyTorch {self.torch}")


def parse_cpuinfo(text: str) -> dict:
    """The model name, flag set and physical core count from the text of /proc/cpuinfo (x86 layout;
    ARM's `Features` line is read as flags too)."""
    model, flags, cores = None, set(), set()
    physical = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    return {"model": model, "flags": flags, "physical_cores": len(cores) or None}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _core_ticks() -> dict[int, tuple[int, int]] | None:
    """core index → (idle + iowait ticks, all ticks) from /proc/stat's cpuN lines."""
    text = _read("/proc/stat")
    if text is None:
        return None
    out = {}
    for line in text.splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(v) for v in values[:8]]
            out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
    return out or None


def idle_by_core(interval: float = 0.2) -> dict[int, float] | None:
    """Share of `interval` seconds each core sat idle (sampled from /proc/stat; None off Linux)."""
    before = _core_ticks()
    if before is None:
        return None
    time.sleep(interval)
    after = _core_ticks() or {}
    shares = {}
    for core, (idle0, total0) in before.items():
        idle1, total1 = after.get(core, (idle0, total0))
        shares[core] = (idle1 - idle0) / (total1 - total0) if total1 > total0 else 1.0
    return shares


def _meminfo() -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo."""
    text = _read("/proc/meminfo") or ""
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024  # reported in kB (KiB)
    return values.get("MemTotal"), values.get("MemAvailable")


def _cuda_devices() -> list[CudaDevice]:
    """Every visible CUDA device with its memory (free memory needs a context: read, not guessed)."""
    import torch

    if not torch.cuda.is_available():
        return []
    devices = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        try:
            free = torch.cuda.mem_get_info(i)[0]
        except RuntimeError:  # e.g. a device in exclusive mode held by another process
            free = None
        with torch.cuda.device(i):
            bf16 = bool(torch.cuda.is_bf16_supported())
        devices.append(CudaDevice(i, props.name, int(props.total_memory), free,
                                  f"{props.major}.{props.minor}", bf16))
    return devices


def speed_defaults(cpu: CpuInfo, cuda: list[CudaDevice], threads: int) -> list[SpeedChoice]:
    """The speed options TrainConfig's defaults resolve to on this machine, each with its reason."""
    from .train.config import TrainConfig, resolve_channels_last

    cfg = TrainConfig()
    choices = []
    if cfg.device == "auto":
        where = f"cuda:0 ({cuda[0].name})" if cuda else "cpu"
        why = "a CUDA device is visible" if cuda else "no CUDA device is visible to this torch build"
        choices.append(SpeedChoice("device", where, f"--device auto: {why}"))
    else:
        choices.append(SpeedChoice("device", cfg.device, "TrainConfig default"))
    idle = len(cpu.idle_cores) if cpu.idle_cores is not None else None
    if cfg.threads == 0:
        seen = f"{idle} of {cpu.usable_cores} idle in the sample above" if idle is not None else "idle cores unknown"
        choices.append(SpeedChoice("threads", str(threads), f"--threads 0 takes the cores idle when training starts "
                                   f"(sampled again then; {seen}): OpenMP threads waiting for a busy core spin "
                                   "and slow every step"))
    else:
        choices.append(SpeedChoice("threads", str(cfg.threads), "TrainConfig default"))
    if cuda:
        native = cuda[0].bf16
        bf16_why = (f"{cuda[0].name} computes bf16 natively" if native
                    else f"{cuda[0].name} has no native bf16 (fp16 autocast is the GPU option)")
    else:
        native = cpu.torch_bf16_native
        bf16_why = ("this CPU has native bf16 (AVX-512 BF16 or AMX)" if native
                    else "this CPU has no native bf16: autocast would emulate it and run slower than fp32")
    amp_on = cfg.amp != "none"
    opt_in = " (opt in with --amp bf16: faster for large nets, but it cost accuracy in 4 of 5 families measured)"
    choices.append(SpeedChoice("amp", cfg.amp, f"{'on' if amp_on else 'off'} by default"
                               f"{'' if amp_on else opt_in}; {bf16_why}"))
    if cfg.channels_last is None:  # resolved by where training runs (train.config.resolve_channels_last)
        layout = resolve_channels_last(cfg, "cuda" if cuda and cfg.device != "cpu" else "cpu").channels_last
        why = ("on for CPU training: measured 1.03-1.58x faster steps for most families on an AVX-512 CPU "
               "(ResNet-18 at 16x16 was the exception, 0.81-0.96x); --no-channels-last turns it off"
               if layout else "on CUDA only with --amp (tensor cores want NHWC); --channels-last forces it")
    else:
        layout, why = cfg.channels_last, "TrainConfig default"
    choices.append(SpeedChoice("channels_last", "on" if layout else "off", why))
    choices.append(SpeedChoice("compile", "on" if cfg.compile else "off",
                               "TrainConfig default" if cfg.compile else
                               "opt-in (--compile): compiling costs seconds to minutes up front, more than it "
                               "saves on short runs of small nets"))
    return choices


def _torch_bf16_native() -> bool:
    """torch's (oneDNN's) own test for native bf16 on this CPU: what CPU autocast's speed depends on."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN, or the private op renamed
        return False


def describe_machine(idle_interval: float = 0.2) -> MachineInfo:
    """Sample this machine (about `idle_interval` seconds of /proc/stat sampling) and return its description."""
    import torch

    parsed = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    idle = idle_by_core(idle_interval)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    cpu = CpuInfo(
        model=parsed["model"] or platform.processor() or None,
        logical_cores=os.cpu_count() or 1,
        usable_cores=usable,
        physical_cores=parsed["physical_cores"],
        idle_fraction=idle,
        idle_cores=None if idle is None else [c for c, share in sorted(idle.items()) if share >= IDLE_THRESHOLD],
        flags={flag: flag in parsed["flags"] for flag in VECTOR_FLAGS},
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        torch_bf16_native=_torch_bf16_native(),
    )
    cuda = _cuda_devices()
    from .train.run import auto_threads

    total, available = _meminfo()
    return MachineInfo(python=platform.python_version(), torch=torch.__version__,
                       platform=f"{platform.system()} {platform.release()} ({platform.machine()})",
                       cpu=cpu, memory_total_bytes=total, memory_available_bytes=available, cuda=cuda,
                       defaults=speed_defaults(cpu, cuda, auto_threads()))
