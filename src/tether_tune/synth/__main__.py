"""``python -m tether_tune.synth``: the ``generate`` command, as the old module ran it."""

import sys

from .cli import main

sys.exit(main())
