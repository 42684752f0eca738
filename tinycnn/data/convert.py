"""DICOM and other image files -> PNG, de-identified by construction (for `tinycnn convert`).

DICOM pipeline (pydicom, the optional `dicom` extra), per frame:
  1. modality LUT:   v = stored * RescaleSlope + RescaleIntercept           (defaults 1 and 0)
  2. VOI window:     centre c, width w from `window=(c, w)`, else the first WindowCenter/WindowWidth tag,
                     else the frame's min..max. DICOM PS3.3 C.11.2.1.2 linear function:
                     y = 0 if v <= c - 0.5 - (w-1)/2;  1 if v > c - 0.5 + (w-1)/2;
                     else ((v - (c - 0.5)) / (w - 1) + 0.5)
  3. MONOCHROME1 (white = low values) is inverted: y = 1 - y, so the PNG always shows MONOCHROME2.
  4. PNG 8-bit grayscale: round(255 y). RGB images (SamplesPerPixel = 3) are written as RGB, windowed only
     when `window` is given.
Other files Pillow can read are re-encoded as PNG from their pixels only (16-bit / float images are
min-max scaled, or windowed when `window` is given).

Privacy: only pixel values leave the input. A PNG is written by Pillow from an array, with no text chunks
or EXIF; file names are `<sha256 of the PNG pixels, 16 hex>.png` (`-f<k>` per frame), never derived from
the input name or tags. The optional sidecar `<same>.json` holds only whitelisted acquisition tags
(`SIDECAR_TAGS`), each validated to a number, a list of numbers or a short code string.
Text burned into the pixels cannot be removed this way: a DICOM with BurnedInAnnotation = YES gets a warning.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np

from .base import DatasetError

SIDECAR_TAGS = ("Modality", "PhotometricInterpretation", "Rows", "Columns", "BitsStored", "SamplesPerPixel",
                "PixelSpacing", "ImagerPixelSpacing", "SliceThickness", "WindowCenter", "WindowWidth",
                "RescaleSlope", "RescaleIntercept", "NumberOfFrames")
_CODE = re.compile(r"^[A-Z0-9_ ]{1,16}$")
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


class ConversionError(DatasetError):
    """An input could not be converted; the message names the input file (never a tag value)."""


def _pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError("DICOM conversion needs pydicom: pip install 'tinycnn[dicom]' (or pip install pydicom)") from None
    return pydicom


def is_dicom(path) -> bool:
    """True if the file has the DICOM preamble ("DICM" at byte 128) or a DICOM suffix."""
    p = Path(path)
    if p.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def apply_window(v: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM linear VOI function (PS3.3 C.11.2.1.2) mapped to [0, 1]; width must be >= 1."""
    if not np.isfinite(center) or not np.isfinite(width) or width < 1:
        raise ValueError(f"window width must be >= 1 and finite (centre {center}, width {width})")
    c, w = float(center), float(width)
    if w == 1:
        return (v > c - 0.5).astype(np.float64)
    y = (v - (c - 0.5)) / (w - 1) + 0.5
    return np.clip(y, 0.0, 1.0)


def _first(value):
    try:
        if isinstance(value, (str, bytes)):
            return float(value)
        return float(value[0]) if hasattr(value, "__len__") else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _minmax(v):
    lo, hi = float(np.min(v)), float(np.max(v))
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v, dtype=np.float64)


