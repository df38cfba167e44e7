"""Old import paths of moved modules keep working, each with a DeprecationWarning naming the new home."""

import subprocess
import sys

import pytest

OLD_MODULES = {
    "petal_peft.zoo.real_faces": ("petal_peft.data.real_faces", "load_real_faces"),
    "petal_peft.zoo.synthetic_identities": ("petal_peft.data.synthetic_identities", "SyntheticIdentities"),
    "petal_peft.zoo.dlib_serialization": ("petal_peft.convert.dlib_serialization", "read_dlib_network"),
    "petal_peft.zoo.dlib_resnet": ("petal_peft.convert.dlib_resnet", "load_dlib_face_resnet"),
    "petal_peft.zoo.pretrained_base": ("petal_peft.recipes.synthetic_base", "build_pretrained_base"),
    "petal_peft.zoo.real_base": ("petal_peft.recipes.real_base", "build_real_face_base"),
    "petal_peft.evaluation.extractor": ("petal_peft.embedding.extractor", "pooled_embedding"),
    "petal_peft.evaluation.images": ("petal_peft.embedding.images", "ImageTransform"),
}


@pytest.mark.parametrize("old", sorted(OLD_MODULES))
def test_old_zoo_module_warns_and_is_the_new_module(old):
    new, name = OLD_MODULES[old]
    script = f"""
import importlib, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    old = importlib.import_module({old!r})
messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
assert any({new!r} in m and {old!r} in m for m in messages), messages
new = importlib.import_module({new!r})
assert old is new and new.__spec__.name == {new!r}
assert callable(getattr(old, {name!r}))
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_old_zoo_names_warn_and_the_shipped_loader_does_not():
    import petal_peft.zoo as zoo
    from petal_peft.data.real_faces import load_real_faces
    from petal_peft.recipes.synthetic_base import get_pretrained_base

    with pytest.warns(DeprecationWarning, match="petal_peft.data.real_faces"):
        assert zoo.load_real_faces is load_real_faces
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zoo.get_pretrained_base is get_pretrained_base
    with pytest.raises(AttributeError):
        zoo.no_such_name  # noqa: B018
