"""``python -m esd_gs`` is the same as the ``esd-gs`` command."""

import sys

from .cli.main import main

sys.exit(main())
