"""``python -m cohort.cli``: the `cohort` command."""

import sys

from cohort.cli import main

sys.exit(main())
