"""The one `petal-peft` command line: --version, help text, and one line with exit status 2 for every bad input."""

from __future__ import annotations

import pickle
import re

import pytest
from test_training_helpers import make_face_folder, make_tiny_base, tiny_flags

import petal_peft
from petal_peft.cli import COMMANDS, main
from petal_peft.training import format_metrics_table


def _error_lines(err: str) -> list[str]:
    return [line for line in err.replace("\r", "\n").splitlines() if line.startswith("petal-peft")]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"petal-peft {petal_peft.__version__}"
    assert {"train", "eval"} <= set(COMMANDS)


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return make_tiny_base(root / "base"), make_face_folder(root / "train"), root


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"lora_r": 0}, "--lora-r must be >= 1, got 0"),
        ({"head": "nope"}, "--head must be one of ['adaface', 'arcface', 'combined', 'cosface'], got 'nope'"),
        ({"degrade_fraction": 0, "quality_estimator": "none"}, "no per-image quality for the gate"),
        ({"gate_mode": "nope"}, "--gate-mode must be one of"),
        ({"quality_estimator": "os.system"}, "--quality-estimator must be one of"),
        ({"target_modules": "nope"}, "--target_modules nope: no module of ViTModel has that name"),
        ({"output_dir": "FILE"}, "is a file, not a folder"),
    ],
)
def test_bad_training_flags_are_one_line_with_exit_2(tiny_inputs, tmp_path, capsys, override, expected):
    base, data, _ = tiny_inputs
    (tmp_path / "a-file").write_text("x")
    override = {k: (tmp_path / "a-file" if v == "FILE" else v) for k, v in override.items()}
    flags = tiny_flags(base, data, tmp_path / "out", **override)
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("petal-peft train: error: ") and expected in lines[0], lines[0]
    assert not (tmp_path / "out" / "adapter").exists()


def test_malicious_verification_bin_is_one_line_with_exit_2(tmp_path, capsys):
    from tiny_models import tiny_vit

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    tiny_vit().save_pretrained(tmp_path / "base")
    (tmp_path / "lfw.bin").write_bytes(pickle.dumps(([b"img", b"img"], [Evil()]), protocol=2))
    code = main(
        ["eval", "--model", str(tmp_path / "base"), "--benchmark", "verification", "--data", str(tmp_path / "lfw.bin")]
        + ["--out", str(tmp_path / "out"), "--no-progress"]
    )
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert "refused to load the global" in lines[0] and "print" in lines[0]
    assert "pwned" not in captured.out


def _help(capsys) -> str:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_help_states_each_default_once_and_negations_right(capsys):
    text = _help(capsys)
    assert "--no-horizontal-flip Switch --horizontal-flip off (it is on by default)." in text
    assert "(default: petal-tinyface)" in text and "(default: 64)" in text  # appended where the text says nothing
    assert "(default: None)" not in text
    for entry in re.split(r" (?=--[a-z])", text):
        assert entry.lower().count("default") <= 2 or "embedded default" in entry, entry  # never said twice


def test_metrics_table_orders_ranks_and_has_no_dash_after_resume_without_eval():
    before = {"mAP": 30.0, "rank-10": 60.0, "rank-5": 50.0, "rank-20": 70.0, "rank-1": 40.0, "mode": "proxy"}
    after = {k: (v + 1 if isinstance(v, float) else v) for k, v in before.items()}
    rows = [line.split()[0] for line in format_metrics_table(before, after).splitlines()[1:6]]
    assert rows == ["rank-1", "rank-5", "rank-10", "rank-20", "mAP"]
    resumed = format_metrics_table(before, {})  # metrics before training came from the checkpoint
    assert "—" not in resumed and "not evaluated after training" in resumed
    assert "after" not in resumed.splitlines()[0]
    assert format_metrics_table({}, {}) == "(no evaluation set: no metrics)"


def test_model_card_table_has_no_dash_after_resume_without_eval():
    from petal_peft.training.model_card import _metrics_table

    table = _metrics_table({"rank-10": 60.0, "rank-1": 40.0, "rank-5": 50.0}, {})
    assert "—" not in table and "Not evaluated after training" in table
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:5]] == ["rank-1", "rank-5", "rank-10"]
    assert "| rank-1 | 40.00 | 55.50 |" in _metrics_table({"rank-1": 40.0}, {"rank-1": 55.5})
