"""``python -m bench.report``: render a finished run's report (see :mod:`bench.report.render`)."""

import sys

from bench.report.render import main

sys.exit(main())
