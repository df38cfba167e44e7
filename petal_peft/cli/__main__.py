"""``python -m petal_peft.cli ...``: the same as ``petal-peft ...``."""

import sys

from petal_peft.cli import main

sys.exit(main())
