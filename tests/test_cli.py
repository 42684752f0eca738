"""The command line: --help everywhere, train/evaluate/predict/summary outputs, one-line errors without tracebacks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tinycnn.cli import main

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["datasets", "train", "evaluate", "predict", "summary", "convert", "bench"]


def run_cli(*args, env=None):
    """Run `python -m tinycnn ARGS` in a fresh process (what a user sees: exit code, stdout, stderr)."""
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "tinycnn", *map(str, args)], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    rc = main(["train", "--dataset", "synthetic", "--subset", "64", "--model", "simplecnn", "--epochs", "2",
               "--batch-size", "32", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: tinycnn " + cmd in capsys.readouterr().out


def test_train_prints_test_metrics_and_writes_run(run_dir, capsys):
    for name in ("config.json", "best.safetensors", "metrics.json", "curves.png", "roc.png", "confusion.png"):
        assert (run_dir / name).exists()
    # 64 training images: the recipe trains a 5-member ensemble, so evaluate/predict below exercise it
    assert json.loads((run_dir / "config.json").read_text())["settings"]["ensemble"] == 5


def test_evaluate_json_and_probs_out(run_dir, tmp_path, capsys):
    probs_path = tmp_path / "probs.npy"
    assert main(["evaluate", "--run", str(run_dir), "--json", "--probs-out", str(probs_path)]) == 0
    out = capsys.readouterr().out.strip()
    m = json.loads(out)  # exactly one JSON object on stdout
    assert m["n"] == 20 and m["split"] == "test" and 0 <= m["auc"] <= 1
    probs = np.load(probs_path, allow_pickle=False)
    assert probs.shape == (20, 2)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert m["acc"] == pytest.approx(saved["acc"]) and m["auc"] == pytest.approx(saved["auc"])
    # same numbers through --checkpoint, on the val split too
    assert main(["evaluate", "--checkpoint", str(run_dir / "best.safetensors"), "--split", "val", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["split"] == "val"


def test_predict_with_gradcam(run_dir, tmp_path, capsys):
    from PIL import Image
    paths = []
    for i in range(2):
        a = (np.random.default_rng(i).random((40, 40)) * 255).astype(np.uint8)
        p = tmp_path / f"img{i}.png"
        Image.fromarray(a).save(p)
        paths.append(str(p))
    cam = tmp_path / "cam.png"
    assert main(["predict", "--checkpoint", str(run_dir / "best.safetensors"), *paths, "--gradcam", str(cam),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in rows] == paths
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 for r in rows)
    im = Image.open(cam)
    assert im.format == "PNG" and im.size[0] > 28 and im.size[1] > 56


def test_predict_feature_maps_of_an_ensemble(run_dir, tmp_path, capsys):
    from PIL import Image
    p = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(p)
    fm = tmp_path / "fm"
    assert main(["predict", "--checkpoint", str(run_dir / "best.safetensors"), str(p), "--feature-maps", str(fm),
                 "--layer", "conv1"]) == 0
    files = sorted(fm.iterdir())
    assert [f.name for f in files] == ["000_img_conv1.png"] and Image.open(files[0]).format == "PNG"


def test_summary_table(capsys):
    assert main(["summary", "--model", "vgg", "--input", "1,28,28"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "Conv2d" in out and "128x7x7" in out and "total params: 139,426" in out
    assert main(["summary", "--model", "simplecnn", "--input", "1,28,28", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    conv1 = s["rows"][0]
    assert conv1["name"] == "conv1" and conv1["output_shape"] == [32, 28, 28] and conv1["params"] == 320
    assert conv1["flops"] == 2 * 32 * 28 * 28 * 9 + 32 * 28 * 28
    assert s["total_params"] == 320 + 18496 + 3136 * 128 + 128 + 258


def _assert_one_line_error(res, *fragments):
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("tinycnn") and "Traceback" not in res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_error_missing_dataset(tmp_path):
    res = run_cli("train", "--dataset", "dermamnist", "--data-dir", tmp_path, "--epochs", "1",
                  env={"TINYCNN_DATA_DIR": str(tmp_path), "HOME": str(tmp_path), "TINYCNN_OFFLINE": "1"})
    _assert_one_line_error(res, "dermamnist")


def test_error_unknown_dataset_and_bad_path(tmp_path):
    _assert_one_line_error(run_cli("train", "--dataset", "no/such/folder", "--epochs", "1"), "no/such/folder")
    _assert_one_line_error(run_cli("evaluate", "--run", tmp_path / "nothing"), "nothing")
    _assert_one_line_error(run_cli("evaluate", "--checkpoint", tmp_path / "x.safetensors"), "checkpoint not found")
    _assert_one_line_error(run_cli("predict", "--checkpoint", tmp_path / "x.safetensors", tmp_path / "a.png"),
                           "checkpoint not found")


def test_error_corrupted_checkpoint(run_dir, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((run_dir / "best.safetensors").read_bytes()[:200])
    _assert_one_line_error(run_cli("evaluate", "--checkpoint", bad), "corrupted")


def test_error_unknown_model():
    _assert_one_line_error(run_cli("summary", "--model", "alexnet"), "unknown model 'alexnet'")
    _assert_one_line_error(run_cli("train", "--model", "alexnet", "--subset", "16", "--epochs", "1"),
                           "unknown model 'alexnet'")


def test_bad_arguments_are_one_line(tmp_path):
    _assert_one_line_error(run_cli("train", "--epochs", "zero"), "--epochs")
    _assert_one_line_error(run_cli("summary", "--model", "vgg", "--input", "1,28"), "C,H,W")


def test_debug_shows_traceback():
    res = run_cli("--debug", "summary", "--model", "alexnet")
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_convert_png(tmp_path, capsys):
    from PIL import Image
    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((30, 30)) * 255).astype(np.uint8)).save(src)
    assert main(["convert", str(src), "--to", str(tmp_path / "out")]) == 0
    pngs = list((tmp_path / "out").glob("*.png"))
    assert len(pngs) == 1 and Image.open(pngs[0]).size == (30, 30)
    assert main(["convert", str(tmp_path / "missing.dcm"), "--to", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"tinycnn: error: input not found: {tmp_path / 'missing.dcm'}"]


@pytest.mark.gpu
def test_train_and_evaluate_on_cuda_match_cpu(tmp_path):
    """The whole pipeline with --device cuda (data on the host, model, ensemble, checkpoints and
    metrics through the GPU) ends where the CPU run ends, within float32 drift."""
    metrics = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main(["train", "--dataset", "synthetic", "--subset", "64", "--model", "simplecnn", "--epochs", "2",
                     "--batch-size", "32", "--seed", "1", "--device", device, "--out", str(out), "--quiet"]) == 0
        metrics[device] = json.loads((out / "metrics.json").read_text())
        assert main(["evaluate", "--run", str(out), "--device", device, "--json"]) == 0
    assert metrics["cuda"]["auc"] == pytest.approx(metrics["cpu"]["auc"], abs=0.05)
    assert metrics["cuda"]["acc"] == pytest.approx(metrics["cpu"]["acc"], abs=0.05)
