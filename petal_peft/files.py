"""Files as users expect them: written atomically, and readable by others when the umask says so.

Temporary files and folders (``tempfile.mkstemp`` / ``mkdtemp``) and safetensors files are created owner-only
(0o600 / 0o700) whatever the umask; a saved adapter, head, checkpoint or encoder moved into place from such a
temporary would stay private. Everything petal-peft publishes therefore gets the modes a plain ``open()`` /
``mkdir()`` would have given: files ``0o666 & ~umask``, folders ``0o777 & ~umask``. Used by the tuner core too,
so this module imports nothing of petal-peft.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["apply_umask", "current_umask", "make_temp_dir", "write_file_atomic"]

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
