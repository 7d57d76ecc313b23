"""dmlscope's application layer: HTTP API, command line, store and jobs over `models`."""
__version__ = "0.1.0"

import models  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
