"""Print the command lines of README.md's "Two commands" block, as written, for CI to run with bash.

CI runs them exactly as a new user would paste them (comments and all), so a change to README.md that breaks
them fails CI.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands(text: str) -> str:
    section = text.split("## Two commands", 1)[1]
    block = re.search(r"^```bash\n(.*?)^```", section, re.S | re.M)
    if block is None:
        raise SystemExit("README.md: no ```bash block under '## Two commands'")
    return block.group(1)


if __name__ == "__main__":
    sys.stdout.write(readme_commands(README.read_text(encoding="utf-8")))
