"""The model-card notice every saved quality-gated adapter carries."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import ModelCard

from ..files import write_file_atomic

NOTICE_MARKER = "<!-- petal-peft:how-to-load -->"

NOTICE = f"""{NOTICE_MARKER}
## How to load this adapter

This is a **quality-gated dual-LoRA** adapter (PETALface) made with petal-peft. PEFT alone cannot load it
(it fails with `KeyError: 'QUALITY_GATED_LORA'`): install petal-peft from its source repository and import it
first. petal-peft is not published on a package index; from a clone of its repository:

```bash
pip install -e .
```

```python
import petal_peft  # registers the QUALITY_GATED_LORA adapter type with PEFT
from peft import PeftModel

model = PeftModel.from_pretrained(base_model, "<this repo or folder>")
embeddings = model(pixel_values=x, quality=q)  # q in [0, 1] per image, 1 = high quality
```
"""


def _write_atomic(path: str, text: str) -> None:
    write_file_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def add_petal_peft_notice(directory: str) -> str:
    """Insert (once) the how-to-load notice and petal-peft tags into ``directory/README.md``; return its path."""
    path = os.path.join(directory, "README.md")
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    if NOTICE_MARKER in text:
        return path
    card = ModelCard(text if text.startswith("---") else "---\nlibrary_name: peft\n---\n" + text)
    card.data.tags = sorted(set(card.data.tags or []) | {"petal-peft", "quality-gated-lora"})
    lines = card.text.lstrip("\n").split("\n")
    # Right after the title when there is one, else first: the first thing a reader needs.
    insert_at = 1 if lines and lines[0].startswith("# ") else 0
    lines[insert_at:insert_at] = ["", NOTICE]
    card.text = "\n".join(lines)
    _write_atomic(path, str(card))
    return path
