"""Fuzzing the parsers with hypothesis, time-boxed (a few seconds each; CNNLAB_FUZZ_SCALE=N multiplies the
examples for a longer hunt): IDX, CIFAR binary, .npz, notation strings, augmentation specs, config files and
the conv explainer's matrices. Every input either parses or raises a CnnlabError, never another exception.

Each crash the fuzzers found became a case of the bad-input corpus (test_bad_inputs*.py) and is fixed at its
source; the examples pinned with @example below are those crashes, so that they are tried on every run."""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnlab.errors import CnnlabError

SCALE = float(os.environ.get("CNNLAB_FUZZ_SCALE", "1"))


def fuzz(examples: int):
    """Hypothesis settings for one fuzzer: `examples` (times CNNLAB_FUZZ_SCALE), no deadline (a loaded CI
    machine is slow), no example database written into the checkout."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _file(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


# --- IDX ---------------------------------------------------------------------------------------------------------

@st.composite
def idx_files(draw) -> bytes:
    """Mostly well-formed headers (so the fuzzer gets past the magic) with wrong or huge dims and short or
    long payloads; sometimes raw bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=64))
    ndim = draw(st.integers(0, 6))
    dims = draw(st.lists(st.one_of(st.integers(0, 5), st.integers(0, 2**32 - 1)), min_size=ndim, max_size=ndim))
    head = bytes([0, 0, draw(st.sampled_from([0x08, 0x08, 0x09, 0x0D])), ndim])
    need = int(np.prod(dims, dtype=object)) if dims else 0
    payload = draw(st.binary(max_size=min(need, 200) + 3)) if need < 10**6 else draw(st.binary(max_size=16))
    return head + struct.pack(f">{ndim}I", *dims) + payload


@fuzz(300)
@given(raw=idx_files(), gz=st.booleans(), magic=st.sampled_from([None, 0x803, 0x801]))
@example(raw=b"\x00\x00\x08\x03" + b"\xff" * 12, gz=False, magic=None)  # dims overflowing an int64 product
@example(raw=b"\x00\x00\x08\x03" + struct.pack(">3I", 60000, 1 << 20, 1 << 20), gz=True, magic=None)
@example(raw=b"\x00\x00\x08\x04" + struct.pack(">4I", 0, 1 << 29, 1 << 29, 1 << 29), gz=False, magic=None)  # numpy
def test_fuzz_idx(raw, gz, magic):
    from cnnlab.data.idx import read_idx

    path = _file(gzip.compress(raw) if gz else raw, "f.gz" if gz else "f")
    try:
        arr = read_idx(path, magic)
    except CnnlabError:
        return
    assert arr.dtype == np.uint8 and arr.size == len(raw) - 4 - 4 * raw[3]


@fuzz(60)
@given(raw=st.binary(max_size=300))
def test_fuzz_idx_as_a_broken_gzip(raw):
    from cnnlab.data.idx import read_idx

    try:
        read_idx(_file(b"\x1f\x8b\x08\x00" + raw, "f.gz"))  # a gzip magic, then anything
    except CnnlabError:
        pass


# --- CIFAR binary ------------------------------------------------------------------------------------------------

@fuzz(100)
@given(records=st.integers(0, 3), extra=st.binary(max_size=40), label_bytes=st.sampled_from([1, 2]),
       labels=st.lists(st.integers(0, 255), min_size=6, max_size=6))
def test_fuzz_cifar_binary(records, extra, label_bytes, labels):
    from cnnlab.data.cifar import CIFAR, read_cifar

    name = "cifar10" if label_bytes == 1 else "cifar100"
    spec = CIFAR[name]
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-"))
    for i, fname in enumerate(spec["train"] + spec["test"]):
        rows = [bytes([labels[(i + r) % 6]] * label_bytes) + bytes(3072) for r in range(records)]
        (folder / fname).write_bytes(b"".join(rows) + (extra if i == 0 else b""))
    try:
        xtr, ytr, xte, yte, classes = read_cifar(folder, spec)
    except CnnlabError:
        return
    assert xtr.shape[1:] == (3, 32, 32) and int(max(ytr.max(), yte.max())) < len(classes)


# --- .npz --------------------------------------------------------------------------------------------------------

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int64, np.int8, np.float32, np.float64, np.complex64, np.bool_])


