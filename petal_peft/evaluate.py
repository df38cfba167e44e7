"""``python -m petal_peft.evaluate ...``: the same as ``petal-peft eval ...``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from petal_peft.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["eval", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
