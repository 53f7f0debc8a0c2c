"""The lectures' hand exercises, done exactly and shown step by step: a bank of filters slid over a
(multi-channel) input with stride, zero padding and bias, as cross-correlation (what deep-learning conv
layers compute) or true convolution (the kernel flipped, the lectures' (k * f)(x, y) =
sum k(dx, dy) f(x - dx, y - dy)), optionally followed by max/average pooling.

Arithmetic uses exact fractions, so a filter of -1/2 entries gives exactly -1, not -0.9999999.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import ConfigError, GeometryError
from ..layers import conv_output_size
from ..utils.limits import check_text_file
from ..utils.safe_yaml import load_json
from .receptive_field import fits

# Hand-exercise caps: each multiply-add is an exact fraction and a written-out step (~7 us, ~1 KB on 2 cores).
MAX_PADDED_VALUES = 1_000_000
MAX_MACS = 300_000  # as many as the explainer page shows

Matrix = list[list[Fraction]]
Volume = list[Matrix]  # channels x rows x columns


def parse_number(tok: str) -> Fraction:
    """An exact number from text: an integer, a decimal or a fraction such as -1/2. Hand-exercise sizes only:
    at most 30 characters and exponents within +-300 (Fraction("1e999999999") would build a billion-digit
    integer)."""
    exponent = re.search(r"[eE]\s*([+-]?\d+)", tok)
    if len(tok.strip()) > 30 or (exponent and abs(int(exponent.group(1)[:6])) > 300):
        raise ConfigError(f"number {tok.strip()[:20]!r}{'…' if len(tok.strip()) > 20 else ''} is beyond what a hand "
                          f"exercise needs (at most 30 characters, exponents within ±300)")
    try:
        return Fraction(tok)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"not a number: {tok!r} (write integers, decimals or fractions like -1/2)") from None


def _check_volume(vol: Volume, what: str) -> Volume:
    if not vol or not vol[0] or not vol[0][0]:
        raise ConfigError(f"{what} is empty")
    h, w = len(vol[0]), len(vol[0][0])
    for c, mat in enumerate(vol):
        if len(mat) != h or any(len(row) != w for row in mat):
            raise ConfigError(f"{what}: every row must have {w} values and every channel {h} rows "
                              f"(channel {c + 1} differs)")
    return vol


def parse_volume(text: str, what: str = "input") -> Volume:
    """Inline rows separated by `;` (or new lines), channels by `|`: "1 0 1; 0 1 0 | 2 2 2; ..."."""
    channels = [c for c in text.split("|")]
    vol = []
    for chan in channels:
        rows = [r for r in chan.replace("\n", ";").split(";") if r.strip()]
        vol.append([[parse_number(t) for t in r.replace(",", " ").split()] for r in rows])
    return _check_volume(vol, what)


def _from_nested(obj, what: str) -> Volume:
    def frac(v):
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise TypeError(v)
        return Fraction(str(v)) if not isinstance(v, str) else parse_number(v)

    if isinstance(obj, list) and obj and isinstance(obj[0], list) and obj[0] and not isinstance(obj[0][0], list):
        obj = [obj]  # one channel
    try:
        return _check_volume([[[frac(v) for v in row] for row in mat] for mat in obj], what)
    except TypeError:
        raise ConfigError(f"{what}: expected a 2-D (rows) or 3-D (channels, rows, columns) array of numbers"
                          ) from None
    except ValueError:  # NaN or infinity
        raise ConfigError(f"{what}: every value must be a finite number") from None


def load_volume(spec: str, what: str = "input") -> Volume:
    """A volume from inline text or a .txt (inline syntax), .npy or .json (nested lists) file."""
    path = Path(spec)
    if path.suffix.lower() in (".txt", ".npy", ".json") and path.is_file():
        check_text_file(path, "matrix file")  # hand-exercise sizes: a huge file is refused before reading
        if path.suffix.lower() == ".npy":
            import numpy as np

            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as exc:
                raise ConfigError(f"{path}: not a readable .npy array ({_first_line(exc)})") from None
            return _from_nested(array.tolist(), f"{what} ({path})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read it as text ({_first_line(exc)})") from None
        if path.suffix.lower() == ".json":
            try:
                obj = load_json(text)  # nesting too deep for the parser: a ValueError
            except ValueError as exc:
                raise ConfigError(f"{path}: not valid JSON ({exc})") from None
            return _from_nested(obj, f"{what} ({path})")
        return parse_volume(text, f"{what} ({path})")
    if path.suffix.lower() in (".txt", ".npy", ".json"):
        raise ConfigError(f"{what} file not found: {spec}")
    return parse_volume(spec, what)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class ConvResult:
    """Output feature maps (one per kernel), their per-unit multiply-adds and "does not fit" notes."""

    maps: list[Matrix]
    steps: list[list[list[str]]]
    fit_notes: list[str] = field(default_factory=list)


def _pad(mat: Matrix, p: int) -> Matrix:
    w = len(mat[0]) + 2 * p
    zero = Fraction(0)
    return [[zero] * w for _ in range(p)] + [[zero] * p + row + [zero] * p for row in mat] + \
        [[zero] * w for _ in range(p)]


def fmt(v: Fraction) -> str:
    """Exact numbers as the lectures write them: 4, -1, 0.5, 0.3333."""
    if v.denominator == 1:
        return str(v.numerator)
    return f"{float(v):.4f}".rstrip("0")


def _unit(xp: Volume, k: Volume, bias: Fraction, top: int, left: int) -> tuple[Fraction, list[str]]:
    """One output unit: the window of the padded input `xp` at (top, left) times kernel `k`, summed over
    all channels, plus the bias; and the products written out."""
    terms, total = [], Fraction(0)
    for x_chan, k_chan in zip(xp, k):
        for a, k_row in enumerate(k_chan):
            for b, kv in enumerate(k_row):
                xv = x_chan[top + a][left + b]
                total += xv * kv
                terms.append(f"{fmt(xv)}*{fmt(kv)}")
    return total + bias, terms


def _unit_products(xp: Volume, k: Volume, top: int, left: int) -> list[list[Fraction]]:
    """The products of one output unit, channel by channel, in the kernel's row-major order."""
    return [[x_chan[top + a][left + b] * kv for a, k_row in enumerate(k_chan) for b, kv in enumerate(k_row)]
            for x_chan, k_chan in zip(xp, k)]


