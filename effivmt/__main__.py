"""``python -m effivmt`` = the ``effivmt`` console script."""

import sys

from effivmt.cli import main

sys.exit(main())
