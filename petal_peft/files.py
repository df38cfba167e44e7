"""Files as users expect them: written atomically, and readable by others when the umask says so.

Atomic: a file or a whole folder is written under a temporary sibling name, then renamed into place, so a reader
(or a resumed run) never sees half of it. POSIX cannot rename a folder over a non-empty one, so an existing
folder is first moved aside to ``.<name>.old`` and deleted only after the new one is in place;
:func:`recover_directory` restores it if a crash fell between the two renames.

Temporary files and folders (``tempfile.mkstemp`` / ``mkdtemp``) and safetensors files are created owner-only
(0o600 / 0o700) whatever the umask; a saved adapter, head, checkpoint or encoder moved into place from such a
temporary would stay private. Everything petal-peft publishes therefore gets the modes a plain ``open()`` /
``mkdir()`` would have given: files ``0o666 & ~umask``, folders ``0o777 & ~umask``. Used by the tuner core too,
so this module imports nothing of petal-peft.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "apply_umask",
    "atomic_directory",
    "current_umask",
    "make_temp_dir",
    "old_path",
    "publish_directory",
    "recover_directory",
    "to_jsonable",
    "write_file_atomic",
    "write_json_atomic",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read without changing it where /proc allows, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, recursive: bool = True) -> None:
    """Give ``path`` (and, for a folder, everything under it) the modes the umask implies."""
    mask = current_umask()
    path = Path(path)
    targets = [path]
    if recursive and path.is_dir():
        targets += [Path(d) / n for d, dirs, files in os.walk(path) for n in (*dirs, *files)]
    for target in targets:
        if target.is_symlink():
            continue
        os.chmod(target, (0o777 if target.is_dir() else 0o666) & ~mask)


def make_temp_dir(parent: str | os.PathLike, prefix: str, suffix: str = ".tmp") -> Path:
    """A new uniquely named folder in ``parent`` (for atomic saves), with the umask's folder mode."""
    path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix, suffix=suffix))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def write_file_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` a temporary sibling of ``path``, give it the umask's mode, then rename it into place,
    so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """numpy / torch scalars and arrays -> plain Python, tuples -> lists, NaN and inf -> None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:  # numpy array or tensor
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any, *, sort_keys: bool = False) -> Path:
    """``obj`` as indented strict JSON (NaN refused), written atomically; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n"
    write_file_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return path


def old_path(final: Path) -> Path:
    """Where the previous version of ``final`` waits while the new one is moved in."""
    return final.parent / f".{final.name}.old"


def _fsync_tree(root: Path) -> None:
    """Flush file contents to disk before the rename makes them visible (no-op where unsupported)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            except OSError:
                pass
            finally:
                os.close(fd)


def recover_directory(final: str | os.PathLike) -> Path:
    """Undo a publish interrupted between its two renames: bring ``.<name>.old`` back if ``final`` is gone."""
    final = Path(final)
    old = old_path(final)
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
    return final


def publish_directory(tmp: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished folder ``tmp`` to ``final``, replacing any previous version only once ``tmp`` is whole."""
    tmp, final = Path(tmp), Path(final)
    recover_directory(final)
    apply_umask(tmp)  # temporary folders and safetensors files are created owner-only
    _fsync_tree(tmp)
    old = old_path(final)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return final


@contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``final``; on success it becomes ``final``, on error it is deleted.

    Example::

        with atomic_directory("out/adapter") as tmp:
            model.save_pretrained(tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(final.parent, prefix=f".{final.name}.")
    try:
        yield tmp
        publish_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
