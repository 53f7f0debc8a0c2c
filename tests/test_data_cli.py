"""`cnnlab data show` through cnnlab.cli.main: card printed, PNG written; errors one line, exit 2."""

from __future__ import annotations

from PIL import Image

from cnnlab.cli import main


def test_data_show_digits_writes_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    rc = main(["data", "show", "digits", "--augment", "rotate:15,crop:2", "--out", str(out), "--samples", "9"])
    text = capsys.readouterr().out
    assert rc == 0 and "splits       train 1078  val 360  test 359" in text and "1×32×32" in text
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 2 * im.height  # original + two augmented panels


def test_data_show_errors_are_one_line_exit_2(tmp_path, capsys):
    assert main(["data", "show", "digits", "--augment", "flip,wobble:3", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "wobble" in err and len(err.splitlines()) == 1
    assert main(["data", "show", str(tmp_path / "missing.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.npz" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_offline_without_files_refuses_the_network_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "home"))
    assert main(["data", "show", "fashion-mnist", "--offline", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train-images-idx3-ubyte.gz" in err and "--offline" in err
    assert not (tmp_path / "x.png").exists()
    assert main(["data", "fetch", "digits"]) == 2
    assert "digits" in capsys.readouterr().err
