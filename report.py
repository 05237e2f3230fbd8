"""Interactive HTML report of a run or multirun: python report.py <dir> (= python -m memsig.report <dir>)."""

import sys

from memsig.report.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
