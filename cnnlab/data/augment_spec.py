"""The augmentation spec's grammar and every op's argument rules, checked when the spec is parsed — so a
wrong kind of argument (a range where a number is expected, or the reverse) or an out-of-range value is a
one-line ConfigError naming the token before any data is loaded or any run directory is written, never a
crash on the first batch. No torch here: TrainConfig.validate parses specs and stays light to import.

    token := NAME [":" ARG [":" ARG ...]] ["@" PROB]       ARG := NUMBER | NUMBER "-" NUMBER (a range)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError

DEFAULT_P = {"flip": 0.5, "erase": 0.5}
AFFINE = ("scale", "rrc", "rotate", "translate", "shear", "stretch")
NAMES = ("flip", "crop", "lens", "jitter", "pca", "erase") + AFFINE
SCALE_CROP = 224  # the ResNet recipe's crop: scale's lengths are short sides of at least this


@dataclass(frozen=True)
class Arg:
    """What one ARG field of an op must be: a number, an integer or a range LO-HI, within [lo, hi] (an
    open end excludes the bound), and what it means (for the error message)."""

    label: str
    kind: str
    lo: float
    hi: float
    meaning: str
    lo_open: bool = False
    hi_open: bool = False

    def expected(self) -> str:
        bounds = f"{'(' if self.lo_open else '['}{self.lo:g}, {'∞' if math.isinf(self.hi) else f'{self.hi:g}'}"
        bounds += ")" if self.hi_open or math.isinf(self.hi) else "]"
        kind = {"number": "a number", "integer": "an integer", "range": "a range LO-HI with both ends"}[self.kind]
        return f"{self.label}, {kind} in {bounds} ({self.meaning})"

    def holds(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below and (self.kind != "integer" or v == int(v))


# Each op's optional/required ARG fields: (how many are required, the rules of each position).
SIGNATURES: dict[str, tuple[int, tuple[Arg, ...]]] = {
    "flip": (0, ()),
    "crop": (1, (Arg("PAD", "integer", 1, 256, "zero padding in pixels"),)),
    "scale": (0, (Arg("LO-HI", "range", 0, math.inf, f"short-side lengths >= {SCALE_CROP}, e.g. 256-480, or "
                                                       "window fractions in (0, 1]", lo_open=True),)),
    "rrc": (0, (Arg("LO-HI", "range", 0, 1, "fractions of the image area", lo_open=True),)),
    "rotate": (1, (Arg("DEG", "number", 0, 180, "largest rotation in degrees"),)),
    "translate": (1, (Arg("FRAC", "number", 0, 1, "largest shift as a fraction of the width/height"),)),
    "shear": (1, (Arg("DEG", "number", 0, 90, "largest shear angle in degrees", hi_open=True),)),
    "stretch": (1, (Arg("FRAC", "number", 0, 1, "scale factors in [1 - FRAC, 1 + FRAC]", hi_open=True),)),
    "lens": (1, (Arg("K", "number", 0, 1, "largest distortion coefficient k in r(1 + k r^2)"),)),
    "jitter": (1, tuple(Arg(label, "number", 0, 1, f"{label.lower()} factors in [1 - v, 1 + v]")
                        for label in ("BRIGHTNESS", "CONTRAST", "SATURATION"))),
    "pca": (0, (Arg("SIGMA", "number", 0, 1, "std of the eigenvector weights; AlexNet 0.1"),)),
    "erase": (0, (Arg("LO-HI", "range", 0, 1, "fractions of the image area", lo_open=True),)),
}


@dataclass
class Op:
    """One parsed token: name, numeric args (a range arg is a (lo, hi) tuple) and probability."""

    name: str
    args: list = field(default_factory=list)
    p: float = 1.0


def _bad(token: str, why: str) -> ConfigError:
    return ConfigError(f"bad augmentation token {token!r}: {why}")


def _number(text: str, token: str) -> float:
    """A token's numeric field: finite and >= 0, else a ConfigError naming the token."""
    try:
        value = float(text)
    except ValueError:
        raise _bad(token, f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise _bad(token, f"{text!r} must be a finite number >= 0")
    return value


def _argument(raw: str, rule: Arg, name: str, token: str) -> float | tuple[float, float]:
    """One ARG field checked against its rule: kind first (number vs range), then the bounds."""
    text = raw.strip()
    is_range = "-" in text.strip("-")
    if is_range != (rule.kind == "range"):
        got = "a range" if is_range else "a single number"
        raise _bad(token, f"{name} expects {rule.expected()}, got {text!r} ({got})")
    if not is_range:
        value = _number(text, token)
        if not rule.holds(value):
            raise _bad(token, f"{name} expects {rule.expected()}, got {text!r}")
        return value
    lo_text, _, hi_text = text.partition("-")
    lo, hi = _number(lo_text, token), _number(hi_text, token)
    if lo > hi:
        raise _bad(token, f"range {text!r} has lo > hi")
    if not (rule.holds(lo) and rule.holds(hi)):
        raise _bad(token, f"{name} expects {rule.expected()}, got {text!r}")
    if name == "scale" and not (hi <= 1 or lo >= SCALE_CROP):
        raise _bad(token, f"scale expects {rule.expected()}, not a mix: got {text!r}")
    return (lo, hi)


def parse_spec(spec: str | list[str] | tuple[str, ...] | None) -> list[Op]:
    """Parse an augmentation spec into Ops; any malformed token, argument of the wrong kind or value out of
    its range raises a one-line ConfigError naming the token and what is expected."""
    if spec is None:
        return []
    if not isinstance(spec, (str, list, tuple)):
        raise ConfigError(f"augment must be a spec string or a list of tokens, got {spec!r}")
    tokens = spec.split(",") if isinstance(spec, str) else [t for s in spec for t in str(s).split(",")]
    tokens = [t.strip() for t in tokens if t.strip()]
    if len(tokens) == 1 and tokens[0].lower() == "none":
        return []
    ops = []
    for token in tokens:
        body, _, prob = token.partition("@")
        name, *raw = body.strip().lower().split(":")
        if name not in NAMES:
            raise _bad(token, f"unknown name {name!r}; known: {', '.join(NAMES)}")
        required, rules = SIGNATURES[name]
        if not required <= len(raw) <= len(rules):
            shape = ":".join([name] + [r.label for r in rules[:required]]
                             + [f"[{r.label}]" for r in rules[required:]])
            raise _bad(token, f"{name} takes {required}..{len(rules)} argument(s): {shape}")
        args = [_argument(a, rule, name, token) for a, rule in zip(raw, rules)]
        p = DEFAULT_P.get(name, 1.0)
        if "@" in token:
            p = _number(prob, token)
            if p > 1:
                raise _bad(token, f"probability must be in [0, 1], got {prob!r}")
        ops.append(Op(name, args, p))
    return ops


def format_spec(ops: list[Op]) -> str:
    """The parsed ops written back as a spec with every default made explicit: crop:4@1,scale:256-480@1."""
    def arg(a) -> str:
        return f"{a[0]:g}-{a[1]:g}" if isinstance(a, tuple) else f"{a:g}"

    return ",".join(f"{o.name}{''.join(':' + arg(a) for a in o.args)}@{o.p:g}" for o in ops)