def _fit_notes(n: int, h: int, w: int, kh: int, kw: int, stride: int, padding: int) -> list[str]:
    """The lectures' "does not fit" check of kernel n: (W - F + 2P)/S + 1 not an integer, per axis."""
    notes = []
    for size, ks, axis in ((h, kh, "rows"), (w, kw, "columns")):
        ok, exact = fits(size, ks, stride, padding)
        if not ok:
            notes.append(f"kernel {n + 1} does not fit the {axis}: ({size} - {ks} + 2*{padding})/{stride} + 1"
                         f" = {exact:.2f}, floored to {int(exact)}")
    return notes


def convolve(x: Volume, kernels: list[Volume], biases: list[Fraction] | None = None, stride: int = 1,
             padding: int = 0, mode: str = "correlation") -> ConvResult:
    """Slide every kernel over `x` (all channels summed) and add its bias; see the module docstring."""
    if mode not in ("correlation", "convolution"):
        raise ConfigError(f"--mode must be correlation or convolution, got {mode!r}")
    if stride < 1 or padding < 0:
        raise ConfigError("stride must be >= 1 and padding >= 0")
    biases = list(biases or [Fraction(0)] * len(kernels))
    if len(biases) != len(kernels):
        raise ConfigError(f"{len(kernels)} kernel(s) but {len(biases)} bias value(s)")
    c, h, w = len(x), len(x[0]), len(x[0][0])
    xp = [_pad(m, padding) for m in x]
    maps, steps, notes = [], [], []
    for n, (k, b) in enumerate(zip(kernels, biases)):
        if len(k) != c:
            raise ConfigError(f"kernel {n + 1} has {len(k)} channel(s) but the input has {c}")
        kh, kw = len(k[0]), len(k[0][0])
        if mode == "convolution":  # true convolution = cross-correlation with the kernel rotated 180°
            k = [[row[::-1] for row in mat[::-1]] for mat in k]
        ho = conv_output_size(h, kh, stride, padding, layer=f"kernel {n + 1}")
        wo = conv_output_size(w, kw, stride, padding, layer=f"kernel {n + 1}")
        notes += _fit_notes(n, h, w, kh, kw, stride, padding)
        out, out_steps = [], []
        for i in range(ho):
            row, row_steps = [], []
            for j in range(wo):
                value, terms = _unit(xp, k, b, i * stride, j * stride)
                row.append(value)
                bias_txt = f" + {fmt(b)}" if b != 0 else ""
                row_steps.append(f"o{n}[{i},{j}] = " + " + ".join(terms) + f"{bias_txt} = {fmt(value)}")
            out.append(row)
            out_steps.append(row_steps)
        maps.append(out)
        steps.append(out_steps)
    return ConvResult(maps, steps, list(dict.fromkeys(notes)))


