"""The lectures' worked convolution examples, as data: `cnnlab conv --demo NAME` and the explainer page.

Each demo holds the values as the slides print them, the lecture it comes from, the slide's own answer
where it prints one, and any entry cnnlab had to correct to reproduce that answer (with the reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

from ..errors import ConfigError
from .conv_explainer import ConvSpec, Matrix, Volume, convolve, parse_volume


@dataclass(frozen=True)
class Correction:
    """One entry of a slide's filter that must differ from the slide's text to give the slide's own output."""

    kernel: int  # which filter of the bank (0-based)
    channel: int
    row: int
    col: int
    slide: Fraction  # the value as the slide's text reads
    corrected: Fraction
    label: str  # the entry in the slide's notation, e.g. "w0[:,:,2] centre"
    reason: str


@dataclass(frozen=True)
class ConvDemo:
    """A lecture example: input, filter bank (corrected), biases, stride, padding, optional pooling."""

    name: str
    title: str
    source: str
    input: Volume
    kernels: list[Volume]
    biases: list[Fraction]
    stride: int = 1
    padding: int = 0
    mode: str = "correlation"
    pool: tuple[str, int, int] | None = None  # (max|avg, size, stride)
    expected: list[Matrix | None] | None = None  # the output maps the slide prints (None: not printed)
    corrections: tuple[Correction, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def slide_kernels(self) -> list[Volume]:
        """The filter bank exactly as the slide's text reads (corrections undone)."""
        kernels = [[[list(row) for row in mat] for mat in k] for k in self.kernels]
        for c in self.corrections:
            kernels[c.kernel][c.channel][c.row][c.col] = c.slide
        return kernels


def _vol(text: str) -> Volume:
    return parse_volume(text, "demo")


def _mat(text: str) -> Matrix:
    return _vol(text)[0]


_FB_X = ("1 1 2 0 2; 1 2 2 1 2; 2 2 0 1 2; 0 2 2 0 2; 1 2 2 1 2 | "
         "0 0 2 0 2; 1 2 2 2 0; 2 2 1 2 0; 2 2 0 1 2; 0 0 2 2 1 | "
         "1 0 2 2 1; 2 2 2 0 1; 0 0 0 2 2; 0 0 2 1 2; 2 1 1 1 2")
# w0[:,:,2] below has -1 in its centre; the slide's text reads 1 there (see the Correction).
_FB_W0 = "-1 1 -1; -1 -1 -1; 1 -1 0 | -1 -1 0; -1 0 1; 0 1 1 | 1 -1 0; -1 -1 1; 1 -1 1"
_FB_W1 = "-1 1 0; -1 1 0; 1 1 -1 | 1 1 1; 1 0 -1; -1 0 -1 | 1 0 -1; 1 -1 1; -1 -1 1"

FILTER_BANK = ConvDemo(
    name="filter-bank",
    title="Convolution Filter Bank Demo (CS231n)",
    source="lecture 004 (CIS 4190/5190, Lec 14): \"Convolution Filter Bank Demo\", toggle movement",
    input=_vol(_FB_X),
    kernels=[_vol(_FB_W0), _vol(_FB_W1)],
    biases=[Fraction(1), Fraction(0)],
    stride=2,
    padding=1,
    expected=[_mat("0 2 -6; -1 -5 -11; -7 -7 -9"), _mat("-3 -4 3; -2 8 4; 4 1 8")],
    corrections=(Correction(
        kernel=0, channel=2, row=1, col=1, slide=Fraction(1), corrected=Fraction(-1), label="w0[:,:,2] centre",
        reason="with the slide's 1 there, map 0 does not come out as the slide's o[:,:,0]; -1 is the only "
               "change of a single filter entry that reproduces all nine values the slide prints (the minus "
               "sign was lost in transcription)"),),
    notes=("The slide shows the 5x5x3 input already padded (7x7x3, +pad 1); cnnlab pads it itself.",
           "The slide writes channels last, x[:,:,c]: channel c of the input, w0[:,:,c] of filter w0.",
           "Bias b1 is not legible in the slide's text; 0 reproduces its o[:,:,1].",
           "Parameters of the bank: (3*3*3 + 1)*2 = 56, as the slide says."),
)

X_FILTER = ConvDemo(
    name="x-filter",
    title="The 5x5 image and the X filter",
    source="lecture 001 (Convolutional Neural Networks): \"The 2D Convolution - An Example\"",
    input=_vol("1 1 1 0 0; 0 1 1 1 0; 0 0 1 1 1; 0 0 1 1 0; 0 1 1 0 0"),
    kernels=[_vol("1 0 1; 0 1 0; 1 0 1")],
    biases=[Fraction(0)],
    expected=[_mat("4 3 4; 2 4 3; 2 3 4")],
    notes=("The slide writes the true convolution (k*f)(x, y); the X filter is symmetric, so flipping it "
           "changes nothing and cross-correlation gives the same 3x3 feature map.",),
)

CARTESIAN_AXES = ConvDemo(
    name="cartesian-axes",
    title="A convolution exercise: does the image depict Cartesian axes?",
    source="lecture 004: \"Convolution Filter Banks As Pattern Detectors\" (no padding, stride 1)",
    input=_vol("0 1 0 1; 0 1 0 1; 1 1 1 1; 0 -2 0 -2"),
    kernels=[_vol("-1/2 1 -1/2; -1/2 1 -1/2; -1/2 1 -1/2"), _vol("-1/2 -1/2 -1/2; 1 1 1; -1/2 -1/2 -1/2")],
    biases=[Fraction(0), Fraction(0)],
    pool=("max", 2, 2),
    expected=[_mat("2 -2; -1 1"), None],
    notes=("The slides work out the vertical filter's map, 2 -2; -1 1; the horizontal one is left to the "
           "reader (cnnlab's -1 -0.5; 3.5 4 checked by hand in the tests).",
           "Next, the slide asks: what happens if we run max pooling on the filter outputs?"),
)

_SEVEN = "; ".join(" ".join(str(7 * r + c + 1) for c in range(7)) for r in range(7))

STRIDE_7X7 = ConvDemo(
    name="stride-7x7",
    title="7x7 input, 3x3 filter: strides 1, 2 and 3, with and without padding",
    source="lecture 000 (Stanford CS231n via UBC CPSC 532S): \"7 x 7 input image (spatially), 3 x 3 filter\"",
    input=_vol(_SEVEN),
    kernels=[_vol("1 0 1; 0 1 0; 1 0 1")],
    biases=[Fraction(0)],
    notes=("The slides draw an empty 7x7 grid; the pixel values here (1 to 49, row by row) and the X filter "
           "are cnnlab's, so every window is easy to follow.",
           "Stride 1 gives 5x5, stride 2 gives 3x3, stride 3 does not fit: (7 - 3)/3 + 1 = 2.33. With a "
           "1-pixel border, stride 1 gives 7x7 and stride 3 gives (9 - 3)/3 + 1 = 3."),
)

DEMOS: dict[str, ConvDemo] = {d.name: d for d in (FILTER_BANK, X_FILTER, CARTESIAN_AXES, STRIDE_7X7)}


def get_demo(name: str) -> ConvDemo:
    """The demo called `name`; a one-line ConfigError listing the known ones otherwise."""
    try:
        return DEMOS[name]
    except KeyError:
        raise ConfigError(f"--demo: unknown demo {name!r}; known: {', '.join(DEMOS)}") from None


def as_given(demo: ConvDemo) -> ConvDemo:
    """The demo with the slide's text verbatim (corrections undone), to show what the slide's values give."""
    return replace(demo, kernels=demo.slide_kernels(), corrections=())


@dataclass(frozen=True)
class CorrectionEffect:
    """Why a correction is needed: the map the slide's verbatim entry gives, and how many of its values
    differ from the output map the slide prints."""

    correction: Correction
    slide_map: Matrix
    differing: int
    total: int


def correction_effects(demo: ConvDemo) -> list[CorrectionEffect]:
    """For each correction of `demo`, the output map computed with the slide's text verbatim."""
    verbatim = as_given(demo)
    maps = convolve(verbatim.input, verbatim.kernels, verbatim.biases, verbatim.stride, verbatim.padding,
                    verbatim.mode).maps
    effects = []
    for c in demo.corrections:
        got = maps[c.kernel]
        expected = demo.expected[c.kernel] if demo.expected else None
        differing = sum(a != b for ra, rb in zip(got, expected or got) for a, b in zip(ra, rb))
        effects.append(CorrectionEffect(c, got, differing, len(got) * len(got[0])))
    return effects


def slide_agreement(spec: ConvSpec, maps: list[Matrix]) -> list[bool | None]:
    """Per output map: whether it equals the map the slide prints (None where the slide prints none or the
    spec no longer has the demo's values because an option overrode them)."""
    if spec.demo is None:
        return [None] * len(maps)
    d = get_demo(spec.demo)
    same = (spec.input, spec.kernels, spec.biases, spec.stride, spec.padding, spec.mode) == \
        (d.input, d.kernels, d.biases, d.stride, d.padding, d.mode)
    expected = d.expected or [None] * len(maps)
    return [None if not same or e is None else e == m for e, m in zip(expected, maps)]
