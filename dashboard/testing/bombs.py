"""Decompression bombs for the tests and ``bench.bench_bombs``: small files that declare, or expand to,
far more pixels than any mammogram. Each is built without allocating what it declares."""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pydicom
import tifffile
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

SIDE = 20_000  # 20000 x 20000 = 400 MP: 400 MB as uint8, 1.6 GB as float32


def tiff_bomb(path: Path, side: int = SIDE) -> Path:
    """A zlib-compressed 8-bit TIFF of side x side zeros (~1 MB), written tile by tile."""
    tile = np.zeros((512, 512), np.uint8)
    n = (-(-side // 512)) ** 2  # tiles per page
    tifffile.imwrite(path, (tile for _ in range(n)), shape=(side, side), dtype=np.uint8, tile=(512, 512),
                     compression="zlib")
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(path: Path, side: int = SIDE) -> Path:
    """A valid 8-bit grey PNG of side x side zeros: its IDAT is a few hundred KB of zlib."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one row
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def _small_jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((16, 16), 90, np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _patch_sof(jpeg: bytes, side: int) -> bytes:
    at = jpeg.index(b"\xff\xc0")
    return jpeg[:at + 5] + struct.pack(">HH", side, side) + jpeg[at + 9:]


def jpeg_bomb(path: Path, side: int = 60_000) -> Path:
    """A 16 x 16 JPEG whose frame header says side x side (Pillow would allocate 3.6 GB to decode it)."""
    path.write_bytes(_patch_sof(_small_jpeg(), side))
    return path


def _dicom(rows: int, cols: int, pixel_data: bytes, *, frames: int = 1, ts=uid.ExplicitVRLittleEndian) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, cols, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixel_data
    return ds


def dicom_bomb(path: Path, side: int = SIDE, frames: int = 1) -> Path:
    """A DICOM whose header declares side x side (x frames) pixels, with a few bytes of pixel data."""
    _dicom(side, side, b"\x00" * 64, frames=frames).save_as(path, enforce_file_format=True)
    return path


def dicom_jpeg_mismatch(path: Path, side: int = SIDE) -> Path:
    """A JPEG Baseline DICOM that declares 16 x 16 while its compressed frame says side x side."""
    ds = _dicom(16, 16, encapsulate([_patch_sof(_small_jpeg(), side)]), ts=uid.JPEGBaseline8Bit)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def zip_bomb(path: Path, mib: int = 256, name: str = "study/image.dcm") -> Path:
    """A ZIP with one entry of ``mib`` MiB of zeros (deflate: ~1000 to 1)."""
    block = b"\x00" * (1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, zf.open(name, "w", force_zip64=True) as fh:
        for _ in range(mib):
            fh.write(block)
    return path


def zip_with(path: Path, entries: dict[str, bytes], *, symlink: str | None = None) -> Path:
    """A ZIP of ``entries`` (names as given, ``../`` and absolute ones too), plus a symlink entry if named."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (0o120777 << 16)  # S_IFLNK
            zf.writestr(info, "/etc/passwd")
    return path


def read_dicom_rows(path: Path) -> int:
    return int(pydicom.dcmread(path, stop_before_pixels=True).Rows)
