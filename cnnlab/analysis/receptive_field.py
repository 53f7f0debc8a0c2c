"""Receptive-field arithmetic of the lectures (and distill.pub/2019/computing-receptive-fields), per axis.

A unit of a feature map sees a window of the input image. Three numbers describe that window for every
unit of the map at once:
  - size r: how many input pixels the window spans,
  - jump j: how far (in input pixels) the window moves between neighbouring units (the effective stride),
  - centre c: where the window of the first unit (index 0) is centred, in input-pixel coordinates
    (pixel i has its centre at i; padding makes c negative or fractional).
Through a window op with kernel k, stride s, padding p and dilation d:
    r_out = r_in + (k - 1)·d·j_in,   j_out = j_in·s,   c_out = c_in + ((k - 1)/2·d - p)·j_in.
Where paths merge (residual add, Inception concat) a unit sees the union of its inputs' windows; we keep
the largest one, which is what "the receptive field" of a branched network means in practice.
"""

from __future__ import annotations

from dataclasses import dataclass

Pair = tuple[float, float]


@dataclass(frozen=True)
class ReceptiveField:
    """The (height, width) receptive field of every unit of one tensor; see the module docstring.

    `is_global` marks a tensor whose units see the whole image (after flatten, global pooling or a
    fully connected layer); `approx` an upper bound (adaptive pooling with uneven windows); `unknown` a
    tensor produced by an op whose geometry cnnlab cannot tell (never guessed silently)."""

    size: Pair = (1, 1)
    jump: Pair = (1, 1)
    centre: Pair = (0, 0)
    is_global: bool = False
    approx: bool = False
    unknown: bool = False

    def to_dict(self) -> dict:
        if self.unknown:
            return {"size": None, "jump": None, "centre": None, "global": False, "unknown": True}
        if self.is_global:
            return {"size": None, "jump": None, "centre": None, "global": True, "unknown": False}
        return {"size": [_num(v) for v in self.size], "jump": [_num(v) for v in self.jump],
                "centre": [_num(v) for v in self.centre], "global": False, "unknown": False,
                **({"approx": True} if self.approx else {})}


INPUT = ReceptiveField()
GLOBAL = ReceptiveField(is_global=True)
UNKNOWN = ReceptiveField(unknown=True)


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 4)


def through_window(rf: ReceptiveField, kernel: Pair, stride: Pair, padding: Pair,
                   dilation: Pair = (1, 1)) -> ReceptiveField:
    """The receptive field after a conv/pool window (per axis: kernel, stride, padding, dilation)."""
    if rf.unknown or rf.is_global:
        return rf
    size, jump, centre = [], [], []
    for ax in range(2):
        k, s, p, d = kernel[ax], stride[ax], padding[ax], dilation[ax]
        size.append(rf.size[ax] + (k - 1) * d * rf.jump[ax])
        centre.append(rf.centre[ax] + ((k - 1) / 2 * d - p) * rf.jump[ax])
        jump.append(rf.jump[ax] * s)
    return ReceptiveField(tuple(size), tuple(jump), tuple(centre), approx=rf.approx)  # type: ignore[arg-type]


def through_adaptive(rf: ReceptiveField, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> ReceptiveField:
    """Adaptive pooling: exact when each input axis divides evenly, else an upper bound (windows of
    ceil(in/out)+1), a global field when the output is 1x1 and the input larger."""
    if rf.unknown or rf.is_global or tuple(in_hw) == tuple(out_hw):
        return rf
    if tuple(out_hw) == (1, 1):
        return GLOBAL
    kernel, stride, approx = [], [], False
    for i, o in zip(in_hw, out_hw):
        if i % o == 0:
            kernel.append(i // o)
            stride.append(i // o)
        else:
            kernel.append(-(-i // o) + 1)
            stride.append(i / o)
            approx = True
    out = through_window(rf, tuple(kernel), tuple(stride), (0, 0))
    return ReceptiveField(out.size, out.jump, out.centre, approx=approx or out.approx) if approx else out


def merge(fields: list[ReceptiveField]) -> ReceptiveField:
    """Where paths meet (add, concat, gating), keep the largest field; unknown and global dominate."""
    if not fields:
        return UNKNOWN
    if any(f.unknown for f in fields):
        return UNKNOWN
    if any(f.is_global for f in fields):
        return GLOBAL
    return max(fields, key=lambda f: (f.size[0] * f.size[1], -f.jump[0]))


def fits(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> tuple[bool, float]:
    """Whether the stride tiles the padded input exactly, and the lectures' (W - F + 2P)/S + 1."""
    f_eff = dilation * (kernel - 1) + 1
    num = size - f_eff + 2 * padding
    return num % stride == 0, num / stride + 1
