"""Resource caps: what an input would need, checked against what the machine has before anything is
allocated, and sizes written short so that an error never echoes a huge number back verbatim."""

from __future__ import annotations

import os

# A config file, a matrix file for `cnnlab conv`, a label file: what a person writes is far below this.
MAX_TEXT_FILE_BYTES = 4 << 20


def physical_memory() -> int:
    """Bytes of RAM the machine has (MemTotal): the ceiling no allocation can pass, whatever else runs now.
    (Available memory would refuse sound inputs while another job happens to be using the machine.)"""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf on this platform: no ceiling known
        return 1 << 62


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB', 3e15 -> '2.7 PiB' (binary units, at most three significant figures)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    if unit == len(units) - 1 and value >= 1024:
        return f"{float(n):.2g} bytes"
    return f"{value:.0f} {units[unit]}" if unit == 0 else f"{value:.3g} {units[unit]}"


def short_int(n: int) -> str:
    """An integer as a user should read it back: grouped digits up to 12 digits, else '1.2e+15'."""
    n = int(n)
    return f"{n:,}" if abs(n) < 10**12 else f"{float(n):.2g}"


def check_memory(nbytes: int, what: str) -> None:
    """ResourceError (one line, naming `what` and the size) when `nbytes` exceed the machine's memory."""
    from ..errors import ResourceError

    total = physical_memory()
    if nbytes > total:
        raise ResourceError(f"{what} would need {human_bytes(nbytes)} of memory, more than this machine has "
                            f"({human_bytes(total)}); refused before allocating")


def short_text(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters with an ellipsis (a long notation string named in an error)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_text_file(path, what: str = "file") -> None:
    """ConfigError unless `path`, when it exists, is a regular file of at most MAX_TEXT_FILE_BYTES: a device
    such as /dev/zero, a FIFO or a huge file would otherwise be read without end. (A missing file is left
    to the reader, which names it.)"""
    import stat

    from ..errors import ConfigError

    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file (a device or pipe); give a {what}")
    if st.st_size > MAX_TEXT_FILE_BYTES:
        raise ConfigError(f"{path}: {human_bytes(st.st_size)} is too large for a {what} (at most "
                          f"{human_bytes(MAX_TEXT_FILE_BYTES)})")
