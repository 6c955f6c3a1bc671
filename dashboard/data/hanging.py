"""Hanging sheets: a case's views hung as a reader sees them, and images with their truth circles.

Used to check the viewer's conventions on real films (window, laterality, orientation) and to
write the pictures in ``docs/screenshots``. Each image is the viewer's display image
(``imaging.display_image``: windowed source with film labels kept, resampled to the model
spacing, a right breast with its chest wall on the right). Rows are views (CC above MLO),
columns R | L, so the chest walls of a pair meet in the middle.

    python -m dashboard.data.hanging hang --out docs/screenshots/real_hanging.png [--source cbis-ddsm]
    python -m dashboard.data.hanging truth --out docs/screenshots/mias_truth.png --source mini-mias --n 8
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dashboard import imaging
from dashboard.data.files import load_stored_image
from dashboard.data.store import Store, StoreError
from dashboard.settings import load_settings

VIEW_ORDER = ("CC", "MLO")
SIDE_ORDER = ("R", "L")
GAP = 6
BACKGROUND = 90  # mid grey between tiles, so a black film border stays visible
PATHOLOGY_COLOURS = {"malignant": (255, 60, 60), "benign": (60, 220, 90)}


def hang_case(rows: list[dict]) -> list[list[dict | None]]:
    """A case's image rows as a grid: one row per view (CC, MLO, then any other), columns R | L."""
    views = [v for v in VIEW_ORDER if any(r["view"] == v for r in rows)]
    views += sorted({r["view"] for r in rows} - set(views))
    return [[next((r for r in rows if r["view"] == v and r["laterality"] == s), None) for s in SIDE_ORDER]
            for v in views]


def _display(store, row: dict, spacing_mm: float):
    m = load_stored_image(store, row)
    # the store's laterality wins (CBIS ids, mini-MIAS inferred side) over an empty header
    m.laterality = row.get("laterality") or m.laterality
    _, _, frame = imaging.prepare_model_image(m, spacing_mm, default_spacing_mm=row.get("pixel_spacing_mm"))
    return imaging.display_image(m, frame), frame, m


CAPTION_H = 16


def _captioned(rgb: np.ndarray, text: str) -> np.ndarray:
    """The tile with a caption strip ABOVE it, so no caption hides a film label or marker."""
    im = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + CAPTION_H), (BACKGROUND,) * 3)
    im.paste(Image.fromarray(rgb), (0, CAPTION_H))
    ImageDraw.Draw(im).text((3, 2), text, fill=(255, 230, 0))
    return np.asarray(im)


def _paste(tiles: list[list[np.ndarray | None]]) -> np.ndarray:
    """Tiles (RGB uint8) on a grey grid, each cell as large as the largest tile of its row/column."""
    heights = [max((t.shape[0] for t in row if t is not None), default=32) for row in tiles]
    ncol = max(len(row) for row in tiles)
    widths = [max((row[c].shape[1] for row in tiles if c < len(row) and row[c] is not None), default=32)
              for c in range(ncol)]
    out = np.full((sum(heights) + GAP * (len(tiles) + 1), sum(widths) + GAP * (ncol + 1), 3), BACKGROUND, np.uint8)
    y = GAP
    for r, row in enumerate(tiles):
        x = GAP
        for c in range(ncol):
            t = row[c] if c < len(row) else None
            if t is not None:
                # right-hand breast (column 0) hugs the centre line from the left, left breast from the right
                dx = widths[c] - t.shape[1] if c == 0 and ncol == 2 else 0
                out[y:y + t.shape[0], x + dx:x + dx + t.shape[1]] = t
            x += widths[c] + GAP
        y += heights[r] + GAP
    return out


def compose_hanging(store, case_ids: list[str], *, spacing_mm: float = 0.4) -> np.ndarray:
    """RGB uint8 sheet: each case hung (CC over MLO, R | L), cases side by side, captions on each image."""
    blocks = []
    for case_id in case_ids:
        grid = hang_case(store.list_images(case_id=case_id))
        tiles = []
        for grid_row in grid:
            row_tiles = []
            for r in grid_row:
                if r is None:
                    row_tiles.append(None)
                    continue
                d, _, _ = _display(store, r, spacing_mm)
                rgb = np.repeat(d[..., None], 3, axis=2)
                row_tiles.append(_captioned(rgb, f"{case_id} {r['laterality']}{r['view']}"))
            tiles.append(row_tiles)
        blocks.append(_paste(tiles))
    h = max(b.shape[0] for b in blocks)
    blocks = [np.pad(b, ((0, h - b.shape[0]), (0, 0), (0, 0)), constant_values=BACKGROUND) for b in blocks]
    return np.concatenate(blocks, axis=1)


