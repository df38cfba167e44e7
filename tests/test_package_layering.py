"""The tuner core never imports the face-recognition parts, and the quality package never imports the tuner."""

import subprocess
import sys
import textwrap

FACE_PARTS = (
    "petal_peft.quality",
    "petal_peft.heads",
    "petal_peft.data",
    "petal_peft.evaluation",
    "petal_peft.training",
    "petal_peft.zoo",
    "petal_peft.recipes",
    "petal_peft.embedding",
    "petal_peft.models",
    "petal_peft.convert",
    "petal_peft.export",
    "petal_peft.inference",
    "petal_peft.align",
    "petal_peft.benchmark",
)


def loaded_modules_after(statement: str) -> set[str]:
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        # import the subpackage without running petal_peft/__init__.py (which wires everything together)
        import types, pathlib
        spec = importlib.util.find_spec("petal_peft")
        package = types.ModuleType("petal_peft")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["petal_peft"] = package
        {statement}
        print("\\n".join(sorted(m for m in sys.modules if m.startswith("petal_peft"))))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_tuner_core_does_not_import_face_parts():
    loaded = loaded_modules_after("import petal_peft.tuner")
    assert "petal_peft.tuner.model" in loaded
    assert not [m for m in loaded if m.startswith(FACE_PARTS)]


def test_quality_package_does_not_import_the_tuner():
    loaded = loaded_modules_after("import petal_peft.quality")
    assert "petal_peft.quality" in loaded
    assert not [m for m in loaded if m.startswith("petal_peft.tuner")]


def test_face_models_do_not_import_the_tuner():
    loaded = loaded_modules_after("import petal_peft.models")
    assert "petal_peft.models.face_swin.modeling_face_swin" in loaded
    assert not [m for m in loaded if m.startswith("petal_peft.tuner")]


def test_import_petal_peft_loads_no_optional_extra():
    """dlib (align), onnx / onnxruntime (export) and matplotlib (plots) are imported only where used."""
    extras = "('dlib', 'onnx', 'onnxruntime', 'matplotlib')"
    script = f"import sys, petal_peft; print(' '.join(m for m in {extras} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_training_export_and_inference_do_not_import_evaluation():
    """They share the embedding machinery through petal_peft.embedding, never through the eval command's package."""
    statement = (
        "import pkgutil, importlib\n"
        "        for pkg in ('petal_peft.training', 'petal_peft.export', 'petal_peft.inference'):\n"
        "            module = importlib.import_module(pkg)\n"
        "            for info in pkgutil.iter_modules(module.__path__):\n"
        "                importlib.import_module(f'{pkg}.{info.name}')"
    )
    loaded = loaded_modules_after(statement)
    assert {"petal_peft.training.trainer", "petal_peft.export.onnx", "petal_peft.inference.encoders"} <= loaded
    assert not [m for m in loaded if m.startswith("petal_peft.evaluation")]


def test_embedding_imports_no_command_package():
    loaded = loaded_modules_after("import petal_peft.embedding")
    assert "petal_peft.embedding.extractor" in loaded
    commands = ("petal_peft.evaluation", "petal_peft.training", "petal_peft.export", "petal_peft.inference")
    assert not [m for m in loaded if m.startswith(commands)]
