"""Decompression bombs are refused from the header, before any large allocation, for every format.

Only refusal and the message are asserted; ``python -m bench.bench_bombs`` prints time and peak RSS."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dashboard import imaging
from dashboard.imaging import ImageTooLargeError, ImagingError
from dashboard.testing import bombs


@pytest.mark.parametrize("build, name, declared", [
    (bombs.tiff_bomb, "bomb.tif", "20000 x 20000"),
    (bombs.png_bomb, "bomb.png", "20000 x 20000"),
    (bombs.jpeg_bomb, "bomb.jpg", "60000 x 60000"),
    (bombs.dicom_bomb, "bomb.dcm", "20000 x 20000"),
    (bombs.dicom_jpeg_mismatch, "forged.dcm", "20000 x 20000"),
])
def test_a_bomb_is_refused_from_its_header(tmp_path, build, name, declared):
    path = build(tmp_path / name)
    assert path.stat().st_size < 1_200_000  # small files ...
    with pytest.raises(ImageTooLargeError) as info:
        imaging.load_image(path)
    msg = str(info.value)
    assert name in msg and declared in msg and "megapixels" in msg and "refused before decoding" in msg


def test_the_tiff_bomb_of_the_issue_is_about_a_megabyte_and_declares_400_megapixels(tmp_path):
    path = bombs.tiff_bomb(tmp_path / "issue.tif")
    header = imaging.read_header(path.read_bytes())
    assert (header.format, header.rows, header.cols, header.n_pixels) == ("TIFF", 20000, 20000, 400_000_000)


def test_a_multi_frame_dicom_counts_every_frame(tmp_path):
    path = bombs.dicom_bomb(tmp_path / "tomo.dcm", side=3000, frames=20)  # 9 MP a frame, 180 MP in all
    with pytest.raises(ImageTooLargeError, match="3000 x 3000 pixels x 20 frames"):
        imaging.load_image(path)


def test_the_cap_is_a_setting(tmp_path, monkeypatch):
    path = tmp_path / "film.png"
    Image.fromarray(np.zeros((300, 200), np.uint8)).save(path)
    assert imaging.load_image(path).shape == (300, 200)
    monkeypatch.setenv("CONCEPTLENS_MAX_PIXELS", "50000")
    with pytest.raises(ImageTooLargeError, match="0 megapixels allowed"):
        imaging.load_image(path)
    assert imaging.load_image(path, max_pixels=60_000).shape == (300, 200)


def test_a_file_larger_than_any_allowed_image_is_not_read(tmp_path):
    path = tmp_path / "huge.dcm"
    with open(path, "wb") as fh:  # sparse: 2 GiB on paper, nothing on disk
        fh.truncate(2 << 30)
    with pytest.raises(ImageTooLargeError, match="MiB"):
        imaging.load_image(path, max_pixels=1_000_000)


@pytest.mark.parametrize("name, data, looks", [
    ("x.png", b"Patient list\nDoe, Jane\n" * 20, "a text file"),
    ("x.jpg", b"<!DOCTYPE html><html><body>login</body></html>", "an HTML page"),
    ("x.tif", b"%PDF-1.7\n" + bytes(200), "a PDF document"),
    ("x.png", b"PK\x03\x04" + bytes(200), "a ZIP archive"),
])
def test_a_mislabelled_file_says_what_it_looks_like(tmp_path, name, data, looks):
    path = tmp_path / name
    path.write_bytes(data)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".tif": "TIFF"}[path.suffix]
    with pytest.raises(ImagingError, match=rf"^{name} is not a valid {fmt} \(it looks like {looks}\)"):
        imaging.load_image(path)


def test_a_text_file_named_dcm_says_it_is_text(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_bytes(b"This is a text file that someone renamed.\n" * 10)
    with pytest.raises(ImagingError, match=r"not a DICOM file \(it looks like a text file"):
        imaging.load_image(path)
