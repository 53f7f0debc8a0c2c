"""Every loader against tiny files built here: IDX (gz and raw), CIFAR binary, image folders, npz; corrupt
inputs give one-line DataErrors naming the file."""

from __future__ import annotations

import gzip
import struct
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import load_dataset
from cnnlab.data.cifar import CIFAR
from cnnlab.errors import DataError

RNG = np.random.default_rng(0)


def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_mnist(folder, n_train=40, n_test=20, gz=True, mutate=None):
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = RNG.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = np.arange(n, dtype=np.uint8) % 10
        data[prefix] = (x, y)
        for kind, arr, magic in (("images-idx3", x, 0x00000803), ("labels-idx1", y, 0x00000801)):
            raw = idx_bytes(arr, magic)
            name = f"{prefix}-{kind}-ubyte"
            if mutate:
                raw = mutate(name, raw)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
    return data


@pytest.mark.parametrize("gz", [True, False])
def test_idx_loader_reads_official_layout(tmp_path, gz):
    data = write_mnist(tmp_path / "m", gz=gz)
    ds = load_dataset("mnist", data_dir=tmp_path / "m", offline=True, seed=1)
    assert ds.image_shape == (1, 28, 28) and ds.classes == [str(i) for i in range(10)]
    assert len(ds.test) == 20 and len(ds.train) + len(ds.val) == 40
    assert torch.equal(ds.test.images[:, 0], torch.from_numpy(data["t10k"][0]))  # official test kept in order
    assert torch.equal(ds.test.labels, torch.from_numpy(data["t10k"][1]).long())
    # val carved stratified 60:20 from train, reproducible from the seed
    again = load_dataset("mnist", data_dir=tmp_path / "m", offline=True, seed=1)
    assert torch.equal(ds.val.images, again.val.images) and len(ds.val) == 10
    assert sorted(ds.val.labels.tolist()) == list(range(10))


def test_idx_fashion_classes_resize_channels_limit(tmp_path):
    write_mnist(tmp_path / "f")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "f", offline=True, image_size=32, channels=3,
                      limit_per_class=2)
    assert ds.classes[0] == "T-shirt/top" and ds.image_shape == (3, 32, 32)
    assert len(ds.test) == 20 and len(ds.train) + len(ds.val) == 20


@pytest.mark.parametrize("mutate,needle", [
    (lambda n, r: b"\x00\x00\x08\x02" + r[4:] if n == "train-images-idx3-ubyte" else r, "bad magic"),
    (lambda n, r: r[:-100] if n == "t10k-images-idx3-ubyte" else r, "truncated payload"),
    (lambda n, r: idx_bytes(np.zeros(39, np.uint8), 0x801) if n == "train-labels-idx1-ubyte" else r,
     "40 images but train-labels-idx1-ubyte.gz holds 39 labels"),
])
def test_idx_corrupt_files_one_line_error(tmp_path, mutate, needle):
    write_mnist(tmp_path / "m", mutate=mutate)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=tmp_path / "m", offline=True)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "ubyte" in msg


def test_offline_without_files_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="--offline"):
        load_dataset("kmnist", offline=True)
    assert not list((tmp_path / "home").rglob("*.part"))


