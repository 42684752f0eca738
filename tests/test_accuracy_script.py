"""examples/accuracy.py --reuse: the results page is generated from the run directories, not typed."""
import json
import subprocess
import sys
from pathlib import Path

from tinycnn.training import train_run

ROOT = Path(__file__).resolve().parents[1]


def test_reuse_summarises_run_directories(tmp_path):
    for seed in (0, 1):
        out = tmp_path / f"synthetic-seed{seed}"
        train_run({"dataset": "synthetic", "subset": 64, "model": "simplecnn", "epochs": 1, "batch_size": 32,
                   "seed": seed, "ensemble": 1, "out": str(out)}, log=None, quiet=True)
        wall = {"wall_seconds": 12.5 + seed, "conditions": "a test"}
        if seed == 0:
            wall["command"] = "python -m tinycnn train --dataset synthetic (code of commit abc1234)"
            wall["cpu"] = "Some CPU (AVX2), 2 cores"
        (out / "wall.json").write_text(json.dumps(wall))
    md = tmp_path / "results.md"
    res = subprocess.run([sys.executable, "examples/accuracy.py", "--reuse", "--datasets", "synthetic", "--seeds",
                          "0,1", "--out", str(tmp_path), "--markdown", str(md)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    aucs = [json.loads((tmp_path / f"synthetic-seed{s}" / "metrics.json").read_text())["auc"] for s in (0, 1)]
    text = md.read_text()
    assert "do not edit by hand" in text
    assert f"| synthetic | 0 | {aucs[0]:.4f} |" in text and f"| synthetic | 1 | {aucs[1]:.4f} |" in text
    # members, EMA decay (the small-set recipe: 1 - 1/10), test-time flips (its hflip), epochs (recipe), wall,
    # code commit, CPU, conditions
    assert "| 1 | 0.9 | hflip | 1 (1) |" in text
    assert "| 12 | abc1234 | Some CPU (AVX2), 2 cores | a test |" in text
    assert "| 14 | - | not recorded | a test |" in text
    assert "| 13 (14) |" in text   # mean (max) wall
