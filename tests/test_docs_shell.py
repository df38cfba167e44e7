"""Every ```bash block of README.md and docs/**/*.md parses and pastes as written; the cheap ones run.

Checks, per block: ``bash -n`` accepts it; a line ending in ``\\`` is followed by a continuation line (not by an
empty line, a comment or the end of the block); no ``\\`` is followed by a comment on its line (``\\ # why``
escapes a space and ends the command there); a line that starts with spaces and a flag (``  --data ...``), which
reads as the continuation of a command, follows a line ending in ``\\``.

A block marked ``<!-- docs-test: run WORKSPACE -->`` on the line before its fence is run with bash, ``set -e``,
in a folder prepared by the named workspace builder below (tiny models and images, offline), with ``petal-peft``
on the PATH; the marked blocks of one page share that folder in order, like the python blocks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_FENCE = re.compile(r"^```(?:bash|sh|shell)[^\n]*\n(.*?)^```", re.S | re.M)
_RUN = re.compile(r"<!--\s*docs-test:\s*run\s+([\w-]+)\s*-->")


def shell_blocks(text: str) -> list[tuple[int, str | None, str]]:
    """(line of the fence, workspace name or None, code) per bash block."""
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip()
        mark = _RUN.fullmatch(before[before.rfind("<!--") :]) if before.endswith("-->") else None
        blocks.append((text.count("\n", 0, match.start()) + 1, mark.group(1) if mark else None, match.group(1)))
    return blocks


def paste_problems(code: str) -> list[str]:
    """What breaks when ``code`` is pasted into a shell line by line (besides syntax errors)."""
    problems = []
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if re.search(r"\\\s+#", line):
            problems.append(f"line {i + 1}: a comment after '\\' ends the command there: {line.strip()!r}")
        if line.rstrip().endswith("\\"):
            following = lines[i + 1].strip() if i + 1 < len(lines) else ""
            if not following or following.startswith("#"):
                problems.append(f"line {i + 1}: '\\' is followed by {'a comment' if following else 'nothing'}")
        if re.match(r"\s+--?[A-Za-z]", line) and (i == 0 or not lines[i - 1].rstrip().endswith("\\")):
            problems.append(f"line {i + 1}: reads as a continuation, but line {i} does not end in '\\': {line!r}")
    return problems


BLOCKS = [
    (page, line, workspace, code)
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for line, workspace, code in shell_blocks(page.read_text(encoding="utf-8"))
]


def test_the_checks_catch_what_breaks_a_paste():
    broken = (
        "cmd \\\n  --a 1            # why\n  --b 2\n"  # a comment without '\': --b starts a new command
        "cmd --x \\   # comment\n  --y\n"  # '\' then a comment
        "cmd \\\n\n"  # '\' then nothing
    )
    problems = paste_problems(broken)
    assert any("line 3" in p and "continuation" in p for p in problems), problems
    assert any("line 4" in p and "comment after" in p for p in problems), problems
    assert any("line 6" in p and "nothing" in p for p in problems), problems
    assert paste_problems("cmd \\\n  --a 1 \\\n  --b 2   # fine: the last line\n") == []
    text = "<!-- docs-test: run tiny-deploy -->\n```bash\necho hi\n```\n\n```bash\nls\n```\n"
    assert [(w, c) for _, w, c in shell_blocks(text)] == [("tiny-deploy", "echo hi\n"), (None, "ls\n")]


@pytest.mark.parametrize(
    "page, line, code",
    [(p, n, c) for p, n, _, c in BLOCKS],
    ids=[f"{p.relative_to(REPO)}:{n}" for p, n, _, _ in BLOCKS],
)
def test_shell_blocks_parse_and_paste(page, line, code):
    where = f"{page.relative_to(REPO)}:{line}"
    done = subprocess.run(["bash", "-n"], input=code, capture_output=True, text=True)
    assert done.returncode == 0, f"{where}: bash -n: {done.stderr.strip()}"
    assert not paste_problems(code), f"{where}: {paste_problems(code)}"


# ---- running the cheap blocks ------------------------------------------------------------------------------------
def _tiny_deploy(folder: Path) -> None:
    """base/ (a tiny ViT), adapter/ (quality-gated, resolution estimator), gallery/ and probes/ of 4 identities,
    my_pairs.txt and pairs.txt (labelled pairs over gallery/), a.jpg and b.jpg."""
    import numpy as np
    from peft import get_peft_model
    from PIL import Image
    from tiny_models import randomize_adapters, tiny_vit

    from petal_peft import QualityGatedLoraConfig

    size = tiny_vit().config.image_size
    names = ["ada", "bob", "cy", "dee"]
    for k, name in enumerate(names):
        coarse = np.random.default_rng(k).uniform(0, 255, size=(4, 4, 3))
        for v in range(2):
            img = np.kron(coarse, np.ones((size // 4, size // 4, 1))) + np.random.default_rng(10 * k + v).normal(
                0, 8, (size, size, 3)
            )
            image = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
            (folder / "gallery" / name).mkdir(parents=True, exist_ok=True)
            image.save(folder / "gallery" / name / f"{v}.png")
        (folder / "probes" / name).mkdir(parents=True, exist_ok=True)
        image.resize((8, 8)).resize((size, size)).save(folder / "probes" / name / "p.png")
    Image.open(folder / "gallery" / "ada" / "0.png").save(folder / "a.jpg")
    Image.open(folder / "gallery" / "bob" / "0.png").save(folder / "b.jpg")
    lines = []
    for k, name in enumerate(names):  # 4 genuine and 8 impostor pairs: enough for 10-fold verification
        lines.append(f"gallery/{name}/0.png\tgallery/{name}/1.png\t1")
        lines.append(f"gallery/{name}/0.png\tgallery/{names[k - 1]}/1.png\t0")
        lines.append(f"gallery/{name}/1.png\tgallery/{names[k - 2]}/0.png\t0")
    (folder / "my_pairs.txt").write_text("\n".join(lines) + "\n")
    (folder / "pairs.txt").write_text("\n".join(line.replace("gallery/", "") for line in lines) + "\n")
    tiny_vit().save_pretrained(folder / "base")
    model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=2, lora_alpha=2, quality_estimator="resolution"))
    randomize_adapters(model, std=0.3)
    model.save_pretrained(folder / "adapter")


WORKSPACES = {"tiny-deploy": _tiny_deploy}
RUN_PAGES = sorted({page for page, _, workspace, _ in BLOCKS if workspace})


def test_every_workspace_named_exists():
    assert {w for _, _, w, _ in BLOCKS if w} <= set(WORKSPACES)


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(REPO)) for p in RUN_PAGES])
def test_marked_shell_blocks_run(page, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "petal-peft"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m petal_peft.cli "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    prepared: set[str] = set()
    work = tmp_path / "work"
    work.mkdir()
    for p, line, workspace, code in BLOCKS:
        if p != page or not workspace:
            continue
        if workspace not in prepared:
            WORKSPACES[workspace](work)
            prepared.add(workspace)
        done = subprocess.run(
            ["bash", "-e", "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        where = f"{page.relative_to(REPO)}:{line}"
        assert done.returncode == 0, f"the bash block at {where} fails as written:\n{done.stderr[-3000:]}"
    shutil.rmtree(work, ignore_errors=True)
