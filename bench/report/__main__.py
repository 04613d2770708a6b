"""``python -m bench.report``: render a finished run's report (see :mod:`bench.report.cli`)."""

import sys

from bench.report.cli import main

sys.exit(main())
