"""The lectures' layer notation as a way to write a network, e.g. the LeNet300-to-conv progression
`conv5-6p2 > relu > maxpool2 > conv5-16p2 > relu > maxpool2 > fc100 > relu > fc10`, or the VGG paper's
table `conv3-64, conv3-64, maxpool, ..., FC-4096, FC-4096, FC-1000, soft-max`.

Grammar (case-insensitive; tokens separated by `>`, `,` or new lines; whitespace ignored):

    conv<k>-<n>[s<s>][p<p>|psame]   k x k convolution with n filters, stride s (default 1), padding p;
                                    without p the padding is "same" (k // 2, odd k only), as the VGG
                                    table assumes; write p0 for a "valid" convolution (LeNet-5's C1).
    dwconv<k>[-<n>][s<s>][p<p>|psame]  depthwise k x k convolution (MobileNet's "conv dw"): groups = C,
                                    each input channel filtered on its own, no mixing across channels.
                                    n filters as for conv, default C (one per channel); n must be a
                                    multiple of C (n / C is the channel multiplier). Stride and padding
                                    as for conv. C*k*k*(n/C) + n parameters: `dwconv3` on 64 channels has
                                    64*9 + 64 = 640, and `dwconv3 > conv1-128` (a depthwise-separable
                                    layer) 640 + 64*128 + 128 = 8,960 against conv3-128's 73,856.
    maxpool[<k>][s<s>][p<p>]        max pooling, k default 2, stride default k (the VGG table's maxpool)
    avgpool[<k>][s<s>][p<p>]        average pooling, same defaults
    gap | gmp                       global average / max pooling (to C x 1 x 1)
    fc<n> | fc-<n>                  fully connected layer with n units
    bn                              batch norm (2-D on feature maps, 1-D after an fc)
    dropout[<p>]                    dropout, p default 0.5 (dropout0.3, dropout.3)
    lrn                             AlexNet's local response normalisation
    flatten                         explicit flatten (otherwise inserted before the first fc)
    identity, sigmoid, tanh, relu, leaky_relu, prelu, elu, softplus   activations (the lectures' table)
    softmax | soft-max              accepted only as the last token and dropped: models output logits

The model's `features` are the layers before the first fc (or flatten), its `classifier` the rest,
starting with a Flatten. If the last layer (ignoring softmax) is an fc, it is the classifier: an
explicitly given num_classes overrides its width (as `reset_classifier` would), otherwise num_classes is
its width. If it is not, a model to train needs one: Flatten + fc(num_classes, default 10) is appended.
With `append_classifier=False` (what `cnnlab summary` and `compare` use) nothing is appended: the model
is exactly the layers written, and a stack without a final fc outputs its last feature map.

A notation string has no canonical input, so `input_size` (H, W) must be given (`in_channels` defaults
to 3); the CLI's `--input CxHxW` is the same requirement. The geometry (W - F + 2P)/S + 1 of every
conv/pool is checked while building, before any forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError, GeometryError
from ..layers import ACTIVATIONS, init_weights, make_activation, make_lrn, module_output_shape, resolve_init
from .base import SequentialNet

DEFAULT_NUM_CLASSES = 10
# ">" or "," or a line break; a ">"/"," at either end of a line break counts with it as one.
_SEP = re.compile(r"[>,]?[ \t]*\n\s*[>,]?|[>,]")
_CONV = re.compile(r"conv(\d+)-(\d+)(.*)")
_DWCONV = re.compile(r"dwconv(\d+)(?:-(\d+))?(.*)")
_POOL = re.compile(r"(max|avg)pool(\d*)(.*)")
_FC = re.compile(r"fc-?(\d+)")
_DROPOUT = re.compile(r"dropout-?(\d*\.?\d*)")
_SUFFIX = re.compile(r"([sp])(\d+|same)")
_EXPECTED = ("expected conv<k>-<n>[s<s>][p<p>], dwconv<k>[-<n>][s<s>][p<p>], maxpool[<k>][s<s>], "
             "avgpool[<k>][s<s>], gap, gmp, fc<n>, "
             "bn, dropout[<p>], lrn, flatten, softmax or an activation (" + ", ".join(ACTIVATIONS) + ")")


class NotationError(ConfigError):
    """A malformed notation string, reported with the bad token and its 1-based position."""


@dataclass(frozen=True)
class Token:
    """One parsed layer: its kind (conv, dwconv, pool, gap, fc, bn, dropout, lrn, flatten, act, softmax)."""

    kind: str
    text: str
    pos: int
    args: tuple = ()


def _bad(text: str, pos: int, why: str) -> NotationError:
    return NotationError(f"notation: bad token {text!r} at position {pos}: {why}")


MAX_SIZE = 2**31 - 1  # kernel, filter, unit, stride and padding counts: PyTorch's layers take 32-bit sizes


def _checked_ints(t: str, text: str, pos: int) -> None:
    """Every number in token `t` (normalised from `text`) fits a layer's size (2**31 - 1): a typo such as
    conv3-99999999999 is a one-line error, not an overflow deep inside PyTorch."""
    for digits in re.findall(r"\d+", t):
        if int(digits) > MAX_SIZE:
            raise _bad(text, pos, f"{digits} is too large (sizes are at most {MAX_SIZE:,})")


def _suffixes(rest: str, text: str, pos: int, allowed: str, head: str) -> dict[str, str]:
    """Parse `s2p1`-style suffixes; `allowed` lists the letters this layer takes."""
    out: dict[str, str] = {}
    i = 0
    while i < len(rest):
        m = _SUFFIX.match(rest, i)
        if not m or m.group(1) not in allowed:
            opts = " and ".join({"s": "s<stride>", "p": "p<padding>"}[c] for c in allowed)
            raise _bad(text, pos, f"after {head!r} only {opts} may follow, got {rest[i:]!r}")
        letter, value = m.groups()
        if letter in out:
            raise _bad(text, pos, f"{letter!r} given twice")
        if value == "same" and letter != "p":
            raise _bad(text, pos, "only padding may be 'same'")
        out[letter] = value
        i = m.end()
    return out


def _conv_token(kind: str, m: re.Match, text: str, pos: int) -> Token:
    """A conv or dwconv token from its regex match: args (kernel, filters or None, stride, padding).

    A dwconv without -<n> has filters None: one per input channel, known only when building."""
    k, n, rest = int(m.group(1)), (int(m.group(2)) if m.group(2) else None), m.group(3)
    head = f"{kind}{k}" + (f"-{n}" if n is not None else "")
    sfx = _suffixes(rest, text, pos, "sp", head)
    if k < 1 or n == 0:
        raise _bad(text, pos, "kernel size and filter count must be at least 1")
    stride = int(sfx.get("s", 1))
    if stride < 1:
        raise _bad(text, pos, "stride must be at least 1")
    pad = sfx.get("p", "same")
    if pad == "same":
        if k % 2 == 0:
            raise _bad(text, pos, f"an even kernel ({k}) has no symmetric 'same' padding; give p<padding>")
        pad = k // 2
    return Token(kind, text, pos, (k, n, stride, int(pad)))


def _pool_token(m: re.Match, text: str, pos: int) -> Token:
    """A max/avg pool token: args (max|avg, kernel (default 2), stride (default kernel), padding)."""
    kind, k = m.group(1), int(m.group(2) or 2)
    sfx = _suffixes(m.group(3), text, pos, "sp", f"{kind}pool{m.group(2)}")
    if sfx.get("p") == "same":
        raise _bad(text, pos, "pooling padding must be a number")
    stride = int(sfx.get("s", k))
    if k < 1 or stride < 1:
        raise _bad(text, pos, "pooling kernel and stride must be at least 1")
    return Token("pool", text, pos, (kind, k, stride, int(sfx.get("p", 0))))


def parse(spec: str) -> list[Token]:
    """Tokenise and validate a notation string, without building anything."""
    if not isinstance(spec, str) or not spec.strip():
        raise NotationError("notation: empty network description")
    parts = _SEP.split(spec.strip())
    tokens: list[Token] = []
    for pos, raw in enumerate(parts, start=1):
        text = raw.strip()
        t = re.sub(r"\s+", "", text).lower().replace("'", "").replace('"', "")
        if not t:
            raise _bad(text, pos, "empty token (two separators in a row or a trailing separator)")
        if not t.startswith("dropout"):
            _checked_ints(t, text, pos)
        if m := _CONV.fullmatch(t):
            tokens.append(_conv_token("conv", m, text, pos))
        elif m := _DWCONV.fullmatch(t):
            tokens.append(_conv_token("dwconv", m, text, pos))
        elif m := _POOL.fullmatch(t):
            tokens.append(_pool_token(m, text, pos))
        elif t in ("gap", "gmp"):
            tokens.append(Token("gap", text, pos, (t,)))
        elif m := _FC.fullmatch(t):
            if int(m.group(1)) < 1:
                raise _bad(text, pos, "an fc layer needs at least 1 unit")
            tokens.append(Token("fc", text, pos, (int(m.group(1)),)))
        elif m := _DROPOUT.fullmatch(t):
            p = float(m.group(1)) if m.group(1) not in ("", ".") else 0.5
            if not 0.0 <= p < 1.0:
                raise _bad(text, pos, f"dropout probability must be in [0, 1), got {m.group(1)}")
            tokens.append(Token("dropout", text, pos, (p,)))
        elif t in ("bn", "batchnorm", "lrn", "flatten"):
            tokens.append(Token({"batchnorm": "bn"}.get(t, t), text, pos))
        elif t in ("softmax", "soft-max"):
            if pos != len(parts):
                raise _bad(text, pos, "softmax may only be the last token (models output logits)")
            tokens.append(Token("softmax", text, pos))
        elif t.replace("-", "_") in ACTIVATIONS:
            tokens.append(Token("act", text, pos, (t.replace("-", "_"),)))
        else:
            raise _bad(text, pos, _EXPECTED)
    return tokens


class NotationNet(SequentialNet):
    """A network written in the lectures' notation: `features` (spatial layers) and `classifier`
    (Flatten, then the fc part); `spec` keeps the normalised description.

    A stack built with append_classifier=False may have no final fc (`has_classifier` False): its
    forward is then exactly the written layers, and it has no classifier to get or reset."""

    def __init__(self, spec: str, features: nn.Sequential, classifier: nn.Sequential, num_classes: int,
                 in_channels: int, input_size: tuple[int, int]):
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = num_classes, in_channels, tuple(input_size)
        self.spec = spec
        self.features = features
        self.classifier = classifier
        self.has_classifier = len(classifier) > 0 and isinstance(classifier[-1], nn.Linear)
        self.classifier_name = f"classifier.{len(classifier) - 1}"

    def forward_head(self, x, pre_logits: bool = False):
        if not len(self.classifier):  # a bare stack of feature layers: its output is the last feature map
            return x
        if pre_logits and not self.has_classifier:
            return self.classifier(x)
        return super().forward_head(x, pre_logits)

    def get_classifier(self) -> nn.Linear:
        if not self.has_classifier:
            raise ConfigError(f"notation {self.spec!r} was built without a classifier (it does not end in fc<n>)")
        return super().get_classifier()

    def reset_classifier(self, num_classes: int) -> None:
        self.get_classifier()  # the same one-line error for a stack without one
        super().reset_classifier(num_classes)

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}"


# No machine holds a layer of more values than this (2^50 float32 values are 4 PiB); past it, even the meta
# device's shape arithmetic overflows int64, so such a layer is refused by name before it is created.
MAX_LAYER_VALUES = 2**50


def _check_values(tok: Token, what: str, count: int) -> None:
    if count > MAX_LAYER_VALUES:
        from ..utils.limits import human_bytes, short_int

        raise _bad(tok.text, tok.pos, f"its {what} would hold {short_int(count)} values ({human_bytes(4 * count)}), "
                                      f"more than any machine's memory")


def _spatial(tok: Token, shape: tuple[int, int, int], index: int) -> tuple[nn.Module, tuple[int, int, int]]:
    """The module for a feature-map layer and its output shape, geometry checked."""
    c = shape[0]
    if tok.kind in ("conv", "dwconv"):
        k, n, s, p = tok.args
        _check_values(tok, "weights", (n or c) * (1 if tok.kind == "dwconv" else c) * k * k)
        _check_values(tok, "output", (n or c) * (shape[1] + 2 * p) * (shape[2] + 2 * p))
    if tok.kind == "conv":
        k, n, s, p = tok.args
        module: nn.Module = nn.Conv2d(c, n, k, stride=s, padding=p)
    elif tok.kind == "dwconv":
        k, n, s, p = tok.args
        n = c if n is None else n
        if n % c:
            raise _bad(tok.text, tok.pos, f"a depthwise conv's filter count must be a multiple of its {c} "
                                          f"input channels (n / C filters per channel), got {n}")
        module = nn.Conv2d(c, n, k, stride=s, padding=p, groups=c)
    elif tok.kind == "pool":
        kind, k, s, p = tok.args
        if 2 * p > k:
            raise _bad(tok.text, tok.pos, f"pooling padding {p} is more than half the kernel {k}")
        module = nn.MaxPool2d(k, s, p) if kind == "max" else nn.AvgPool2d(k, s, p)
    elif tok.kind == "gap":
        module = nn.AdaptiveAvgPool2d(1) if tok.args[0] == "gap" else nn.AdaptiveMaxPool2d(1)
    elif tok.kind == "bn":
        module = nn.BatchNorm2d(c)
    elif tok.kind == "lrn":
        module = make_lrn()
    elif tok.kind == "dropout":
        module = nn.Dropout(tok.args[0])
    else:  # act
        module = make_activation(tok.args[0])
    name = f"{tok.text!r} at position {tok.pos} (features.{index})"
    return module, module_output_shape(module, shape, name=name)


def _layers(body: list[Token], shape: tuple[int, int, int]
            ) -> tuple[list[nn.Module], list[nn.Module], tuple[int, int, int], int | None]:
    """The feature modules (up to the first fc/flatten) and classifier modules of the parsed layers,
    every conv/pool's geometry checked; returns them with the last feature shape and the flat width
    (None if nothing flattened)."""
    features: list[nn.Module] = []
    classifier: list[nn.Module] = []
    width: int | None = None  # set once flattened
    for tok in body:
        if width is None and tok.kind in ("fc", "flatten"):
            classifier.append(nn.Flatten())
            width = shape[0] * shape[1] * shape[2]
            if tok.kind == "flatten":
                continue
        if width is None:
            module, shape = _spatial(tok, shape, len(features))
            features.append(module)
        elif tok.kind in ("conv", "dwconv", "pool", "gap", "lrn", "flatten"):
            raise _bad(tok.text, tok.pos, f"a {tok.kind} layer cannot follow the flatten/fc part of the network")
        elif tok.kind == "fc":
            _check_values(tok, "weights", width * tok.args[0])
            classifier.append(nn.Linear(width, tok.args[0]))
            width = tok.args[0]
        elif tok.kind == "bn":
            classifier.append(nn.BatchNorm1d(width))
        elif tok.kind == "dropout":
            classifier.append(nn.Dropout(tok.args[0]))
        else:
            classifier.append(make_activation(tok.args[0]))
    return features, classifier, shape, width


def _close_classifier(last: Token, classifier: list[nn.Module], shape: tuple[int, int, int],
                      width: int | None, num_classes: int | None, append: bool = True) -> int:
    """Make the classifier end in a Linear with the model's class count (in place); returns that count.

    A final fc is the classifier (an explicit num_classes overrides its width); otherwise Flatten (if
    not yet flattened) + fc(num_classes, default 10) is appended — unless `append` is False, when the
    layers stay as written and the count is 0 (no classifier)."""
    if last.kind == "fc":
        if num_classes is not None and num_classes != classifier[-1].out_features:
            classifier[-1] = nn.Linear(classifier[-1].in_features, num_classes)
        return classifier[-1].out_features
    if not append:
        return 0
    num_classes = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
    if width is None:
        classifier.append(nn.Flatten())
        width = shape[0] * shape[1] * shape[2]
    classifier.append(nn.Linear(width, num_classes))
    return num_classes


def build_from_notation(spec: str, num_classes: int | None = None, in_channels: int = 3,
                        input_size: tuple[int, int] | int | None = None, init: str = "auto",
                        append_classifier: bool = True, **options) -> NotationNet:
    """Build a `NotationNet` from a notation string for in_channels x H x W inputs (`input_size` (H, W)
    or an int for a square; required: a notation has no canonical input size).

    `init`: kaiming, xavier, default (PyTorch's) or auto (kaiming if the first activation is
    ReLU-like, else xavier). `append_classifier=False`: build only the layers written (for analysis)."""
    if options:
        raise ConfigError(f"a notation model has no option {next(iter(options))!r}; its options: init='auto', "
                          "append_classifier=True")
    if not isinstance(append_classifier, bool):
        raise ConfigError(f"append_classifier must be true or false, got {append_classifier!r}")
    tokens = parse(spec)
    if input_size is None:
        raise ConfigError("a notation model needs its input size: input_size=(H, W) (in_channels defaults to 3), "
                          "e.g. build_model(spec, in_channels=3, input_size=224); it has no canonical input")
    if isinstance(input_size, int):
        input_size = (input_size, input_size)
    if len(input_size) != 2:
        raise ConfigError(f"input_size must be (H, W) or one int, got {input_size!r}")
    input_size = (int(input_size[0]), int(input_size[1]))
    if in_channels < 1 or min(input_size) < 1 or (num_classes is not None and num_classes < 1):
        raise ConfigError("in_channels, input_size and num_classes must be positive")
    body = [t for t in tokens if t.kind != "softmax"]
    if not body:
        raise NotationError("notation: the network has no layers besides softmax")

    try:
        features, classifier, shape, width = _layers(body, (in_channels, *input_size))
    except GeometryError as exc:
        raise GeometryError(f"notation for {in_channels}x{input_size[0]}x{input_size[1]} inputs: {exc}") from None
    num_classes = _close_classifier(body[-1], classifier, shape, width, num_classes, append_classifier)

    canonical = " > ".join(t.text for t in tokens)
    model = NotationNet(canonical, nn.Sequential(*features), nn.Sequential(*classifier), int(num_classes),
                        in_channels, input_size)
    first_act = next((t.args[0] for t in body if t.kind == "act"), "identity")
    init_weights(model, resolve_init(init, first_act))
    return model
