"""The real-face source called in a process that already ran torch with several threads must not hang.

With forked workers, the dlib alignment (the real-face run's default preparation) waited for ever in the workers
after a few torch training steps in the parent: a forked child inherits locks held by threads that do not exist
in it. The check runs in a subprocess with a timeout, so a regression fails
instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from testing_utils import needs_dlib

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, {tests!r})
    from testing_utils import fake_face_settings, make_fake_faces

    from petal_peft.benchmark.sources import DATA_SOURCES


    if __name__ == "__main__":
        faces = make_fake_faces(Path(sys.argv[1]))
        torch.set_num_threads(2)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3))
        for _ in range(3):  # a few training-like steps: torch's thread pool is now running
            net(torch.randn(16, 3, 64, 64)).square().mean().backward()
        settings = fake_face_settings(faces, prepare="arcface", calibration_images=8, num_threads=2)
        data = DATA_SOURCES.get("real_faces")(settings, 112)
        print("prepared", data.splits["eval"].sharp.shape[0])
    """
)


@pytest.mark.slow
@needs_dlib  # the arcface preparation aligns with dlib
def test_real_faces_source_after_a_torch_forward_does_not_hang(tmp_path):
    script = tmp_path / "after_torch.py"
    script.write_text(SCRIPT.format(tests=str(REPO / "tests")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "faces")],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("real_faces_source hung after a torch forward (fork after threads?): no result in 240 s")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prepared" in done.stdout
