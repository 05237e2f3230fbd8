"""The interactive HTML report of a run or multirun (python report.py <dir>), or signature files
compared side by side (python report.py a.npz b.npz ...); = python -m memsig.report."""

import sys

from memsig.report.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
