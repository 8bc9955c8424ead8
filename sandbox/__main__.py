"""`python -m sandbox up|down|status`."""

import sys

from sandbox.box import main

sys.exit(main())
