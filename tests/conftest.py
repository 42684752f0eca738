import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("TINYCNN_DATA_DIR", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    import tinycnn
    if tinycnn.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CuPy (cupy.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def data_dir():
    if not (DATA_DIR / "pneumoniamnist.npz").exists():
        pytest.fail(f"MedMNIST files not found in {DATA_DIR}: set TINYCNN_DATA_DIR or put ../shared/data beside the repo")
    return DATA_DIR


@pytest.fixture
def rng():
    return np.random.default_rng(0)
