"""How much a decompression bomb costs ConceptLens: ``python -m bench.bench_bombs``.

Builds each bomb of ``dashboard.testing.bombs`` (a ~1 MB zlib TIFF of 20000 x 20000 pixels, a PNG of the
same size, a JPEG and a DICOM that declare 3.6 GP and 400 MP, a JPEG-in-DICOM whose frame says more
than its header, a 256 MiB-of-zeros ZIP), then refuses each in a fresh process and prints the time of
the refusal and the process's peak RSS against its RSS before (the imports). Before the header
checks, the TIFF alone cost 3.3 GB, twice (issue 13). Writes bench/results/bombs.json.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from dashboard import imaging
from dashboard.data.uploads import UploadError, check_zip
from dashboard.testing import bombs

RESULTS = Path(__file__).resolve().parent / "results" / "bombs.json"
BUILDS = {
    "tiff 20000x20000 zlib": (bombs.tiff_bomb, "bomb.tif"),
    "png 20000x20000": (bombs.png_bomb, "bomb.png"),
    "jpeg 60000x60000": (bombs.jpeg_bomb, "bomb.jpg"),
    "dicom 20000x20000": (bombs.dicom_bomb, "bomb.dcm"),
    "dicom jpeg frame 20000x20000": (bombs.dicom_jpeg_mismatch, "forged.dcm"),
    "zip 256 MiB of zeros": (bombs.zip_bomb, "bomb.zip"),
}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def refuse(path: Path) -> dict:
    """Refuse one bomb in this process: seconds, peak RSS before and after (MB), the message."""
    before = _rss_mb()
    t0 = time.perf_counter()
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf:
                check_zip(zf, path.name, imaging.max_file_bytes(60_000_000))
        else:
            imaging.load_image(path)
        message = "NOT REFUSED"
    except (imaging.ImagingError, UploadError) as exc:
        message = str(exc)
    return {"seconds": time.perf_counter() - t0, "rss_before_mb": before, "rss_peak_mb": _rss_mb(),
            "message": message}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--refuse"]:  # the child: one refusal, its figures as JSON on stdout
        print(json.dumps(refuse(Path(argv[1]))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for what, (build, name) in BUILDS.items():
            path = build(Path(tmp) / name)
            out = subprocess.run([sys.executable, "-m", "bench.bench_bombs", "--refuse", str(path)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r.update(bomb=what, file_kb=round(path.stat().st_size / 1024, 1))
            rows.append(r)
    print(f"{'bomb':32s} {'file':>9s} {'refused in':>11s} {'RSS before':>11s} {'peak RSS':>9s} {'growth':>7s}")
    for r in rows:
        print(f"{r['bomb']:32s} {r['file_kb']:7.0f}KB {r['seconds'] * 1000:9.1f}ms {r['rss_before_mb']:9.0f}MB "
              f"{r['rss_peak_mb']:7.0f}MB {r['rss_peak_mb'] - r['rss_before_mb']:5.0f}MB")
        print(f"    {r['message'][:150]}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(rows, indent=1))
    print(f"wrote {RESULTS}")
    return 1 if any(r["message"] == "NOT REFUSED" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
