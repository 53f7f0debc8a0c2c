"""Archive members confined to their target: before anything is extracted from a downloaded tar or zip,
every member is checked, and an archive holding one that would land outside the target folder (an
absolute path, a `../` component, a link pointing outside, a device or FIFO) is refused as a whole."""

from __future__ import annotations

import posixpath
import stat
import tarfile
import zipfile
from pathlib import Path

from ..errors import DataError


def member_problem(name: str, dest: Path, *, link: str | None = None, kind: str = "file") -> str | None:
    """Why member `name` (a link to `link`, if it is one; `kind` file, dir, link or special) may not be
    extracted into `dest`, or None when it may."""
    if kind == "special":
        return "is a device, FIFO or other special file"
    clean = name.replace("\\", "/")
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":"):
        return "has an absolute path"
    if ".." in clean.split("/"):
        return "has a '..' component"
    root = dest.resolve()
    target = (root / clean).resolve()
    if not target.is_relative_to(root):
        return "would be written outside the target folder"
    if link is not None:
        if link.startswith("/") or (len(link) > 1 and link[1] == ":"):
            return f"is a link to the absolute path {link!r}"
        if kind == "hardlink":  # a hard link's target is named from the archive's root
            pointed = (root / link).resolve()
        else:  # a symlink's target is relative to the folder holding the link
            pointed = (root / posixpath.dirname(clean) / link).resolve()
        if not pointed.is_relative_to(root):
            return f"is a link to {link!r}, outside the target folder"
    return None


def _tar_kind(member: tarfile.TarInfo) -> tuple[str, str | None]:
    if member.issym():
        return "symlink", member.linkname
    if member.islnk():
        return "hardlink", member.linkname
    if member.isfile():
        return "file", None
    if member.isdir():
        return "dir", None
    return "special", None


def check_tar(tar: tarfile.TarFile, dest: Path, archive: Path) -> list[tarfile.TarInfo]:
    """Every member of `tar`, after checking each one (our rules, then tarfile's "data" filter where this
    Python has it); DataError naming the archive and the first unsafe member."""
    members = tar.getmembers()
    for member in members:
        kind, link = _tar_kind(member)
        problem = member_problem(member.name, dest, link=link, kind=kind)
        if problem is None and hasattr(tarfile, "data_filter"):
            try:
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError as exc:
                problem = f"is refused by tarfile's data filter ({type(exc).__name__})"
        if problem:
            raise DataError(f"{archive}: member {member.name[:120]!r} {problem}; the archive is refused "
                            f"(nothing was extracted)")
    return members


def check_zip(zf: zipfile.ZipFile, dest: Path, archive: Path) -> list[zipfile.ZipInfo]:
    """Every member of `zf`, after checking each one (a zip's symlinks are members whose Unix mode says
    so, their target the member's content)."""
    members = zf.infolist()
    for info in members:
        mode = info.external_attr >> 16
        link = zf.read(info).decode("utf-8", "replace") if stat.S_ISLNK(mode) else None
        special = stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))  # no type bits: a file
        kind = "symlink" if link is not None else ("special" if special else "file")
        problem = member_problem(info.filename, dest, link=link, kind=kind)
        if problem:
            raise DataError(f"{archive}: member {info.filename[:120]!r} {problem}; the archive is refused "
                            f"(nothing was extracted)")
    return members
