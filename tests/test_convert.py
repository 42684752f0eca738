import json

import numpy as np
import pytest
from PIL import Image

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from tinycnn.data import convert  # noqa: E402

SECRETS = {
    "PatientName": "Doe^Jane^Quixotica",
    "PatientID": "PID-98765-XYZ",
    "PatientBirthDate": "19650412",
    "InstitutionName": "Saint Secretia Hospital",
    "AccessionNumber": "ACC55501",
    "StudyDate": "20230105",
    "SeriesDate": "20230106",
    "ReferringPhysicianName": "Dr^Hidden^Person",
    "ImageComments": "confidential remark about Jane",
    "StudyDescription": "private study text",
    "PatientAddress": "12 Hidden Lane",
}


def write_dicom(path, pixels, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None, frames=1,
                rgb=False):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for k, v in SECRETS.items():
        setattr(ds, k, v)
    ds.Modality = "CT"
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if rgb else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else photometric
    if rgb:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if pixels.dtype == np.uint8:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def ramp(h=8, w=10):
    return (np.arange(h * w, dtype=np.int16).reshape(h, w) * 10 - 200).astype(np.int16)


def read_png(p):
    with Image.open(p) as im:
        return np.asarray(im)


def test_window_from_tags_with_rescale(tmp_path):
    px = ramp()
    src = write_dicom(tmp_path / "Doe_Jane_PID-98765-XYZ.dcm", px, slope=2.0, intercept=-100.0, window=(40, 400))
    out = convert.convert_paths([src], tmp_path / "out")
    assert len(out) == 1 and out[0].suffix == ".png"
    v = px.astype(np.float64) * 2 - 100
    expect = np.round(np.clip((v - 39.5) / 399 + 0.5, 0, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_png(out[0]), expect)


def test_window_argument_overrides_tags_and_monochrome1_is_inverted(tmp_path):
    px = ramp()
    src = write_dicom(tmp_path / "a.dcm", px, photometric="MONOCHROME1", window=(0, 100))
    out = convert.convert_paths(src, tmp_path / "out", window=(100, 300))
    v = px.astype(np.float64)
    expect = np.round((1 - np.clip((v - 99.5) / 299 + 0.5, 0, 1)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(read_png(out[0]), expect)


def test_no_window_uses_min_max(tmp_path):
    px = ramp()
    out = convert.convert_paths(write_dicom(tmp_path / "a.dcm", px), tmp_path / "out")
    got = read_png(out[0])
    assert got.min() == 0 and got.max() == 255 and got[0, 0] == 0


def test_multiframe_and_rgb(tmp_path):
    frames = np.stack([ramp(), ramp()[::-1]]).astype(np.int16)
    out = convert.convert_paths(write_dicom(tmp_path / "m.dcm", frames, frames=2), tmp_path / "o1")
    assert [p.name.endswith(f"-f{k}.png") for k, p in enumerate(out)] == [True, True]
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    out = convert.convert_paths(write_dicom(tmp_path / "c.dcm", rgb, rgb=True), tmp_path / "o2")
    np.testing.assert_array_equal(read_png(out[0]), rgb)


def test_no_identifying_value_reaches_any_output(tmp_path):
    src_dir = tmp_path / "in" / "Doe^Jane PID-98765-XYZ"
    src_dir.mkdir(parents=True)
    write_dicom(src_dir / "Doe_Jane_PID-98765-XYZ_19650412.dcm", ramp(), window=(40, 400))
    write_dicom(src_dir / "second.dcm", ramp() * 2, photometric="MONOCHROME1")
    planted = (src_dir / "second.dcm").read_bytes()
    assert all(v.encode() in planted for v in SECRETS.values())  # the inputs really carry the secrets
    out_dir = tmp_path / "out"
    written = convert.convert_paths([tmp_path / "in"], out_dir, sidecar=True)
    files = sorted(out_dir.rglob("*"))
    assert len(written) == 4 and set(written) == set(files)
    needles = []
    for v in SECRETS.values():
        needles += [v, v.replace("^", " "), v.split("^")[0]] + [part for part in v.split("^") if len(part) > 3]
    needles += ["Quixotica", "98765", "Secretia"]
    for f in files:
        blob = f.read_bytes()
        for s in set(needles):
            for enc in (s.encode(), s.lower().encode(), s.encode("utf-16-le")):
                assert enc not in blob, f"{s!r} found in {f.name}"
                assert s.lower() not in f.name.lower()
    side = json.loads(next(out_dir.glob("*.json")).read_text())
    assert set(side) <= set(convert.SIDECAR_TAGS) | {"applied_window", "output_photometric", "frame"}
    assert side["Modality"] == "CT" and side["PixelSpacing"] == [0.5, 0.5]
    # PNGs carry no text metadata at all
    for f in out_dir.glob("*.png"):
        with Image.open(f) as im:
            assert not im.info.get("exif") and not getattr(im, "text", {})


def test_output_names_are_hashes_of_pixels(tmp_path):
    a = write_dicom(tmp_path / "one.dcm", ramp())
    b = write_dicom(tmp_path / "two.dcm", ramp())
    out1 = convert.convert_paths([a], tmp_path / "o")
    out2 = convert.convert_paths([b], tmp_path / "o")
    assert out1 == out2 and len(out1[0].stem) == 16


def test_other_images_to_png_without_metadata(tmp_path):
    from PIL.PngImagePlugin import PngInfo
    info = PngInfo()
    info.add_text("Author", "Doe^Jane^Quixotica")
    a = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "Doe_Jane.png", pnginfo=info)
    Image.fromarray(a[..., 0]).save(tmp_path / "gray.jpg", quality=100)
    b16 = (np.arange(63, dtype=np.uint16).reshape(9, 7) * 1000)
    Image.fromarray(b16).save(tmp_path / "deep.tif")
    out = convert.convert_paths([tmp_path / "Doe_Jane.png", tmp_path / "gray.jpg", tmp_path / "deep.tif"],
                                tmp_path / "o")
    np.testing.assert_array_equal(read_png(out[0]), a)
    assert read_png(out[1]).ndim == 2
    deep = read_png(out[2])
    assert deep.dtype == np.uint8 and deep.min() == 0 and deep.max() == 255
    for p in out:
        assert b"Quixotica" not in p.read_bytes() and "Doe" not in p.name


def test_burned_in_annotation_warns(tmp_path):
    src = write_dicom(tmp_path / "b.dcm", ramp())
    ds = pydicom.dcmread(src)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(src)
    with pytest.warns(UserWarning, match="BurnedInAnnotation is YES"):
        convert.convert_paths([src], tmp_path / "o")


def test_errors_name_the_input(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(convert.ConversionError, match="notes.txt: not a DICOM file and not an image"):
        convert.convert_paths([tmp_path / "notes.txt"], tmp_path / "o")
    with pytest.raises(convert.ConversionError, match="does not exist"):
        convert.convert_paths([tmp_path / "missing.dcm"], tmp_path / "o")
    with pytest.raises(ValueError, match="window width must be >= 1, got 0.0"):
        convert.convert_paths([tmp_path / "notes.txt"], tmp_path / "o", window=(10, 0))


def test_missing_pydicom_message(monkeypatch, tmp_path):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "pydicom":
            raise ImportError("no pydicom")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"pip install 'tinycnn\[dicom\]'"):
        convert._pydicom()
