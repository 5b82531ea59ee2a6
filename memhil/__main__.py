"""``python -m memhil`` is the ``memhil`` command."""

import sys

from memhil.cli.app import main

sys.exit(main())
