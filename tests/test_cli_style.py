"""One style for every subcommand: dashed flags (underscores accepted), --out, --no-progress, help on every flag,
a quick --help, and the messages users meet."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from test_training_helpers import make_face_folder, make_tiny_base, subprocess_env, tiny_flags

from petal_peft.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]


def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, (*path, name))


LEAVES = list(_leaf_parsers(build_parser(fill=True)))


def test_every_flag_and_argument_has_help():
    missing = []
    for parser in [build_parser(fill=True)] + [p for _, p in LEAVES]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{parser.prog} {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
            elif not (action.help or "").strip():
                missing.append(f"{parser.prog} {action.option_strings or action.dest}")
    assert not missing, missing


@pytest.mark.parametrize("path, parser", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_dashes_with_underscore_aliases_out_and_no_progress(path, parser):
    options = parser._option_string_actions
    for name, action in options.items():
        if name.startswith("--"):
            assert options["--" + name[2:].replace("_", "-")] is action, name
            assert options["--" + name[2:].replace("-", "_")] is action, name
    assert "--no-progress" in options, path
    if path[0] != "calibrate":  # calibrate writes into the adapter it is given
        out = options.get("--out") or next(a for a in parser._actions if a.dest == "destination")
        assert out is not None
    formatter = parser._get_formatter()
    for action in parser._actions:
        shown = formatter._format_action_invocation(action)
        assert not re.search(r"--[a-z0-9-]*_", shown), f"{shown} in the help of {path}"


def test_underscored_spelling_still_parses():
    parser = build_parser()
    args = parser.parse_args(["search", "--gallery", "g", "--probes", "p", "--top_k", "3", "--print_all"])
    assert args.top_k == 3 and args.print_all
    args = parser.parse_args(["train", "--output_dir", "x", "--no_progress_bar"])
    assert args.output_dir == "x" and args.progress_bar is False
    args = parser.parse_args(["train", "--out", "y", "--no-progress", "--overwrite"])
    assert args.output_dir == "y" and args.progress_bar is False and args.overwrite_output_dir
    args = parser.parse_args(["convert", "petalface", "m.pt", "--out", "o", "--no-progress", "--lora_scale", "2"])
    assert args.no_progress and args.lora_scale == 2


def _imported(argv: list[str], runner: list[str]) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *runner, *argv],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "petal-peft" in done.stdout
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_help_and_version_load_neither_torch_nor_transformers(tmp_path, argv):
    script = tmp_path / "petal-peft"  # what pip's console script runs
    script.write_text("import sys\nfrom petal_peft.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    for runner in (["-m", "petal_peft.cli"], [str(script)]):
        modules = _imported(argv, runner)
        assert "petal_peft.cli" in modules
        assert not {"torch", "transformers", "peft", "numpy"} & modules, runner


def test_library_import_still_registers_everything():
    code = (
        "import petal_peft, peft\n"
        "from peft.utils import PeftType\n"
        "assert hasattr(PeftType, 'QUALITY_GATED_LORA') or 'QUALITY_GATED_LORA' in str(list(PeftType))\n"
        "from petal_peft.registry import QUALITY_ESTIMATORS\n"
        "assert 'resolution' in QUALITY_ESTIMATORS\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_convert_error_names_the_global_without_torchs_advice(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.zeros(2), "x": Evil()}, tmp_path / "evil.pt")
    out = str(tmp_path / "o")
    code = main(["convert", "insightface-vit", str(tmp_path / "evil.pt"), "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert "`print`" in err and "weights_only=False" not in err and "will likely succeed" not in err
    assert "an insightface" in err and "a insightface" not in err


def test_align_names_the_overwrite_flag(tmp_path):
    from petal_peft.align.folder import align_folder
    from petal_peft.outputs import OutputPathError

    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    with pytest.raises(OutputPathError, match="--overwrite") as info:
        align_folder(tmp_path / "src", tmp_path / "dst")
    assert "pass overwrite." not in str(info.value)


@pytest.mark.parametrize("model", ["./no/such/base", "tests/no-such-base", "/nowhere/base"])
def test_mistyped_local_model_path_is_no_such_folder(tmp_path, capsys, model):
    code = main(["export", "proxy", "--model", model, "--adapter", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "no such folder" in err and "Hub" not in err and "huggingface.co" not in err, err


def test_no_gradient_checkpointing_future_warning(tmp_path, capsys):
    from peft import get_peft_model
    from tiny_models import tiny_vit

    from petal_peft import QualityGatedLoraConfig

    tiny_vit().save_pretrained(tmp_path / "base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(tiny_vit(), QualityGatedLoraConfig(r=2, lora_alpha=2, target_modules=["q_proj"]))
    model.save_pretrained(tmp_path / "adapter")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            ["export", "proxy", "--model", str(tmp_path / "base"), "--adapter", str(tmp_path / "adapter")]
            + ["--out", str(tmp_path / "proxy"), "--no-progress"]
        )
    assert code == 0, capsys.readouterr().err
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("style")
    return make_tiny_base(root / "base"), make_face_folder(root / "train"), root


def test_summary_after_resume_counts_the_steps_run(tiny_run, tmp_path, capsys):
    base, data, _ = tiny_run
    flags = tiny_flags(base, data, tmp_path / "out", max_steps=2, checkpointing_steps=2)
    assert main(["train", *flags]) == 0
    assert "2 steps in" in capsys.readouterr().out
    assert main(["train", *flags, "--resume-from-checkpoint", "latest"]) == 0
    out = capsys.readouterr().out
    assert "0 steps (resumed at step 2 of 2) in" in out, out


def test_ctrl_c_on_train_prints_the_resume_command(tiny_run, tmp_path, capsys, monkeypatch):
    base, data, _ = tiny_run

    def interrupted(config, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("petal_peft.training.train", interrupted)
    flags = tiny_flags(base, data, tmp_path / "out", checkpointing_steps=2, overwrite_output_dir=True)
    assert main(["train", *flags]) == 130
    err = capsys.readouterr().err
    assert "interrupted; resume with: petal-peft train" in err, err
    assert err.rstrip().endswith("--resume-from-checkpoint latest") and "--overwrite_output_dir" not in err
