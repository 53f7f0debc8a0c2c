"""`cnnlab env`: check your device — what training will run on, and the speed options chosen for it."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser("env", help="check your device: CPU, cores idle now, vector features, GPUs, speed defaults",
                       description="Print what `cnnlab train` will run on (the lectures' \"Check your GPUs\"): "
                                   "Python and torch versions, the CPU model, its cores and which are idle now, "
                                   "its vector features (AVX-512, AVX-512 BF16, AMX), the CUDA devices with "
                                   "their memory, and the speed options chosen by default on this machine, "
                                   "with why.")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format (default: table)")
    p.set_defaults(func=_run)


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _run(args) -> int:
    import json

    from ..env import VECTOR_FLAGS, describe_machine

    info = describe_machine()
    if args.format == "json":
        print(json.dumps(info.to_dict(), indent=2))
        return 0

    from rich.console import Console
    from rich.table import Table

    cpu = info.cpu
    console = Console() if Console().is_terminal else Console(width=120)
    system = Table(title="cnnlab env", show_header=False)
    system.add_column(style="bold", no_wrap=True)
    system.add_column()
    system.add_row("Python", f"{info.python} ({info.platform})")
    system.add_row("torch", info.torch)
    system.add_row("CPU", cpu.model or "?")
    physical = f", {cpu.physical_cores} physical" if cpu.physical_cores else ""
    system.add_row("cores", f"{cpu.logical_cores} logical{physical}, {cpu.usable_cores} usable by this process")
    if cpu.idle_fraction is not None:
        shares = ", ".join(f"{c}: {share:.0%}" for c, share in sorted(cpu.idle_fraction.items()))
        system.add_row("idle now", f"{len(cpu.idle_cores or [])} core(s) {cpu.idle_cores} (idle share: {shares})")
    system.add_row("memory", f"{_gib(info.memory_total_bytes)} total, {_gib(info.memory_available_bytes)} available")
    present = [VECTOR_FLAGS[f] for f, on in cpu.flags.items() if on]
    absent = [VECTOR_FLAGS[f] for f, on in cpu.flags.items() if not on]
    system.add_row("vector features", ", ".join(present) or "none of those cnnlab looks for")
    system.add_row("not present", ", ".join(absent) or "-")
    system.add_row("torch kernels", f"{cpu.torch_capability}; native bf16: {'yes' if cpu.torch_bf16_native else 'no'}")
    if info.cuda:
        for d in info.cuda:
            free = f", {_gib(d.free_bytes)} free" if d.free_bytes is not None else ""
            system.add_row(f"cuda:{d.index}", f"{d.name}, {_gib(d.total_bytes)}{free}, compute {d.capability}, "
                                              f"bf16 {'yes' if d.bf16 else 'no'}")
    else:
        system.add_row("CUDA", "no device visible")
    console.print(system)

    speed = Table(title="speed options `cnnlab train` uses by default here")
    speed.add_column("option", style="bold", no_wrap=True)
    speed.add_column("value", no_wrap=True)
    speed.add_column("why")
    for choice in info.defaults:
        speed.add_row(choice.option, choice.value, choice.why)
    console.print(speed)
    return 0
