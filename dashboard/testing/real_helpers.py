"""Helpers for the tests on real data: a small mini-MIAS folder copied from ../shared/data."""
from __future__ import annotations

import shutil
from pathlib import Path


def copy_mias_subset(shared_data: Path, dest: Path, refs: list[str]) -> Path:
    """A mini-MIAS folder (images/ + labels.txt) with only ``refs`` (e.g. 'mdb005'); returns it."""
    src = shared_data / "mini-mias"
    (dest / "images").mkdir(parents=True, exist_ok=True)
    keep = set(refs)
    for ref in refs:
        shutil.copyfile(src / "images" / f"{ref}.png", dest / "images" / f"{ref}.png")
    lines = [ln for ln in (src / "labels.txt").read_text().splitlines() if ln.split()[:1] and ln.split()[0] in keep]
    (dest / "labels.txt").write_text("\n".join(lines) + "\n")
    return dest
