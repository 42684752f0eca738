import hashlib
import shutil
import urllib.error

import numpy as np
import pytest

from tinycnn import data
from tinycnn.data import medmnist as mm
from tinycnn.data.registry import MEDMNIST

EXPECTED_2D = ["pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
               "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist"]


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No $TINYCNN_DATA_DIR, an empty cache, and no network."""
    monkeypatch.delenv("TINYCNN_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYCNN_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(url, timeout=60):
        raise urllib.error.URLError("network is unreachable (test)")
    monkeypatch.setattr(mm, "_open_url", no_network)
    return tmp_path


def test_registry_has_every_2d_dataset_with_metadata():
    assert data.names() == EXPECTED_2D
    for name, info in MEDMNIST.items():
        assert info.task in ("multi-class", "binary-class", "multi-label, binary-class", "ordinal-regression")
        assert info.n_channels in (1, 3)
        assert len(info.md5) == 32 and all(ch in "0123456789abcdef" for ch in info.md5)
        assert info.url.startswith("https://zenodo.org/records/10519652/files/" + name + ".npz")
        assert set(info.n_samples) == {"train", "val", "test"}
    assert MEDMNIST["chestmnist"].task == "multi-label, binary-class" and MEDMNIST["chestmnist"].n_classes == 14
    assert MEDMNIST["retinamnist"].task == "ordinal-regression"
    assert MEDMNIST["pathmnist"].n_channels == 3 and MEDMNIST["pathmnist"].n_classes == 9


def test_registry_md5_matches_shared_readme():
    # values stated in ../shared/data/README.md (official MedMNIST info.py)
    assert MEDMNIST["pneumoniamnist"].md5 == "28209eda62fecd6e6a2d98b1501bb15f"
    assert MEDMNIST["breastmnist"].md5 == "750601b1f35ba3300ea97c75c52ff8f6"
    assert MEDMNIST["pneumoniamnist"].n_samples == {"train": 4708, "val": 524, "test": 624}
    assert MEDMNIST["breastmnist"].class_names == ("malignant", "normal, benign")


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown MedMNIST dataset 'nope'.*pneumoniamnist"):
        data.get_info("nope")
    with pytest.raises(data.DatasetError, match="unknown dataset 'nope'.*synthetic"):
        data.load_dataset("nope")


def test_load_pneumonia_arrays(data_dir, isolated):
    ds = data.load_dataset("pneumoniamnist", data_dir=data_dir)
    assert ds.train.images.shape == (4708, 1, 28, 28) and ds.train.images.dtype == np.float32
    assert ds.test.labels.shape == (624,) and ds.test.labels.dtype == np.int64
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    assert np.bincount(ds.test.labels).tolist() == [234, 390]
    raw = np.load(data_dir / "pneumoniamnist.npz")
    np.testing.assert_array_equal(ds.val.images[:, 0], raw["val_images"].astype(np.float32) / np.float32(255))
    assert ds.info.md5 == "28209eda62fecd6e6a2d98b1501bb15f" and ds.info.task == "binary-class"
    assert ds.info.to_dict()["class_names"] == ["normal", "pneumonia"]


def test_explicit_npz_path(data_dir, isolated):
    ds = data.load_dataset(str(data_dir / "breastmnist.npz"))
    assert ds.info.source == str(data_dir / "breastmnist.npz") and len(ds.test) == 156


def test_lookup_order(data_dir, isolated, monkeypatch, tmp_path):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    cache = data.cache_dir()
    for d in (env_dir, arg_dir, cache):
        d.mkdir(parents=True)
    assert cache == tmp_path / "cache" / "tinycnn"
    shutil.copy(data_dir / "breastmnist.npz", cache / "breastmnist.npz")
    assert data.find_file("breastmnist") == cache / "breastmnist.npz"
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(env_dir))
    shutil.copy(data_dir / "breastmnist.npz", env_dir / "breastmnist.npz")
    assert data.find_file("breastmnist") == env_dir / "breastmnist.npz"
    shutil.copy(data_dir / "breastmnist.npz", arg_dir / "breastmnist.npz")
    assert data.find_file("breastmnist", arg_dir) == arg_dir / "breastmnist.npz"
    assert data.search_dirs(arg_dir) == [arg_dir, env_dir, cache]
    assert data.load_dataset("breastmnist", data_dir=arg_dir).info.source == str(arg_dir / "breastmnist.npz")


def test_corrupted_copy_is_rejected_with_expected_and_actual_md5(data_dir, isolated, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    raw = bytearray((data_dir / "breastmnist.npz").read_bytes())
    raw[1000] ^= 0xFF
    (bad / "breastmnist.npz").write_bytes(bytes(raw))
    actual = hashlib.md5(bytes(raw)).hexdigest()
    with pytest.raises(data.ChecksumError, match=rf"breastmnist\.npz.*expected 750601b1f35ba3300ea97c75c52ff8f6, got {actual}"):
        data.load_dataset("breastmnist", data_dir=bad)
    # a broken file in the first place is an error, not skipped in favour of a later place
    assert data.status("breastmnist", bad)["verified"] is False


def test_offline_error_says_where_to_put_the_file(isolated, tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load_dataset("dermamnist", data_dir=tmp_path / "nowhere")
    msg = str(e.value)
    assert "dermamnist.npz" in msg and "failed" in msg and "network is unreachable" in msg
    assert str(tmp_path / "nowhere") in msg and "--data-dir" in msg and MEDMNIST["dermamnist"].md5 in msg
    with pytest.raises(data.DatasetNotFoundError, match="downloading is off; put dermamnist.npz"):
        data.load_dataset("dermamnist", download=False)
    assert not list((tmp_path / "nowhere").glob("*"))  # no partial file left behind


def _file_opener(monkeypatch):
    import urllib.request
    monkeypatch.setattr(mm, "_open_url", lambda url, timeout=60: urllib.request.urlopen(url))


def test_download_from_file_url_is_verified_and_atomic(data_dir, isolated, monkeypatch, tmp_path):
    _file_opener(monkeypatch)
    dest = tmp_path / "dl"
    url = (data_dir / "breastmnist.npz").as_uri()
    ds = data.load_medmnist("breastmnist", data_dir=dest, progress=False, url=url)
    assert (dest / "breastmnist.npz").read_bytes() == (data_dir / "breastmnist.npz").read_bytes()
    assert ds.train.images.shape == (546, 1, 28, 28)
    assert sorted(p.name for p in dest.iterdir()) == ["breastmnist.npz"]


def test_download_with_wrong_bytes_leaves_nothing(data_dir, isolated, monkeypatch, tmp_path):
    _file_opener(monkeypatch)
    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"not the dataset" * 100)
    dest = tmp_path / "dl"
    with pytest.raises(data.ChecksumError, match="downloaded breastmnist.npz.*expected 750601b1.*discarded"):
        data.load_medmnist("breastmnist", data_dir=dest, progress=False, url=fake.as_uri())
    assert list(dest.iterdir()) == []


def test_download_uses_opener_and_progress_bar(data_dir, isolated, tmp_path, capsys):
    payload = (data_dir / "breastmnist.npz").read_bytes()
    calls = []

    class Resp:
        length = len(payload)

        def __init__(self):
            self.pos = 0

        def read(self, n):
            chunk = payload[self.pos:self.pos + n]
            self.pos += n
            return chunk

    def opener(url):
        calls.append(url)
        return Resp()
    path = mm.download(MEDMNIST["breastmnist"], tmp_path / "o", progress=True, opener=opener)
    assert calls == [MEDMNIST["breastmnist"].url] and path.read_bytes() == payload
    assert "breastmnist.npz" in capsys.readouterr().err  # the tqdm bar


def _write_npz(path, **arrays):
    np.savez_compressed(path, **arrays)


def test_layout_check_names_key_expected_and_actual(tmp_path):
    info = MEDMNIST["breastmnist"]
    n = {"train": 3, "val": 2, "test": 2}
    good = {f"{s}_images": np.zeros((k, 28, 28), np.uint8) for s, k in n.items()}
    good.update({f"{s}_labels": np.zeros((k, 1), np.uint8) for s, k in n.items()})
    mm.check_layout(good, info, n, "f.npz")
    bad = dict(good, val_images=np.zeros((2, 28, 27), np.uint8))
    with pytest.raises(data.LayoutError, match=r"f.npz: val_images shape: expected \(2, 28, 28\), got \(2, 28, 27\)"):
        mm.check_layout(bad, info, n, "f.npz")
    bad = dict(good, test_labels=np.full((2, 1), 5, np.uint8))
    with pytest.raises(data.LayoutError, match=r"test_labels values: expected integers in \[0, 1\], got range \[5, 5\]"):
        mm.check_layout(bad, info, n, "f.npz")
    bad = {k: v for k, v in good.items() if k != "train_labels"}
    with pytest.raises(data.LayoutError, match="missing arrays \\['train_labels'\\]"):
        mm.check_layout(bad, info, n, "f.npz")
    bad = dict(good, train_images=np.zeros((3, 28, 28), np.float32))
    with pytest.raises(data.LayoutError, match="train_images dtype: expected uint8, got float32"):
        mm.check_layout(bad, info, n, "f.npz")


def test_layout_error_on_md5_valid_file(monkeypatch, tmp_path, isolated):
    """A file whose MD5 is accepted but whose arrays are wrong still fails the layout check."""
    info = MEDMNIST["breastmnist"]
    p = tmp_path / "breastmnist.npz"
    _write_npz(p, train_images=np.zeros((1, 28, 28), np.uint8))
    md5 = hashlib.md5(p.read_bytes()).hexdigest()
    fake = data.MedMNISTInfo(info.name, info.task, info.class_names, 1,
                             (data.registry.Release("t", "file://x", md5, info.n_samples),))
    monkeypatch.setitem(MEDMNIST, "breastmnist", fake)
    with pytest.raises(data.LayoutError, match="breastmnist.npz: missing arrays"):
        data.load_medmnist("breastmnist", data_dir=tmp_path)


def test_dataset_table(data_dir, isolated):
    rows = {r["name"]: r for r in data.dataset_table(data_dir)}
    assert set(rows) == {"synthetic", "synthetic-multilabel", *EXPECTED_2D}
    assert rows["pneumoniamnist"]["verified"] is True and rows["pneumoniamnist"]["path"].endswith("pneumoniamnist.npz")
    assert rows["pathmnist"]["path"] is None and rows["synthetic"]["path"] == "generated"
    assert rows["synthetic-multilabel"]["task"] == "multi-label, binary-class"


def test_multilabel_and_rgb_files_load_in_the_right_shapes(monkeypatch, tmp_path, isolated):
    """ChestMNIST-style (N, 14) labels stay 2-D; RGB (N, 28, 28, 3) images become (N, 3, 28, 28)."""
    rng = np.random.default_rng(0)
    n = {"train": 4, "val": 2, "test": 3}
    for name, n_labels, rgb in (("chestmnist", 14, False), ("pathmnist", 1, True)):
        info = MEDMNIST[name]
        arrays = {}
        for s, k in n.items():
            arrays[f"{s}_images"] = rng.integers(0, 256, (k, 28, 28, 3) if rgb else (k, 28, 28), dtype=np.uint8)
            hi = 2 if n_labels > 1 else info.n_classes
            arrays[f"{s}_labels"] = rng.integers(0, hi, (k, n_labels), dtype=np.uint8)
        p = tmp_path / f"{name}.npz"
        _write_npz(p, **arrays)
        md5 = hashlib.md5(p.read_bytes()).hexdigest()
        fake = data.MedMNISTInfo(name, info.task, info.class_names, info.n_channels,
                                 (data.registry.Release("t", "file://x", md5, n),))
        monkeypatch.setitem(MEDMNIST, name, fake)
        ds = data.load_medmnist(name, data_dir=tmp_path)
        if rgb:
            assert ds.train.images.shape == (4, 3, 28, 28) and ds.train.labels.shape == (4,)
            np.testing.assert_array_equal(ds.val.images[1, 2] * np.float32(255),
                                          arrays["val_images"][1, :, :, 2].astype(np.float32))
        else:
            assert ds.train.images.shape == (4, 1, 28, 28) and ds.test.labels.shape == (3, 14)
            np.testing.assert_array_equal(ds.test.labels, arrays["test_labels"])
