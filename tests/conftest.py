import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Tiny models on a busy 2-core machine run far faster on one thread (less thread hand-off than work).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# ---- the inference workspace of the embed / search / verify tests (built once per test module) -----------------
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A tiny base, a gated adapter and its proxies, gallery and probe folders (testing_utils)."""
    from testing_utils import make_inference_workspace

    return make_inference_workspace(tmp_path_factory.mktemp("inference"))


@pytest.fixture(scope="module")
def gate_index(ws):
    """The workspace's gallery embedded with its adapter in gate mode (an EmbeddingIndex)."""
    from testing_utils import embed_gate_index

    return embed_gate_index(ws)


@pytest.fixture(scope="module")
def verification_report(ws):
    """The path of a verification report of the workspace's adapter (``petal-peft eval``)."""
    from testing_utils import make_verification_report

    return make_verification_report(ws)