@st.composite
def npz_arrays(draw) -> dict:
    """x / y (and sometimes x_test / y_test / classes) of random dtypes, ranks and lengths."""
    n = draw(st.integers(0, 12))
    out = {}
    for key, default_shape in (("x", (n, 4, 4)), ("y", (n,)), ("x_test", (n, 4, 4)), ("y_test", (n,))):
        if key.endswith("test") and not draw(st.booleans()):
            continue
        if draw(st.integers(0, 9)) == 0:
            continue  # missing key
        shape = default_shape if draw(st.booleans()) else tuple(draw(hnp.array_shapes(min_dims=0, max_dims=5,
                                                                                        max_side=5)))
        dtype = np.int64 if key.startswith("y") and draw(st.booleans()) else draw(DTYPES)
        elements = None
        if np.dtype(dtype).kind in "iu" and key.startswith("y"):
            elements = st.integers(0, 3) if draw(st.booleans()) else None
        out[key] = draw(hnp.arrays(dtype, shape, elements=elements))
    if draw(st.integers(0, 4)) == 0:
        out["classes"] = np.array(draw(st.lists(st.text(min_size=1, max_size=3), max_size=4)), dtype=str)
    return out


@fuzz(150)
@given(arrays=npz_arrays(), size=st.sampled_from([None, 6]))
@example(arrays={"x": np.array(0, np.uint8), "y": np.array(0, np.uint8)}, size=None)  # 0-d: TypeError len()
@example(arrays={"x": np.zeros((0, 4, 4), np.uint8), "y": np.array(0, np.uint8)}, size=None)
def test_fuzz_npz(arrays, size):
    from cnnlab.data import load_dataset

    folder = Path(tempfile.mkdtemp(prefix="cnnlab-fuzz-"))
    np.savez(folder / "d.npz", **arrays)
    try:
        ds = load_dataset(str(folder / "d.npz"), image_size=size)
    except CnnlabError:
        return
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape[1:] == ds.test.images.shape[1:]


# --- notation ----------------------------------------------------------------------------------------------------

NUMBER = st.one_of(st.integers(0, 9), st.integers(0, 100), st.integers(0, 10**12)).map(str)


@st.composite
def notation_token(draw) -> str:
    kind = draw(st.sampled_from(["conv", "dwconv", "maxpool", "avgpool", "fc", "fc-", "dropout", "gap", "gmp",
                                 "bn", "lrn", "flatten", "relu", "tanh", "softmax", "junk"]))
    if kind in ("conv", "dwconv"):
        tok = f"{kind}{draw(NUMBER)}" + (f"-{draw(NUMBER)}" if kind == "conv" or draw(st.booleans()) else "")
        for letter in draw(st.lists(st.sampled_from(["s", "p", "x"]), max_size=3)):
            tok += letter + draw(st.one_of(NUMBER, st.just("same")))
        return tok
    if kind in ("maxpool", "avgpool"):
        return kind + draw(st.one_of(st.just(""), NUMBER)) + draw(st.sampled_from(["", "s2", "p1", "s0", "p9"]))
    if kind in ("fc", "fc-"):
        return kind + draw(NUMBER)
    if kind == "dropout":
        return kind + draw(st.sampled_from(["", "0.5", ".3", "1", "1.5", "-0.2", "."]))
    if kind == "junk":
        return draw(st.text(alphabet="convfdpl0123456789-.sxy ", max_size=8))
    return kind


@fuzz(300)
@given(tokens=st.lists(notation_token(), min_size=1, max_size=6), sep=st.sampled_from([" > ", ",", "\n", ">>"]),
       size=st.integers(1, 40), channels=st.integers(1, 3), classes=st.one_of(st.none(), st.integers(0, 20)))
@example(tokens=["conv3-99999999", "fc10"], sep=" > ", size=32, channels=3, classes=None)
@example(tokens=["conv9-1000000000000", "conv9-1000000000000"], sep=",", size=9, channels=1, classes=None)  # int64
@example(tokens=["conv1-1p1000000000000"], sep=",", size=1, channels=1, classes=None)  # output overflowed int64
def test_fuzz_notation(tokens, sep, size, channels, classes):
    from cnnlab.layers import meta_device
    from cnnlab.models.notation import build_from_notation

    spec = sep.join(tokens)
    try:
        with meta_device():
            model = build_from_notation(spec, num_classes=classes, in_channels=channels, input_size=size)
    except CnnlabError:
        return
    assert model.num_classes >= 1


@fuzz(150)
@given(text=st.text(max_size=40))
def test_fuzz_notation_free_text(text):
    from cnnlab.models.notation import parse

    try:
        parse(text)
    except CnnlabError:
        pass


# --- augmentation specs --------------------------------------------------------------------------------------------

AUG_NAMES = ["flip", "crop", "scale", "rrc", "rotate", "translate", "shear", "stretch", "lens", "jitter", "pca",
             "erase", "none", "blur"]
AUG_ARG = st.one_of(st.sampled_from(["", "0", "1", "4", "0.5", "-1", "nan", "inf", "1e9", "2-1", "0.1-0.9",
                                     "1-", "-", "a"]), st.floats(allow_nan=True).map(str))


