"""``python report.py <dir>``: write ``<dir>/report.html`` (see :mod:`memsig.report`);
``python report.py a.npz b.npz ...``: the study of signature files (:mod:`memsig.report.study`),
as static files and the interactive page."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from memsig.report.build import REPORT, study_page, write_page, write_report
from memsig.report.sources import ReportError, kind_of
from memsig.report.static import FOLDER, write_static
from memsig.report.study import Study, add_study_arguments, settings_of
from memsig.resolvers import PROJECT_ROOT

INTERACTIVE = "interactive.html"  # the interactive page of signature files, beside their static report.html


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, write the report, print where it is; 0, or 2 with the reason when there is
    nothing to report, a file there is not a signature, or signatures share no cell."""
    ap = argparse.ArgumentParser(
        prog="report.py",
        description="Write one self-contained interactive HTML page (report.html) for a probe run, a train run "
        "or a multirun dir; it opens offline. Several models (a multirun, or two or more signature files) are a "
        "study: side by side on one colour scale, difference maps and distances, as the interactive page and "
        "(--static; always for signature files) as static files: figures, CSV, markdown.",
    )
    ap.add_argument(
        "paths",
        nargs="+",
        type=Path,
        help="probe run dir (signature.npz), train run dir (metrics.json + signatures/) or multirun dir (job "
        "folders); or two or more signature.npz files",
    )
    group = ap.add_argument_group("study", "how a study names and compares its models (as the StudyReport callback)")
    add_study_arguments(group)
    group.add_argument("--names", nargs="+", help="signature files: a short name per file (default: run dir names)")
    group.add_argument("--static", action="store_true", help="multirun: also the static files (figures, CSV, markdown)")
    group.add_argument(
        "--out",
        type=Path,
        help=f"the static files' folder (default: <multirun dir>/report; for signature files "
        f"outputs/compare/<date_time>, with the interactive page as {INTERACTIVE})",
    )
    args = ap.parse_args(argv)
    files = len(args.paths) > 1 or args.paths[0].is_file()
    if files and len(args.paths) < 2:
        ap.error("give a run dir, or two or more signature files to compare")
    if args.names and not files:
        ap.error("--names names signature files; a multirun's models are named by --label")
    settings = settings_of(args)
    try:
        if not files and not (args.static or args.out):
            page = write_report(args.paths[0], settings)
        else:
            if files:
                study = Study.from_signatures(args.paths, args.names, settings)
                static = args.out or PROJECT_ROOT / "outputs" / "compare" / time.strftime("%Y-%m-%d_%H-%M-%S")
                page = static / INTERACTIVE
            else:
                if kind_of(args.paths[0]) != "sweep":
                    ap.error("--static and --out: static files are written for a multirun or signature files")
                study = Study.from_sweep(args.paths[0], settings)
                static, page = args.out or args.paths[0] / FOLDER, args.paths[0] / REPORT
            write_static(study, static)  # prints where, its tables and distances
            write_page(study_page(study), page)
    except (ReportError, ValueError) as err:  # a SignatureError is a ValueError
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"report: {page} ({page.stat().st_size / 1e6:.1f} MB, open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