def cifar_records(n, label_bytes):
    labels = np.arange(n) % (10 if label_bytes == 1 else 100)
    pix = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    lab = np.stack([labels // 5, labels] if label_bytes == 2 else [labels], 1).astype(np.uint8)
    return np.concatenate([lab, pix], 1), labels, pix


def test_cifar10_binary_folder(tmp_path):
    spec = CIFAR["cifar10"]
    d = tmp_path / "c" / spec["folder"]
    d.mkdir(parents=True)
    for name in spec["train"] + spec["test"]:
        rec, _, _ = cifar_records(20, 1)
        rec.tofile(d / name)
    rec, labels, pix = cifar_records(20, 1)
    rec.tofile(d / "test_batch.bin")
    ds = load_dataset("cifar10", data_dir=tmp_path / "c", offline=True)
    assert ds.image_shape == (3, 32, 32) and ds.classes[0] == "airplane"
    assert len(ds.train) + len(ds.val) == 100 and len(ds.test) == 20
    assert torch.equal(ds.test.images.reshape(20, -1), torch.from_numpy(pix))  # R plane, G plane, B plane
    assert ds.test.labels.tolist() == labels.tolist()


def test_cifar100_archive_fine_labels_and_truncation(tmp_path):
    spec = CIFAR["cifar100"]
    stage = tmp_path / "stage" / spec["folder"]
    stage.mkdir(parents=True)
    rec, labels, _ = cifar_records(200, 2)
    rec.tofile(stage / "train.bin")
    cifar_records(100, 2)[0].tofile(stage / "test.bin")
    (stage / "fine_label_names.txt").write_text("\n".join(f"c{i}" for i in range(100)) + "\n")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / spec["archive"], "w:gz") as tar:
        tar.add(stage, arcname=spec["folder"])
    ds = load_dataset("cifar100", data_dir=root, offline=True, checksums={spec["archive"]: None})
    assert ds.classes[7] == "c7" and ds.num_classes == 100
    assert sorted(torch.cat([ds.train.labels, ds.val.labels]).tolist()) == sorted(labels.tolist())
    with open(root / spec["folder"] / "test.bin", "r+b") as fh:
        fh.truncate(3073 * 3)
    with pytest.raises(DataError, match=r"test.bin: truncated payload"):
        load_dataset("cifar100", data_dir=root, offline=True)


def make_folder(root, layout):
    """layout: {class: [(fmt, mode, size), ...]}"""
    for cls, items in layout.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, (fmt, mode, size) in enumerate(items):
            arr = RNG.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            im = Image.fromarray(arr).convert(mode)
            im.save(root / cls / f"img{i}.{fmt}")


MIXED = [("jpg", "RGB", (40, 30)), ("png", "RGBA", (32, 32)), ("bmp", "L", (20, 50)), ("webp", "RGB", (64, 48)),
         ("png", "P", (33, 17))]


def test_image_folder_mixed_formats_modes_sizes(tmp_path):
    root = tmp_path / "pets"
    make_folder(root, {"cat": MIXED, "dog": MIXED, "emu": MIXED})
    (root / ".hidden").mkdir()
    (root / "cat" / "notes.txt").write_text("x")
    (root / "cat" / ".DS_Store").write_bytes(b"x")
    (root / "README.md").write_text("x")
    ds = load_dataset(str(root), image_size=24, fractions=(0.6, 0.2, 0.2))
    assert ds.classes == ["cat", "dog", "emu"] and ds.image_shape == (3, 24, 24)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 15
    assert ds.info["skipped"] == {"hidden": 2, "non_image_files": 2}
    sq = load_dataset(str(root), image_size=(16, 20), channels=1, resize="squash")
    assert sq.image_shape == (1, 16, 20)
    import json
    json.dumps(ds.info)


def test_image_folder_split_dirs_fixed_class_mapping(tmp_path):
    root = tmp_path / "d"
    make_folder(root / "train", {"a": MIXED[:2], "b": MIXED[:2], "c": MIXED[:2]})
    make_folder(root / "test", {"a": MIXED[:1], "c": MIXED[:1]})  # no "b" in test: labels must not shift
    ds = load_dataset(str(root), image_size=8, fractions=(0.5, 0.5, 0.0))
    assert ds.classes == ["a", "b", "c"] and sorted(ds.test.labels.tolist()) == [0, 2]
    assert len(ds.train) == 3 and len(ds.val) == 3


def test_image_folder_errors(tmp_path):
    root = tmp_path / "e"
    make_folder(root, {"a": MIXED[:1]})
    (root / "b").mkdir()
    with pytest.raises(DataError, match=r"b: empty class folder"):
        load_dataset(str(root))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken.png: undecodable image"):
        load_dataset(str(root))


def test_image_folder_memmap_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    root = tmp_path / "big"
    make_folder(root, {"a": MIXED * 2, "b": MIXED * 2})
    ram = load_dataset(str(root), image_size=16, memmap_bytes=10**12)
    mm = load_dataset(str(root), image_size=16, memmap_bytes=0)
    assert ram.info["memmap"] is None and mm.info["memmap"].endswith(".u8")
    assert torch.equal(ram.train.images, mm.train.images) and torch.equal(ram.test.images, mm.test.images)
    assert not list((tmp_path / "home").rglob("*.tmp"))
    again = load_dataset(str(root), image_size=16, memmap_bytes=0)  # reuses the cache file
    assert again.info["memmap"] == mm.info["memmap"]


def test_npz_layouts_and_errors(tmp_path):
    x = RNG.integers(0, 256, (30, 12, 12, 3), dtype=np.uint8)
    y = np.arange(30) % 3
    np.savez(tmp_path / "a.npz", x=x, y=y, classes=np.array(["r", "g", "b"]))
    ds = load_dataset(str(tmp_path / "a.npz"))
    assert ds.image_shape == (3, 12, 12) and ds.classes == ["r", "g", "b"]
    assert len(ds.train) == 18 and len(ds.val) == 6 and len(ds.test) == 6
    np.savez(tmp_path / "b.npz", x=x[..., 0].astype(np.float32) / 255, y=y, x_test=x[:6, ..., 0], y_test=y[:6])
    ds = load_dataset(str(tmp_path / "b.npz"))
    assert ds.image_shape == (1, 12, 12) and len(ds.test) == 6 and ds.train.images.dtype == torch.uint8
    np.savez(tmp_path / "c.npz", x=x, y=y[:5])
    with pytest.raises(DataError, match=r"c.npz: x holds 30 images but y holds 5 labels"):
        load_dataset(str(tmp_path / "c.npz"))
    (tmp_path / "d.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"d.npz: cannot read"):
        load_dataset(str(tmp_path / "d.npz"))


def test_resize_policies_by_content(tmp_path):
    """A 60×20 image of red | green | blue thirds: shorter-crop keeps the centre third, squash keeps all."""
    root = tmp_path / "wide"
    (root / "only").mkdir(parents=True)
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, :20, 0] = arr[:, 20:40, 1] = arr[:, 40:, 2] = 255
    for i in range(3):
        Image.fromarray(arr).save(root / "only" / f"w{i}.png")
    crop = load_dataset(str(root), image_size=20, fractions=(1.0, 0.0, 0.0)).train.images[0].int()
    assert (crop[1] == 255).all() and (crop[0] == 0).all() and (crop[2] == 0).all()
    squash = load_dataset(str(root), image_size=20, resize="squash", fractions=(1.0, 0.0, 0.0)).train.images[0]
    assert squash[0, :, :5].min() == 255 and squash[1, :, 8:12].min() == 255 and squash[2, :, -5:].min() == 255
    grey = load_dataset(str(root), image_size=20, channels=1, fractions=(1.0, 0.0, 0.0)).train.images[0]
    assert grey.shape == (1, 20, 20) and abs(int(grey[0, 10, 10]) - round(0.587 * 255)) <= 1  # green's luma


@pytest.mark.parametrize("present", [("val", "test"), ("val",)])
def test_image_folder_val_and_test_subfolders(tmp_path, present):
    root = tmp_path / "s"
    make_folder(root / "train", {"a": MIXED * 2, "b": MIXED * 2})  # 10 per class
    for split in present:
        make_folder(root / split, {"a": MIXED[:1], "b": MIXED[:2]})
    ds = load_dataset(str(root), image_size=8, fractions=(0.6, 0.1, 0.3))
    assert ds.val.labels.tolist() == [0, 1, 1]  # val/ used as given
    if "test" in present:
        assert len(ds.train) == 20 and ds.test.labels.tolist() == [0, 1, 1]
    else:  # test carved from train/ in the train:test ratio 60:30 (a third of each class), stratified
        assert sorted(ds.test.labels.tolist()) == [0, 0, 0, 1, 1, 1] and len(ds.train) == 14


def test_saved_class_mapping_is_reused_at_evaluation(tmp_path):
    make_folder(tmp_path / "train", {"a": MIXED[:3], "b": MIXED[:3], "c": MIXED[:3]})
    saved = load_dataset(str(tmp_path / "train"), image_size=8).classes
    make_folder(tmp_path / "eval", {"a": MIXED[:1], "c": MIXED[:1], "zebra": MIXED[:1]})  # no b; an extra class
    own = load_dataset(str(tmp_path / "eval"), image_size=8, fractions=(1.0, 0.0, 0.0))
    assert own.classes == ["a", "c", "zebra"]  # on its own the folder would shift c from 2 to 1
    ev = load_dataset(str(tmp_path / "eval"), image_size=8, fractions=(1.0, 0.0, 0.0), classes=saved)
    assert ev.classes == ["a", "b", "c"] and sorted(ev.train.labels.tolist()) == [0, 2]
    assert ev.info["skipped"] == {"unknown_class_dirs": 1}
    x, y = RNG.integers(0, 256, (12, 8, 8), dtype=np.uint8), np.arange(12) % 2  # npz without names
    np.savez(tmp_path / "u.npz", x=x, y=y)
    assert load_dataset(str(tmp_path / "u.npz"), classes=["no", "yes", "maybe"]).classes == ["no", "yes", "maybe"]
    write_mnist(tmp_path / "m")
    with pytest.raises(DataError, match="differ from the saved mapping"):
        load_dataset("mnist", data_dir=tmp_path / "m", offline=True, classes=["x", "y"])


def test_corrupt_image_leaves_no_half_written_memmap(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    root = tmp_path / "c"
    make_folder(root, {"a": MIXED, "b": MIXED})
    good = (root / "b" / "img1.png").read_bytes()
    (root / "b" / "img1.png").write_bytes(good[:len(good) // 2])  # header fine, pixels cut
    with pytest.raises(DataError, match=r"img1.png: undecodable image") as err:
        load_dataset(str(root), image_size=16, memmap_bytes=0)
    assert "\n" not in str(err.value)
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file()]


def test_cifar_incomplete_user_folder_is_never_deleted(tmp_path):
    spec = CIFAR["cifar10"]
    user = tmp_path / "c" / spec["folder"]
    user.mkdir(parents=True)
    (user / "data_batch_1.bin").write_bytes(b"mine")
    (tmp_path / "c" / spec["archive"]).write_bytes(b"not checked here")
    with pytest.raises(DataError, match=r"lacks data_batch_2.bin"):
        load_dataset("cifar10", data_dir=tmp_path / "c", offline=True, checksums={spec["archive"]: None})
    assert (user / "data_batch_1.bin").read_bytes() == b"mine"
