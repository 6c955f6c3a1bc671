"""``python -m dashboard.export dicom --image IMAGE_ID --out DIR [--probe-version N]``: the DICOM objects of
one image (``export_dicom``), with the concept report of the probe version (default: the latest)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import model_zoo
from dashboard import imaging
from dashboard.data.domain import domain_warning, image_row_domain
from dashboard.data.files import load_stored_image
from dashboard.data.store import NotFoundError, open_store
from dashboard.engine import probes, report
from dashboard.engine.tcav import TCAVResult
from dashboard.errors import ConceptLensError
from dashboard.export.dicom import DicomExport, export_dicom
from dashboard.settings import load_settings, pick_device


def export_image(store, settings, image_id: str, out_dir: Path, probe_version: int | None = None,
                 with_report: bool = True) -> DicomExport:
    """Build the image's concept report (the probe version's model card; TCAV of its latest run) and
    export it with the drawings. Without any probe (or ``with_report=False``) the drawings only."""
    row = store.get_image(image_id)
    probe = None
    if with_report:
        try:
            probe = probes.load_probe(store, probe_version)
        except NotFoundError:
            if probe_version is not None:
                raise
    card = model_zoo.load_card(probe.model_card if probe else settings.model_card,
                               extra_dirs=[settings.user_cards_dir])
    img, mask, frame = imaging.prepare_model_image(load_stored_image(store, row), card.pixel_spacing_mm,
                                                   default_spacing_mm=row.get("pixel_spacing_mm"))
    if probe is None:
        return export_dicom(store, image_id, out_dir, card=card, frame=frame)
    device = pick_device(settings.device)
    model = model_zoo.create_model(card, device=device)
    run = store.latest_tcav_run(probe.version)
    labels = store.list_unit_labels(card.name, card.head_layer or card.default_layer)
    rep = report.build_image_report(
        model, card, img, probe, config=report.ReportConfig(device=device),
        inputs=report.ReportInputs(mask=mask, store=store, unit_labels=labels, image_id=image_id,
                                   tcav=TCAVResult.from_dict(run["results"]) if run else None))
    rep.domain_warning = domain_warning(card, image_row_domain(store, image_id))
    return export_dicom(store, image_id, out_dir, report=rep, card=card, frame=frame)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.export", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dicom", help="DICOM SEG, Parametric Map and SR of one image")
    d.add_argument("--image", required=True, help="the image id (Worklist / Report)")
    d.add_argument("--out", required=True, type=Path, help="folder to write the .dcm files into")
    d.add_argument("--probe-version", type=int, default=None, help="concept probe version (default: the latest)")
    d.add_argument("--drawings-only", action="store_true", help="only the readers' drawings (no model run)")
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        with open_store(settings) as store:
            res = export_image(store, settings, args.image, args.out, args.probe_version,
                               with_report=not args.drawings_only)
    except ConceptLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in res.files:
        print(p)
    for note in res.notes:
        print(f"note: {note}")
    return 0
