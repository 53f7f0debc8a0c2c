"""The bad-input corpus, part 3: weights, checkpoints and run directories. A finished run is copied per case,
damaged, and resumed through the real CLI: exit 2, one line naming the file, nothing in the run changed,
nothing executed. (Damages tests/test_first_hour.py already covers — a corrupt pointer, a pointer to
../../model.safetensors, a missing or truncated state file, a two-byte weights file, a broken config.yaml —
are not repeated.) Then the archive members, the kept weights a `Run` loads, a disk that fills while a
checkpoint is written, and the temporary files of killed writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from test_bad_inputs import Evil, assert_refused, cnnlab, marker_of, snapshot
from test_bad_inputs_config import _can_mount, tmpfs

from cnnlab.errors import CnnlabError, ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
RUN_CFG = dict(epochs=1, threads=1, quiet=True, limit_per_class=8, checkpoint_every=3)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished LeNet-5 run on the digits (its last checkpoint kept, as every run keeps it)."""
    from cnnlab.train import train

    out = tmp_path_factory.mktemp("finished") / "run"
    train(**RUN_CFG, out=str(out))
    assert (out / "checkpoints" / "latest.json").is_file()
    return out


def latest(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "latest.json").read_text())


def ckpt_file(run: Path, key: str) -> Path:
    return run / "checkpoints" / latest(run)[key]


def model_weights(run: Path) -> dict:
    return {k: v for k, v in load_file(str(ckpt_file(run, "weights"))).items()}


def put_weights(run: Path, tensors: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(ckpt_file(run, "weights")))


def other_model(run: Path) -> None:
    from cnnlab.models import build_model

    net = build_model("conv3-4 > relu > fc10", in_channels=1, input_size=(32, 32))
    put_weights(run, {f"model.{k}": v for k, v in net.state_dict().items()})


def as_float64(run: Path) -> None:
    put_weights(run, {k: v.double() if v.is_floating_point() else v for k, v in model_weights(run).items()})


def with_nan(run: Path) -> None:
    w = model_weights(run)
    name = next(k for k in w if k.endswith("weight"))
    w[name] = w[name].clone()
    w[name].view(-1)[3] = float("nan")
    put_weights(run, w)


def truncated_payload(run: Path) -> None:
    path = ckpt_file(run, "weights")
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) - 1000])  # the JSON header intact, the tensors cut short


def pickle_as_state(run: Path) -> None:
    torch.save(Evil(marker_of(run)), ckpt_file(run, "state"))  # unpickling it would run `touch MARKER`


def pickle_as_weights(run: Path) -> None:
    torch.save({"model.x": Evil(marker_of(run))}, ckpt_file(run, "weights"))


def state_of_another_optimizer(run: Path) -> None:
    state = torch.load(ckpt_file(run, "state"), weights_only=True)
    state["optimizer"] = {"state": {}, "param_groups": [{"params": [0], "lr": 0.1}]}  # one parameter, not ten
    torch.save(state, ckpt_file(run, "state"))


def pointer_to(name: str):
    def damage(run: Path) -> None:
        (run / "checkpoints" / "latest.json").write_text(json.dumps({**latest(run), "weights": name}))
    return damage


def weights_link_outside(run: Path) -> None:
    path = ckpt_file(run, "weights")
    outside = run.parent / "elsewhere.safetensors"
    shutil.copy(path, outside)
    path.unlink()
    os.symlink(outside, path)


def checkpoints_folder_elsewhere(run: Path) -> None:
    shutil.move(run / "checkpoints", run.parent / "ck-elsewhere")
    os.symlink(run.parent / "ck-elsewhere", run / "checkpoints")


def schema_from_the_future(run: Path) -> None:
    info = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**info, "schema_version": 99}))


def config_yaml_python_tag(run: Path) -> None:
    (run / "config.yaml").write_text(f"lr: !!python/object/apply:os.system ['touch {marker_of(run)}']\n")


def config_yaml_huge_model(run: Path) -> None:
    text = (run / "config.yaml").read_text().replace("model: lenet5", "model: conv3-99999999 > fc10")
    (run / "config.yaml").write_text(text)


