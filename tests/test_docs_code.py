"""Every ```python block of README.md and docs/**/*.md runs as written (offline, CPU, tiny models).

How to write a python block in the docs (the convention this test enforces):

* The blocks of one page run in order in one shared namespace, like a notebook, inside an empty temporary
  folder (relative paths such as ``"adapter/"`` land there), with ``HF_HUB_OFFLINE=1``. Make them
  self-contained: build tiny models from configs, random tensors for images.
* A block that cannot run here as written (it downloads from the Hub, needs a GPU, real data or a trained
  output folder) is marked by an HTML comment on the line just before its fence, saying why::

      <!-- docs-test: compile-only (needs the TinyFace data) -->
      ```python
      ...
      ```

  It is then only compiled (its syntax is checked). Keep such blocks few and short.
* Names a snippet takes from the surrounding prose (``x``, ``model``, ``gallery_images``) may be defined by a
  hidden setup comment, run just before the next block and not shown on the rendered page::

      <!-- docs-test: setup
      import torch
      x = torch.randn(2, 3, 32, 32)
      -->

* A block that needs an optional extra names the modules it imports; it is skipped, with the reason, where one
  is missing (CI installs every extra, so there it runs)::

      <!-- docs-test: requires onnxruntime onnxscript (the onnx extra) -->

* Shell commands go in ```bash blocks (checked and partly run by ``test_docs_shell.py``), pseudo-code and file
  trees in ```text blocks.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)
_MARK = re.compile(r"<!--\s*docs-test:\s*(compile-only|setup|requires)\b(.*)-->", re.S)


def python_blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(line, kind, setup code, block code) per python block; kind is "run", "compile-only" or "requires <modules>
    (why)"."""
    blocks = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip()
        kind, setup = "run", ""
        mark = _MARK.fullmatch(before[before.rfind("<!--") :]) if before.endswith("-->") else None
        if mark:
            if mark.group(1) == "compile-only":
                kind = "compile-only"
            elif mark.group(1) == "requires":
                kind = "requires " + mark.group(2).strip()
            else:
                setup = mark.group(2)
        blocks.append((line, kind, setup, match.group(1)))
    return blocks


PAGES = [
    page
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    if python_blocks(page.read_text(encoding="utf-8"))
]


def test_the_convention_is_parsed():
    text = (
        "<!-- docs-test: compile-only (needs a GPU) -->\n```python\nmodel.cuda()\n```\n\n"
        "<!-- docs-test: setup\nx = 1\n-->\n```python\nprint(x)\n```\n\n```python\ny = 2\n```\n"
    )
    text += "\n<!-- docs-test: requires onnxruntime (the onnx extra) -->\n```python\nimport onnxruntime\n```\n"
    assert [(kind, setup.strip(), code.strip()) for _, kind, setup, code in python_blocks(text)] == [
        ("compile-only", "", "model.cuda()"),
        ("run", "x = 1", "print(x)"),
        ("run", "", "y = 2"),
        ("requires onnxruntime (the onnx extra)", "", "import onnxruntime"),
    ]


#: pages whose blocks take long enough to leave the quick loop (``-m "not slow"``), and why
SLOW_PAGES = {"docs/deploy.md": "exports every ONNX part of an adapted model and runs it (20-80 s)"}


@pytest.mark.parametrize(
    "page",
    [
        pytest.param(page, marks=pytest.mark.slow) if str(page.relative_to(REPO)) in SLOW_PAGES else page
        for page in PAGES
    ],
    ids=[str(p.relative_to(REPO)) for p in PAGES],
)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PETAL_PEFT_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for line, kind, setup, code in blocks:
        where = f"{page.relative_to(REPO)}:{line}"
        if setup:
            exec(compile(setup, f"{where} (setup)", "exec"), namespace)
        compiled = compile(code, where, "exec")
        if kind.startswith("requires"):
            words = kind.split("(")[0].split()[1:]
            missing = [m for m in words if importlib.util.find_spec(m) is None]
            if missing:
                pytest.skip(f"{where} needs {', '.join(missing)} {kind[kind.find('(') :] if '(' in kind else ''}")
            kind = "run"
        if kind == "run":
            try:
                exec(compiled, namespace)
            except Exception as err:
                raise AssertionError(
                    f"the python block at {where} fails as written: {type(err).__name__}: {err}\n"
                    "(mark it <!-- docs-test: compile-only (why) --> only if it cannot run offline)"
                ) from err
    assert os.getcwd() == str(tmp_path)