def compose_truth(store, image_ids: list[str], *, spacing_mm: float = 0.4, columns: int = 4) -> np.ndarray:
    """RGB uint8 sheet of images with their circle findings drawn where the truth file puts them
    (mapped source -> display through the image's Frame); red malignant, green benign. Each tile
    sits below a caption strip of ``CAPTION_H`` px."""
    tiles = []
    for image_id in image_ids:
        row = next(r for r in store.list_images() if r["image_id"] == image_id)
        d, frame, _ = _display(store, row, spacing_mm)
        im = Image.fromarray(np.repeat(d[..., None], 3, axis=2))
        draw = ImageDraw.Draw(im)
        findings = store.list_findings(image_id)
        seen = set()
        labels = []
        for f in findings:
            attrs = f["attributes"] if isinstance(f["attributes"], dict) else {}
            if isinstance(f["attributes"], str):
                attrs = json.loads(f["attributes"] or "{}")
            labels.append(f"{attrs.get('class', f['concept'])} {f['pathology'][:1].upper()}")
            if f["radius"] is None or (f["cx"], f["cy"], f["radius"]) in seen:
                continue
            seen.add((f["cx"], f["cy"], f["radius"]))
            cx, cy = imaging.source_to_display(frame, row["laterality"], [f["cx"], f["cy"]])
            r = f["radius"] / frame.scale
            colour = PATHOLOGY_COLOURS.get(f["pathology"], (255, 200, 0))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=2)
        text = f"{image_id} {row['laterality']}{row['view']}: " + (", ".join(sorted(set(labels))) or "normal")
        tiles.append(_captioned(np.array(im), text))
    grid = [tiles[i:i + columns] for i in range(0, len(tiles), columns)]
    return _paste(grid)


def save_png(rgb: np.ndarray, path: str | Path, *, width: int | None = 1200) -> Path:
    """Write the sheet as PNG, downsampled (Lanczos) to ``width`` px when it is wider."""
    im = Image.fromarray(rgb)
    if width and im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dashboard.data.hanging", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p_hang = sub.add_parser("hang", help="hang every case of a source (CC over MLO, R | L)")
    p_hang.add_argument("--source", default="cbis-ddsm")
    p_truth = sub.add_parser("truth", help="images with their truth circles")
    p_truth.add_argument("--source", default="mini-mias")
    p_truth.add_argument("--n", type=int, default=8, help="images with circle findings to show")
    p_truth.add_argument("--images", default="", help="comma-separated image ids (overrides --n)")
    for p in (p_hang, p_truth):
        p.add_argument("--out", required=True)
        p.add_argument("--spacing", type=float, default=0.4, help="display pixel size in mm")
        p.add_argument("--width", type=int, default=1200)
    args = ap.parse_args(argv)
    settings = load_settings()
    try:
        with Store(settings.db_path, settings.journal_dir, data_dir=settings.data_dir, read_only=True) as store:
            if args.command == "hang":
                cases = sorted({r["case_id"] for r in store.list_images(source=args.source)})
                if not cases:
                    print(f"error: no {args.source} images in the store", file=sys.stderr)
                    return 2
                sheet = compose_hanging(store, cases, spacing_mm=args.spacing)
            else:
                ids = [i for i in args.images.split(",") if i]
                if not ids:
                    circled = sorted({f["image_id"] for f in store.list_findings() if f["radius"] is not None})
                    rows = {r["image_id"] for r in store.list_images(source=args.source)}
                    circled = [i for i in circled if i in rows]
                    step = max(1, len(circled) // max(args.n, 1))
                    ids = circled[::step][:args.n]
                sheet = compose_truth(store, ids, spacing_mm=args.spacing)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = save_png(sheet, args.out, width=args.width)
    print(f"wrote {path} ({sheet.shape[1]} x {sheet.shape[0]} px before downsampling)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