RESUME_CASES = [
    ("state-is-a-pickle-that-runs-code", pickle_as_state, ["state.pt", "unreadable training state"]),
    ("weights-are-a-pickle-that-runs-code", pickle_as_weights, [".safetensors", "not a readable safetensors"]),
    ("weights-of-another-model", other_model, [".safetensors", "weights of another model"]),
    ("weights-truncated-payload", truncated_payload, [".safetensors", "not a readable safetensors"]),
    ("weights-float64", as_float64, [".safetensors", "float64", "refused rather than converted"]),
    ("weights-nan", with_nan, [".safetensors", "holds NaN or infinite values"]),
    ("state-of-another-optimizer", state_of_another_optimizer, ["state.pt", "not the training state"]),
    ("pointer-names-a-missing-file", pointer_to("ckpt-000000999.safetensors"), ["no such weights file"]),
    ("pointer-names-an-absolute-path", pointer_to("/etc/passwd"), ["not a checkpoint file of this run"]),
    ("weights-link-outside-the-run", weights_link_outside, ["is a link", "refused"]),
    ("checkpoints-folder-elsewhere", checkpoints_folder_elsewhere, ["outside the run directory"]),
    ("config-schema-from-the-future", schema_from_the_future, ["schema_version 99", "upgrade cnnlab"]),
    ("config-yaml-python-tag", config_yaml_python_tag, ["config.yaml", "could not determine a constructor"]),
    ("config-yaml-model-needs-petabytes", config_yaml_huge_model, ["conv3-99999999", "would need"]),
]


@pytest.mark.parametrize("damage, needles", [pytest.param(d, n, id=i) for i, d, n in RESUME_CASES])
def test_resume_of_a_damaged_run_is_refused_and_changes_nothing(tmp_path, finished, damage, needles):
    run = tmp_path / "case" / "run"
    shutil.copytree(finished, run, symlinks=True)
    damage(run)
    before = snapshot(tmp_path)
    proc = cnnlab("train", "--resume", run, "--quiet", "--threads", "1", cwd=tmp_path / "case")
    assert_refused(proc, "train", needles)
    assert snapshot(tmp_path) == before
    assert not marker_of(run).exists()


def _final_other_model(path: Path) -> None:
    from cnnlab.models import build_model

    save_file(build_model("conv3-4 > relu > fc10", in_channels=1, input_size=(32, 32)).state_dict(), str(path))


def _final_changed(change):
    def damage(path: Path) -> None:
        tensors = load_file(str(path))
        name = next(k for k in tensors if k.endswith("weight"))
        tensors[name] = change(tensors[name].clone())
        save_file(tensors, str(path))
    return damage


def _nan(t):
    t.view(-1)[0] = float("nan")
    return t


@pytest.mark.parametrize("damage, needle", [
    (_final_other_model, "weights of another model"), (_final_changed(lambda t: t.double()), "float64"),
    (_final_changed(lambda t: t.half()), "float16"), (_final_changed(lambda t: t[:1]), "weights of another model"),
    (_final_changed(_nan), "holds NaN"),
    (lambda path: torch.save({"w": Evil(marker_of(path.parent))}, path), "not a readable safetensors")],
    ids=["other-model", "float64", "float16", "other-shape", "nan", "pickle"])
def test_kept_weights_are_checked_when_a_run_loads_them(tmp_path, finished, damage, needle):
    from cnnlab.runs import Run

    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    Run.open(run).model()  # loads as written
    damage(run / "model.safetensors")
    with pytest.raises(ConfigError, match=needle) as err:
        Run.open(run).model()
    assert "\n" not in str(err.value) and "model.safetensors" in str(err.value)
    assert not marker_of(run).exists()


# --- archives ----------------------------------------------------------------------------------------------------

