"""``python -m memhil`` is the ``memhil`` command."""

import sys

from memhil.cli import main

sys.exit(main())
