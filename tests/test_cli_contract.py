"""docs/cli.md promises that tests/test_cli.py did not pin down: fixed folder splits, `evaluate --dataset NAME`
in full, undefined AUCs, finite option values, one-line errors that name the option, a clean stdout."""
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycnn.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--model", "simplecnn", "--ensemble", "1", "--epochs", "1", "--batch-size", "16", "--quiet"]


def run_cli(*args, env=None):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tinycnn", *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tinycnn") and "Traceback" not in text, text
    return lines[0]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An image folder, one sub-folder per class (no train/val/test): split 80/10/10 by tinycnn."""
    from PIL import Image
    root = tmp_path_factory.mktemp("folder") / "ds"
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            Image.fromarray((rng.random((12, 12)) * (120 + 135 * k)).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_folder_split_is_fixed_not_the_training_seed(folder, tmp_path, capsys):
    """'split 80/10/10 ... with a fixed seed': a run with --seed 1 and `evaluate --dataset DIR` (spelled another
    way, so not recognised as the training data) see the same test images, in the same order."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(folder), "--seed", "1", "--out", str(out), *QUICK]) == 0
    assert json.loads((out / "config.json").read_text())["dataset"]["seed"] == 0
    by_run, by_name = tmp_path / "run.npy", tmp_path / "name.npy"
    assert main(["evaluate", "--run", str(out), "--probs-out", str(by_run), "--quiet"]) == 0
    assert main(["evaluate", "--checkpoint", str(out / "best.safetensors"), "--dataset", str(folder) + os.sep,
                 "--probs-out", str(by_name), "--quiet"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(by_run), np.load(by_name))


def test_evaluate_dataset_name_is_the_whole_split(data_dir, tmp_path, capsys):
    """`evaluate --checkpoint FILE --dataset NAME` evaluates NAME's split, not the training --subset of it;
    --probs-out rows follow the file's test order, and AUC/ACC are MedMNIST's (positive-class score, > 0.5)."""
    from sklearn.metrics import accuracy_score, roc_auc_score
    out = tmp_path / "run"
    assert main(["train", "--dataset", "breastmnist", "--data-dir", str(data_dir), "--subset", "32",
                 "--out", str(out), *QUICK]) == 0
    capsys.readouterr()
    probs_path = tmp_path / "p.npy"
    assert main(["evaluate", "--checkpoint", str(out / "best.safetensors"), "--dataset", "breastmnist",
                 "--data-dir", str(data_dir), "--json", "--probs-out", str(probs_path)]) == 0
    m = json.loads(capsys.readouterr().out)
    y = np.load(data_dir / "breastmnist.npz")["test_labels"].ravel()
    probs = np.load(probs_path)
    assert m["n"] == 156 and probs.shape == (156, 2)
    assert m["auc"] == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=1e-6)
    assert m["acc"] == pytest.approx(accuracy_score(y, probs[:, 1] > 0.5))
    # --run still evaluates the run's own data (its --subset), as metrics.json does
    assert main(["evaluate", "--run", str(out), "--data-dir", str(data_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 32


def _strict_json(text):
    def no_constant(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=no_constant)


def test_undefined_auc_is_reported_not_a_crash(folder, tmp_path, capsys):
    """Val and test splits of one image: AUC is undefined. train still exits 0 and metrics.json stays JSON."""
    out = tmp_path / "run"
    assert main(["train", "--dataset", str(folder), "--subset", "1", "--out", str(out), *QUICK]) == 0
    assert "AUC n/a" in capsys.readouterr().out
    m = _strict_json((out / "metrics.json").read_text())
    assert m["auc"] is None and m["val_auc"] is None and m["n"] == 1


@pytest.mark.parametrize("option,value", [("--lr", "inf"), ("--time-budget", "inf"), ("--weight-decay", "nan"),
                                          ("--momentum", "-1"), ("--label-smoothing", "2"), ("--focal-gamma", "-1")])
def test_out_of_range_option_values_are_usage_errors(option, value, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["train", option, value])
    assert e.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert option in line and repr(value) in line


def test_diverging_run_is_one_line_without_warnings(tmp_path):
    """An extreme (finite) --lr: NaN weights are reported as divergence, without NumPy RuntimeWarning lines."""
    res = run_cli("train", "--dataset", "synthetic", "--subset", "32", "--lr", "1e308", "--out", tmp_path / "run",
                  *QUICK)
    assert res.returncode != 0
    assert "training stopped" in _one_error_line(res.stderr)


def test_out_that_is_a_file_names_the_option(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--dataset", "synthetic", "--subset", "16", "--out", str(afile), *QUICK]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--out {afile}" in line and "directory" in line


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "run"
    assert main(["train", "--dataset", "synthetic", "--subset", "16", "--out", str(out), *QUICK]) == 0
    return out


@pytest.mark.parametrize("option", ["--probs-out", "--gradcam", "--feature-maps", "--to"])
def test_unwritable_outputs_name_the_option(option, synthetic_run, tmp_path, capsys):
    """An output path that cannot be written (its parent, or the folder itself, is a file) is named with its option."""
    from PIL import Image
    afile = tmp_path / "afile"
    afile.write_text("x")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    ckpt = str(synthetic_run / "best.safetensors")
    argv, target = {
        "--probs-out": (["evaluate", "--run", str(synthetic_run), "--quiet"], afile / "p.npy"),
        "--gradcam": (["predict", "--checkpoint", ckpt, str(image)], afile / "cam.png"),
        "--feature-maps": (["predict", "--checkpoint", ckpt, str(image), "--layer", "conv1"], afile),
        "--to": (["convert", str(image)], afile),
    }[option]
    capsys.readouterr()
    assert main([*argv, option, str(target)]) == 2
    assert f"{option} {target}" in _one_error_line(capsys.readouterr().err)


def test_summary_input_too_small_names_the_option(capsys):
    assert main(["summary", "--model", "vgg", "--input", "1,2,2"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--input 1,2,2" in line and "vgg" in line


def test_terminal_stdout_gets_only_the_output():
    """On a terminal too, stdout carries the table and nothing else (Numba's colorama wrote an ANSI reset)."""
    master, slave = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "tinycnn", "summary", "--model", "simplecnn"], cwd=ROOT,
                             stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300)
    finally:
        os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert res.returncode == 0 and b"total params" in out
    assert b"\x1b" not in out, out[-80:]


def test_download_bar_follows_quiet_and_stdout(data_dir, tmp_path, monkeypatch, capsys):
    """A download's tqdm bar is a progress bar too: off with --quiet, and off when stdout is not a terminal
    (tqdm alone would look at stderr)."""
    import shutil

    from tinycnn.data import medmnist
    seen = []

    def fake_download(info, dest_dir, url=None, progress=None, opener=None):
        seen.append(progress)
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(data_dir / info.filename, Path(dest_dir) / info.filename))

    monkeypatch.setattr(medmnist, "download", fake_download)
    monkeypatch.delenv("TINYCNN_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYCNN_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "run"
    # stdout is captured (not a terminal) and --quiet is not given
    assert main(["train", "--dataset", "breastmnist", "--data-dir", str(tmp_path / "a"), "--subset", "16",
                 "--out", str(out), *[a for a in QUICK if a != "--quiet"]]) == 0
    assert main(["evaluate", "--checkpoint", str(out / "best.safetensors"), "--dataset", "breastmnist",
                 "--data-dir", str(tmp_path / "b"), "--quiet"]) == 0
    capsys.readouterr()
    assert seen == [False, False]


def test_config_records_the_default_time_budget(tmp_path):
    """config.json holds every setting: without --epochs the run has the default time budget, so it says so."""
    from tinycnn.training.run import DEFAULT_TIME_BUDGET, train_run
    out = tmp_path / "run"
    train_run({"dataset": "synthetic", "subset": 16, "model": "simplecnn", "ensemble": 1, "out": str(out)},
              log=None, quiet=True, stop_after=1)
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["epochs_given"] is False and settings["time_budget"] == DEFAULT_TIME_BUDGET


def test_closed_stdout_pipe_ends_quietly():
    """`tinycnn datasets --json | head -c 0`: the reader is gone before the first write; no error line."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "tinycnn", "datasets", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Error" not in err and "error" not in err, err
