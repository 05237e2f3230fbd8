"""``python -m memsig.report <dir>``: write ``<dir>/report.html`` (see :mod:`memsig.report`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from memsig.probe.signature import SignatureError
from memsig.report.build import write_report
from memsig.report.sources import ReportError
from memsig.report.study import StudySettings, add_study_arguments, write_static_report


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the report, print where it is; 0, or 2 with the reason when there is nothing to
    report or a file there is not a signature."""
    ap = argparse.ArgumentParser(
        prog="report.py",
        description="Write one self-contained interactive HTML page "
        "(report.html) for a probe run, a train run or a multirun dir; it opens offline.",
    )
    ap.add_argument(
        "dir",
        type=Path,
        help="probe run dir (signature.npz), train run dir (metrics.json + signatures/) or multirun dir (job folders)",
    )
    ap.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples of a multirun's distance intervals")
    study = ap.add_argument_group(
        "multirun", "how a multirun page names and compares its models (as the experiment's StudyReport callback does)"
    )
    add_study_arguments(study)
    study.add_argument(
        "--static", action="store_true", help="also the static files of <dir>/report/ (figures, CSV, markdown)"
    )
    args = ap.parse_args(argv)
    settings = StudySettings(args.title, args.label, args.select_over, args.difference)
    try:
        if args.static:
            print(f"static report: {write_static_report(args.dir, settings, n_boot=args.n_boot)}")
        out = write_report(args.dir, args.n_boot, settings)
    except (ReportError, SignatureError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report: {out} ({out.stat().st_size / 1e6:.1f} MB, open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