def pool(mat: Matrix, kind: str = "max", size: int = 2, stride: int | None = None) -> Matrix:
    """Max or average pooling of one map (no padding; a window that does not fit is an error)."""
    if kind not in ("max", "avg"):
        raise ConfigError(f"--pool must be max or avg, got {kind!r}")
    stride = size if stride is None else stride
    if size < 1 or stride < 1:
        raise ConfigError(f"--pool-size and --pool-stride must be >= 1, got {size} and {stride}")
    h, w = len(mat), len(mat[0])
    if size > h or size > w:
        raise GeometryError(f"pool window {size} is larger than the {h}x{w} feature map")
    ho, wo = (h - size) // stride + 1, (w - size) // stride + 1
    out = []
    for i in range(ho):
        row = []
        for j in range(wo):
            win = [mat[i * stride + a][j * stride + b] for a in range(size) for b in range(size)]
            row.append(max(win) if kind == "max" else sum(win, Fraction(0)) / len(win))
        out.append(row)
    return out


def format_matrix(mat: Matrix) -> str:
    """Rows of right-aligned exact numbers, as the slides print a feature map."""
    cells = [[fmt(v) for v in row] for row in mat]
    width = max(len(c) for row in cells for c in row)
    return "\n".join("  ".join(c.rjust(width) for c in row) for row in cells)


# --- one typed config for `cnnlab conv` and `cnnlab explain conv` -----------------------------------------

@dataclass
class ConvSpec:
    """What to convolve and how: input, filter bank, biases, stride, padding, mode and pooling."""

    input: Volume
    kernels: list[Volume]
    biases: list[Fraction]
    stride: int = 1
    padding: int = 0
    mode: str = "correlation"
    pool: str | None = None
    pool_size: int = 2
    pool_stride: int | None = None
    demo: str | None = None  # the lecture example it came from, if any

    def run(self) -> ConvResult:
        return convolve(self.input, self.kernels, self.biases, self.stride, self.padding, self.mode)


def conv_spec(input: str | None = None, kernels: list[str] | None = None, bias: list[str] | None = None,
              stride: int | None = None, padding: int | None = None, mode: str | None = None,
              pool_kind: str | None = None, pool_size: int | None = None, pool_stride: int | None = None,
              demo=None) -> ConvSpec:
    """A checked ConvSpec from what a user typed; with `demo` (a conv_demos.ConvDemo), the lecture
    example's values, which any option given explicitly overrides. Every problem is a one-line
    ConfigError/GeometryError, raised here before anything is computed."""
    base = demo
    if base is None and (input is None or not kernels):
        raise ConfigError("--input and --kernel are required (or --demo NAME for a lecture example)")
    x = load_volume(input, "--input") if input is not None else base.input
    ks = [load_volume(k, f"--kernel {i + 1}") for i, k in enumerate(kernels)] if kernels else base.kernels
    if bias:
        biases = [parse_number(b) for b in bias]
    elif base is not None and not kernels:
        biases = list(base.biases)
    else:
        biases = [Fraction(0)] * len(ks)
    if len(biases) != len(ks):
        raise ConfigError(f"--bias: {len(ks)} kernel(s) but {len(biases)} bias value(s)")
    pool_default = base.pool if base is not None and base.pool else (None, 2, None)
    spec = ConvSpec(x, ks, biases,
                    stride=stride if stride is not None else (base.stride if base else 1),
                    padding=padding if padding is not None else (base.padding if base else 0),
                    mode=mode or (base.mode if base else "correlation"),
                    pool=pool_kind or pool_default[0],
                    pool_size=pool_size if pool_size is not None else pool_default[1],
                    pool_stride=pool_stride if pool_stride is not None else pool_default[2],
                    demo=base.name if base is not None else None)
    _check_spec(spec, pool_from_demo=pool_kind is None and pool_size is None and spec.pool is not None)
    return spec


