"""memhil: hardware-in-the-loop framework for memristive in-memory computing.

One Backend contract (``memhil.backends.base``) is implemented by a batched torch
crossbar simulator (``memhil.backends.sim``) and, over a Station of instruments, by
the hardware backend; algorithms and protocols are written once against it.
"""

from memhil.core.errors import ConfigError, LimitError

__all__ = ["ConfigError", "LimitError", "__version__"]
__version__ = "0.1.0"
