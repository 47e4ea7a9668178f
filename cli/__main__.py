"""``python -m genserve.cli``: the same as the ``genserve`` command."""

import sys

from genserve.cli.main import main

sys.exit(main())