def _sanitise(value):
    """A whitelisted tag value as JSON: numbers / lists of numbers / short upper-case codes; else None."""
    if value is None:
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value) if isinstance(value, (float, np.floating)) else int(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value if _CODE.match(value) else None
    if hasattr(value, "__iter__"):
        items = [_sanitise(v) for v in value]
        return items if items and all(isinstance(i, (int, float)) for i in items) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def dicom_to_arrays(path, window=None):
    """Read a DICOM file -> (list of uint8 frames (H, W) or (H, W, 3), sidecar dict of whitelisted tags)."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(str(path))
        pixels = ds.pixel_array
    except Exception as e:  # pydicom raises many types (missing pixel data, unsupported compression, ...)
        raise ConversionError(f"{path}: cannot read DICOM pixel data ({type(e).__name__}; compressed transfer "
                              f"syntaxes may need pylibjpeg or gdcm)") from None
    if str(getattr(ds, "BurnedInAnnotation", "")).upper() == "YES":
        warnings.warn(f"{path}: BurnedInAnnotation is YES: the pixels themselves may show identifying text, "
                      f"which conversion does not remove; check the PNG before sharing it", stacklevel=3)
    spp = int(getattr(ds, "SamplesPerPixel", 1))
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    frames = pixels if nframes > 1 else pixels[None]
    if spp == 3 and photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space
        frames = convert_color_space(frames, photometric, "RGB")
    slope = _first(getattr(ds, "RescaleSlope", 1)) or 1.0
    intercept = _first(getattr(ds, "RescaleIntercept", 0)) or 0.0
    tag_center = _first(getattr(ds, "WindowCenter", None))
    tag_width = _first(getattr(ds, "WindowWidth", None))
    out = []
    applied = None
    for fr in frames:
        v = fr.astype(np.float64) * slope + intercept
        if spp == 3:
            if window is not None:
                y = apply_window(v, *window)
                applied = tuple(window)
            else:
                bits = int(getattr(ds, "BitsStored", 8))
                y = np.clip(v / (2 ** bits - 1), 0, 1)
        else:
            if window is not None:
                applied = (float(window[0]), float(window[1]))
            elif tag_center is not None and tag_width is not None and tag_width >= 1:
                applied = (tag_center, tag_width)
            else:
                applied = None
            y = apply_window(v, *applied) if applied else _minmax(v)
            if photometric == "MONOCHROME1":
                y = 1.0 - y
        out.append(np.round(y * 255).astype(np.uint8))
    side = {}
    for tag in SIDECAR_TAGS:
        val = _sanitise(getattr(ds, tag, None))
        if val is not None:
            side[tag] = val
    side["applied_window"] = list(applied) if applied else "min-max"
    side["output_photometric"] = "RGB" if spp == 3 else "MONOCHROME2"
    return out, side


def image_to_array(path, window=None):
    """Read a non-DICOM image with Pillow -> uint8 (H, W) or (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                v = np.asarray(im, dtype=np.float64)
                y = apply_window(v, *window) if window is not None else _minmax(v)
                return np.round(y * 255).astype(np.uint8)
            if im.mode in ("1", "L", "LA", "P") and not (im.mode == "P" and "transparency" in im.info):
                im2 = im.convert("L") if im.mode != "P" else im.convert("RGB")
            else:
                im2 = im.convert("RGB")
            a = np.asarray(im2)
    except (UnidentifiedImageError, OSError) as e:
        raise ConversionError(f"{path}: not a DICOM file and not an image Pillow can read ({e})") from None
    if window is not None:
        a = np.round(apply_window(a.astype(np.float64), *window) * 255).astype(np.uint8)
    return a


def _write_png(a: np.ndarray, out_dir: Path, suffix: str = "") -> Path:
    from PIL import Image
    digest = hashlib.sha256(np.ascontiguousarray(a).tobytes() + str(a.shape).encode()).hexdigest()[:16]
    path = out_dir / f"{digest}{suffix}.png"
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(a).save(tmp, format="PNG")  # Pillow writes no tEXt/eXIf chunks unless asked
    tmp.replace(path)
    return path


def _expand(inputs):
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and not q.name.startswith(".")))
        elif p.is_file():
            files.append(p)
        else:
            raise ConversionError(f"input {str(p)!r} does not exist")
    return files


def convert_paths(inputs, out_dir, window=None, sidecar=False) -> list:
    """Convert files (directories are searched recursively) to de-identified PNGs in `out_dir`.

    inputs: a path or a list of paths. window: None or (centre, width) in modality units (after
    rescale slope/intercept), overriding the DICOM tags. sidecar: also write `<name>.json` with the
    whitelisted acquisition tags (DICOM only). Returns the written paths (PNGs and sidecars) in input order.
    """
    if window is not None:
        try:
            c, w = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(f"window must be (centre, width), got {window!r}") from None
        if not w >= 1:
            raise ValueError(f"window width must be >= 1, got {w}")
        window = (c, w)
    files = _expand(inputs)
    if not files:
        raise ConversionError(f"no input files found in {inputs!r}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        if is_dicom(f):
            frames, side = dicom_to_arrays(f, window)
            multi = len(frames) > 1
            for k, fr in enumerate(frames):
                png = _write_png(fr, out, f"-f{k}" if multi else "")
                written.append(png)
                if sidecar:
                    meta = dict(side, frame=k) if multi else side
                    js = png.with_suffix(".json")
                    js.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
                    written.append(js)
        else:
            written.append(_write_png(image_to_array(f, window), out))
    return written
