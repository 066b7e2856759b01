"""Render the tables of docs/RESULTS.md, docs/BENCHMARKS.md and README.md from docs/results/*.json.

    python scripts/render_results.py           # rewrite the generated blocks in place
    python scripts/render_results.py --check   # exit 1 when a committed block differs

See hf_sparc/reports/render.py for the block markers and the views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_sparc.reports.render import render_file

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "RESULTS.md", ROOT / "docs" / "BENCHMARKS.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args(argv)
    stale = [path for path in DOCUMENTS if not render_file(path, ROOT / "docs" / "results", check=args.check)]
    for path in stale:
        print(f"{path.relative_to(ROOT)}: {'out of date' if args.check else 'rewritten'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