def _cifar_archive(root: Path, extra) -> Path:
    """The official CIFAR-10 archive layout (tiny batches) plus one hostile member added by `extra(tar)`."""
    import io

    from cnnlab.data.cifar import CIFAR

    spec = CIFAR["cifar10"]
    root.mkdir(parents=True, exist_ok=True)
    path = root / spec["archive"]
    with tarfile.open(path, "w:gz") as tar:
        for name in spec["train"] + spec["test"]:
            data = bytes(3073 * 10)
            info = tarfile.TarInfo(f"{spec['folder']}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        extra(tar)
    return path


def _member(name, kind=tarfile.REGTYPE, link=""):
    import io

    def add(tar):
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        data = b"owned" if kind == tarfile.REGTYPE else b""
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return add


@pytest.mark.parametrize("extra, needle", [
    (_member("cifar-10-batches-bin/../../escaped.txt"), "has a '..' component"),
    (_member("/tmp/cnnlab-absolute.txt"), "has an absolute path"),
    (_member("cifar-10-batches-bin/evil", tarfile.SYMTYPE, "../../../escaped.txt"), "outside the target"),
    (_member("cifar-10-batches-bin/abs", tarfile.SYMTYPE, "/etc/passwd"), "absolute path '/etc/passwd'"),
    (_member("cifar-10-batches-bin/hard", tarfile.LNKTYPE, "../escaped.txt"), "outside the target"),
    (_member("cifar-10-batches-bin/dev", tarfile.CHRTYPE), "special file"),
], ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device"])
def test_a_downloaded_archive_with_a_member_outside_its_target_is_refused(tmp_path, extra, needle):
    from cnnlab.data import load_dataset
    from cnnlab.data.download import file_digest

    root = tmp_path / "cache"
    archive = _cifar_archive(root, extra)
    digest = file_digest(archive, "sha256")  # the checksum passes: only the member checks stand in the way
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", data_dir=root, offline=True, checksums={archive.name: digest})
    assert needle in str(err.value) and archive.name in str(err.value) and "\n" not in str(err.value)
    assert snapshot(tmp_path) == before  # nothing extracted, no staging folder left
    assert not Path("/tmp/cnnlab-absolute.txt").exists()


def test_an_archive_whose_checksum_fails_is_not_opened(tmp_path):
    root = tmp_path / "case"
    _cifar_archive(root / "cache", _member("../escaped.txt"))
    proc = cnnlab("data", "show", "cifar10", "--data-dir", root / "cache", "--offline", "--out", root / "s.png",
                  cwd=root)
    assert_refused(proc, "data", ["cifar-10-binary.tar.gz", "checksum mismatch"])
    assert not (tmp_path / "escaped.txt").exists() and not (root / "escaped.txt").exists()


@pytest.mark.parametrize("name, link, needle", [
    ("../up.txt", None, "'..' component"), ("/abs.txt", None, "absolute path"), ("C:/win.txt", None, "absolute"),
    ("ok/link", "../../out", "outside the target"), ("ok/file.txt", None, None)])
def test_zip_members_are_checked_the_same_way(tmp_path, name, link, needle):
    from cnnlab.data.archive import check_zip

    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        if link is not None:
            info.external_attr = (0o120777 << 16)  # a symlink member: its content is the target
        zf.writestr(info, link or "data")
    with zipfile.ZipFile(path) as zf:
        if needle is None:
            assert [i.filename for i in check_zip(zf, tmp_path / "dest", path)] == [name]
        else:
            with pytest.raises(DataError, match=needle):
                check_zip(zf, tmp_path / "dest", path)


# --- a disk that fills while a checkpoint is written -----------------------------------------------------------

FILL_ARGS = ("--epochs", "2", "--threads", "1", "--quiet", "--limit-per-class", "20", "--checkpoint-every", "3")


def _check_kept_checkpoint(run: Path) -> dict:
    """The pointer names a whole pair that loads; no temporary or orphaned checkpoint file is left."""
    from cnnlab.train.checkpoint import load_checkpoint

    info = latest(run)
    weights, state = load_checkpoint(run)
    assert weights and state["global_step"] == info["global_step"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == sorted([info["weights"], info["state"], "latest.json"]), names
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    return info


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
def test_a_disk_that_fills_during_a_checkpoint_keeps_the_last_good_one_and_resumes(tmp_path):
    if not _can_mount():
        pytest.skip("needs root to mount a small tmpfs (the in-process ENOSPC test below covers the logic)")
    with tmpfs(tmp_path / "disk", "700k") as disk:
        run = disk / "run"
        # A LeNet-5 checkpoint pair is ~0.5 MB: the first fits, the second (written before the first is
        # deleted, so that a kill never leaves none) finds the disk full.
        proc = cnnlab("train", "--out", run, *FILL_ARGS, cwd=tmp_path)
        line = assert_refused(proc, "train", ["No space left on device", "the last good checkpoint (epoch 1, step 3)",
                                              f"cnnlab train --resume {run}"])
        assert "ckpt-000000004" in line  # the epoch-end checkpoint (4 steps an epoch) is named
        assert _check_kept_checkpoint(run)["global_step"] == 3
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space freed
        resumed = cnnlab("train", "--resume", run, "--quiet", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        reference = cnnlab("train", "--out", tmp_path / "ref", *FILL_ARGS, cwd=tmp_path)
        assert reference.returncode == 0, reference.stderr
        assert _same_weights(run, tmp_path / "ref")


FULL_DISK_CHILD = r"""
import errno, os, sys
import torch
from cnnlab.cli import main
from cnnlab.utils import io
real_save, calls = torch.save, []
def save(obj, f, *a, **k):  # the second training-state write finds the disk full halfway
    calls.append(f)
    if len(calls) == 2:
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_save(obj, f, *a, **k)
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_is_one_line_and_the_resume_after_it_works(tmp_path):
    # The same as above without root: the disk fills (ENOSPC) in the middle of the second state file.
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, "train", "--out", str(run), *FILL_ARGS],
                          capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert_refused(proc, "train", ["ckpt-000000004.state.pt", "No space left on device",
                                   "the last good checkpoint (epoch 1, step 3) is kept", "--resume"])
    assert _check_kept_checkpoint(run)["global_step"] == 3
    resumed = cnnlab("train", "--resume", run, "--quiet", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "result.json").is_file() and latest(run)["global_step"] > 3


def test_write_failures_other_than_a_full_disk_are_not_disguised(tmp_path):
    from cnnlab.utils.io import atomic_path

    with pytest.raises(ValueError, match="not a disk problem"):
        with atomic_path(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"1")
            raise ValueError("not a disk problem")
    assert list(tmp_path.iterdir()) == []


# --- leftovers of killed writes ------------------------------------------------------------------------------------

KILLED_WRITE = r"""
import os, signal, sys
from cnnlab.utils.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half of a file")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_write(target: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], env=env, timeout=120)
    assert proc.returncode == -9
    (left,) = [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]
    assert left.name.endswith(".tmp")
    return left


def test_temp_files_of_killed_writes_are_removed_when_the_run_resumes(tmp_path, finished):
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    (run / "result.json").unlink()  # as if killed before the end
    left = [_killed_write(run / "model.safetensors"), _killed_write(run / "checkpoints" / "ckpt-000000009.state.pt")]
    mine = run / f".notes.{os.getpid()}.x.tmp"  # not a cnnlab name pattern's concern: any temp under the lock goes
    mine.write_text("x")
    proc = cnnlab("train", "--resume", run, "--quiet", "--threads", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in left) and not mine.exists()
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def test_temp_files_in_the_cache_are_removed_only_when_their_writer_is_gone(tmp_path):
    from cnnlab.utils.io import remove_stale_temps

    cache = tmp_path / "decoded"
    cache.mkdir()
    dead = _killed_write(cache / "abc.u8")
    live = cache / f".other.u8.{os.getpid()}.k2j3.tmp"  # a write in progress in this very process
    live.write_bytes(b"x")
    assert remove_stale_temps(cache) == [dead]
    assert live.exists() and not dead.exists()


def test_a_killed_extraction_leaves_a_staging_folder_that_the_next_one_removes(tmp_path):
    from cnnlab.data.cifar import STAGE_PREFIX, remove_stale_stages

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        stale = tmp_path / f"{STAGE_PREFIX}{child.pid}.abcd"
        live = tmp_path / f"{STAGE_PREFIX}{os.getpid()}.efgh"
        stale.mkdir()
        live.mkdir()
        remove_stale_stages(tmp_path)
        assert stale.exists() and live.exists()  # both writers alive
        child.kill()
        child.wait()
        remove_stale_stages(tmp_path)
        assert not stale.exists() and live.exists()
    finally:
        child.kill()


def test_library_errors_here_are_cnnlab_errors():
    # The CLI prints CnnlabErrors as one line; the full-disk and resource errors must be among them.
    from cnnlab.errors import ResourceError
    from cnnlab.train.run import RunWriteError

    assert issubclass(RunWriteError, CnnlabError) and issubclass(ResourceError, ConfigError)