def _check_spec(spec: ConvSpec, pool_from_demo: bool = False) -> None:
    if spec.mode not in ("correlation", "convolution"):
        raise ConfigError(f"--mode must be correlation or convolution, got {spec.mode!r}")
    if spec.stride < 1:
        raise ConfigError(f"--stride must be >= 1, got {spec.stride}")
    if spec.padding < 0:
        raise ConfigError(f"--padding must be >= 0, got {spec.padding}")
    c, h, w = len(spec.input), len(spec.input[0]), len(spec.input[0][0])
    _check_work(spec, c, h, w)
    for n, k in enumerate(spec.kernels):
        if len(k) != c:
            raise ConfigError(f"--kernel {n + 1} has {len(k)} channel(s) but the input has {c}")
        for size, ks in ((h, len(k[0])), (w, len(k[0][0]))):
            conv_output_size(size, ks, spec.stride, spec.padding, layer=f"--kernel {n + 1}")
    if spec.pool is not None:
        if spec.pool not in ("max", "avg"):
            raise ConfigError(f"--pool must be max or avg, got {spec.pool!r}")
        pool_stride = spec.pool_size if spec.pool_stride is None else spec.pool_stride
        if spec.pool_size < 1 or pool_stride < 1:
            raise ConfigError(f"--pool-size and --pool-stride must be >= 1, got {spec.pool_size} and {pool_stride}")
        k = spec.kernels[0]
        ho = conv_output_size(h, len(k[0]), spec.stride, spec.padding)
        wo = conv_output_size(w, len(k[0][0]), spec.stride, spec.padding)
        if spec.pool_size > min(ho, wo):
            what = f"--demo {spec.demo} pools with {spec.pool} {spec.pool_size}, which is" if pool_from_demo \
                else f"--pool-size {spec.pool_size} is"
            raise GeometryError(f"{what} larger than the {ho}x{wo} feature maps of stride {spec.stride}, padding "
                                f"{spec.padding} (give --pool-size 1 or a smaller stride)")


def _check_work(spec: ConvSpec, c: int, h: int, w: int) -> None:
    """ResourceError before computing when the exercise is beyond hand size: the zero-padded input or the
    multiply-adds (each kept as an exact fraction and a written-out step) past their caps, with the count."""
    from ..errors import ResourceError
    from ..utils.limits import short_int

    p = spec.padding
    padded = c * (h + 2 * p) * (w + 2 * p)
    if padded > MAX_PADDED_VALUES:
        raise ResourceError(f"--padding {short_int(p)}: the zero-padded input would hold {short_int(padded)} values, "
                            f"more than `cnnlab conv` works by hand ({MAX_PADDED_VALUES:,})")
    macs = 0
    for k in spec.kernels:
        kh, kw = len(k[0]), len(k[0][0])
        if kh > h + 2 * p or kw > w + 2 * p:
            continue  # the geometry check below names it
        ho, wo = (h + 2 * p - kh) // spec.stride + 1, (w + 2 * p - kw) // spec.stride + 1
        macs += ho * wo * c * kh * kw
    if macs > MAX_MACS:
        raise ResourceError(f"this convolution has {short_int(macs)} multiply-adds, more than `cnnlab conv` "
                            f"works out one by one ({MAX_MACS:,}); use a smaller input, kernel or padding")


# --- every multiply-add of one configuration, for the explainer page -------------------------------------

@dataclass
class ConvWalk:
    """One stride/padding configuration worked out unit by unit: the padded input, the kernels as applied
    (flipped for true convolution), and for every map n and output unit (i, j) the products channel by
    channel (`products[n][i][j][c]`, kernel row-major), their per-channel sums and the unit's value."""

    stride: int
    padding: int
    padded: Volume
    kernels: list[Volume]
    maps: list[Matrix]
    products: list[list[list[list[list[Fraction]]]]]
    channel_sums: list[list[list[list[Fraction]]]]


def walk(x: Volume, kernels: list[Volume], biases: list[Fraction], stride: int, padding: int,
         mode: str = "correlation") -> ConvWalk:
    """Every product and sum of the convolution (all kernels must share one size); values agree with
    `convolve` (and with torch.nn.functional.conv2d, as the tests check)."""
    if len({(len(k[0]), len(k[0][0])) for k in kernels}) != 1:
        raise ConfigError("the explainer page needs kernels of one size (a filter bank)")
    h, w = len(x[0]), len(x[0][0])
    kh, kw = len(kernels[0][0]), len(kernels[0][0][0])
    ho = conv_output_size(h, kh, stride, padding)
    wo = conv_output_size(w, kw, stride, padding)
    applied = kernels if mode == "correlation" else [[[row[::-1] for row in mat[::-1]] for mat in k] for k in kernels]
    xp = [_pad(m, padding) for m in x]
    products = [[[_unit_products(xp, k, i * stride, j * stride) for j in range(wo)] for i in range(ho)]
                for k in applied]
    sums = [[[[sum(ch, Fraction(0)) for ch in unit] for unit in row] for row in per_map] for per_map in products]
    maps = [[[sum(unit, Fraction(0)) + b for unit in row] for row in per_map] for per_map, b in zip(sums, biases)]
    return ConvWalk(stride, padding, xp, applied, maps, products, sums)
