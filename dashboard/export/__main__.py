"""``python -m dashboard.export dicom --image IMAGE_ID --out DIR [--probe-version N]``: see ``dashboard.export.cli``."""
from dashboard.export.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