@st.composite
def augment_spec(draw) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        tok = draw(st.sampled_from(AUG_NAMES))
        for _ in range(draw(st.integers(0, 3))):
            tok += ":" + draw(AUG_ARG)
        if draw(st.booleans()):
            tok += "@" + draw(AUG_ARG)
        parts.append(tok)
    return ",".join(parts)


@pytest.fixture(scope="module")
def tiny_dataset():
    from cnnlab.data import load_dataset

    return load_dataset("digits", image_size=8, limit_per_class=3)


@fuzz(150)
@given(spec=augment_spec())
def test_fuzz_augmentation_spec_parses_or_refuses(spec):
    from cnnlab.data.augment import parse_spec

    try:
        parse_spec(spec)
    except CnnlabError:
        pass


@fuzz(100)
@given(spec=augment_spec(), seed=st.integers(0, 2**32 - 1))
def test_fuzz_augmentation_spec_builds_and_runs_or_refuses(spec, seed, tiny_dataset):
    from cnnlab.data.augment import build_augmentation

    try:
        augment = build_augmentation(spec, tiny_dataset)
    except CnnlabError:
        return
    batch = tiny_dataset.train.images[:4]
    if augment is not None:
        out = augment(batch, torch.Generator().manual_seed(seed))
        assert out.shape == batch.shape


# --- config files --------------------------------------------------------------------------------------------------

CONFIG_KEYS = st.sampled_from(["lr", "epochs", "batch_size", "momentum", "seed", "augment", "model_opts", "image_size",
                               "ema", "dropout", "schedule", "warmup_epochs", "channels", "pad", "nope", "model"])
YAML_VALUES = st.sampled_from(["0", "1", "-1", "0.5", "1e400", "-1e400", ".nan", ".inf", "-.inf", "true", "null",
                               "[]", "{}", "[1, 2]", "'x'", "lenet5", "!!binary aGk=", "0x10", "1_000", "2.5e-3",
                               "99999999999999999999999", "{a: 1}", "&a [*a]", "!!python/name:os.system"])


@fuzz(200)
@given(items=st.lists(st.tuples(CONFIG_KEYS, YAML_VALUES), max_size=5), junk=st.text(max_size=20))
@example(items=[("epochs", ".inf")], junk="")  # int(float("inf")): OverflowError before the fix
@example(items=[("epochs", "1e400")], junk="")
def test_fuzz_config_file(items, junk):
    from cnnlab.train.config import TrainConfig

    text = "".join(f"{k}: {v}\n" for k, v in items) + (("# " + junk.replace("\n", " ")) if junk else "")
    try:
        TrainConfig.load(_file(text.encode(), "c.yaml"))
    except CnnlabError:
        pass


@fuzz(100)
@given(text=st.text(max_size=60))
def test_fuzz_config_free_text(text):
    from cnnlab.train.config import TrainConfig

    try:
        TrainConfig.load(_file(text.encode("utf-8", "surrogatepass"), "c.yaml"))
    except CnnlabError:
        pass


# --- the conv explainer's matrices -----------------------------------------------------------------------------------

CELL = st.one_of(st.integers(-9, 9).map(str), st.sampled_from(["1/2", "-1/3", "0.25", "1/0", "nan", "inf", "x", "",
                                                              "1e5000", "3/", "--1", "1e300", "9" * 40]))


@st.composite
def matrix_text(draw) -> str:
    channels = []
    for _ in range(draw(st.integers(1, 3))):
        rows = [" ".join(draw(st.lists(CELL, min_size=0, max_size=4))) for _ in range(draw(st.integers(0, 4)))]
        channels.append(";".join(rows))
    return "|".join(channels)


@fuzz(200)
@given(x=matrix_text(), k=matrix_text(), stride=st.integers(-1, 4), padding=st.integers(-1, 3),
       pool=st.sampled_from([None, "max", "avg"]), pool_size=st.one_of(st.none(), st.integers(0, 4)),
       bias=st.one_of(st.none(), st.lists(CELL, min_size=1, max_size=2)))
@example(x="0", k="0", stride=1, padding=0, pool=None, pool_size=None, bias=["1e5000"])  # str() past 4300 digits
@example(x="1e999999999", k="1", stride=1, padding=0, pool=None, pool_size=None, bias=None)  # a billion digits
def test_fuzz_conv_matrices(x, k, stride, padding, pool, pool_size, bias):
    from cnnlab.analysis.conv_explainer import conv_spec, pool as pool_map

    try:
        spec = conv_spec(x, [k], bias, stride, padding, None, pool, pool_size, None)
        result = spec.run()
        if spec.pool:
            for m in result.maps:
                pool_map(m, spec.pool, spec.pool_size, spec.pool_stride)
    except CnnlabError:
        pass
