"""``python report.py <dir>``: write ``<dir>/report.html`` (see :mod:`memsig.report`);
``python report.py a.npz b.npz ...``: compare signature files (:mod:`memsig.report.compare`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memsig.report.build import write_report
from memsig.report.compare import compare
from memsig.report.sources import ReportError
from memsig.report.study import StudySettings, add_study_arguments, write_static_report


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the report (or the comparison), print where it is; 0, or 2 with the reason
    when there is nothing to report, a file there is not a signature, or signatures share no cell."""
    ap = argparse.ArgumentParser(
        prog="report.py",
        description="Write one self-contained interactive HTML page (report.html) for a probe run, a train run "
        "or a multirun dir; it opens offline. Given two or more signature files, compare them instead: side by "
        "side on one colour scale, difference maps and distances.",
    )
    ap.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="probe run dir (signature.npz), train run dir (metrics.json + signatures/) or multirun dir (job "
        "folders); or two or more signature.npz files",
    )
    ap.add_argument(
        "--n-boot",
        type=int,
        help="bootstrap resamples of the distance intervals (default: 200 for a page, 1000 to compare)",
    )
    study = ap.add_argument_group(
        "multirun", "how a multirun page names and compares its models (as the experiment's StudyReport callback does)"
    )
    add_study_arguments(study)
    study.add_argument(
        "--static", action="store_true", help="also the static files of <dir>/report/ (figures, CSV, markdown)"
    )
    files = ap.add_argument_group("signature files", "comparing two or more signature.npz files")
    files.add_argument("--names", nargs="+", help="a short name per signature (default: run dir names)")
    files.add_argument("--state", help="state to compare (default: each signature's first probed state)")
    files.add_argument("--out", type=Path, help="output folder (default: outputs/compare/<date_time>)")
    args = ap.parse_args(argv)
    try:
        if len(args.paths) > 1 or args.paths[0].is_file():
            if len(args.paths) < 2:
                ap.error("give a run dir, or two or more signature files to compare")
            compare(args.paths, args.names, args.state, args.out, args.n_boot or 1000)
            return 0
        settings = StudySettings(args.title, args.label, args.select_over, args.difference)
        if args.static:
            print(f"static report: {write_static_report(args.paths[0], settings, n_boot=args.n_boot or 200)}")
        out = write_report(args.paths[0], args.n_boot or 200, settings)
    except (ReportError, ValueError) as err:  # a SignatureError is a ValueError
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
