"""``python -m dashboard.study``: see ``dashboard.study.cli``."""
from dashboard.study.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
