"""`python -m emberkeep.cli`, as `python -m emberkeep`."""

import sys

from . import main

sys.exit(main())
