"""Publishing a whole folder atomically, so an interrupted save never replaces the previous good one.

A folder is written under a temporary sibling name, then renamed into place. POSIX cannot rename a folder
over a non-empty one, so an existing folder is first moved aside to ``.<name>.old`` and deleted only after
the new one is in place; :func:`recover_directory` restores it if a crash fell between the two renames.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..files import apply_umask, make_temp_dir

__all__ = ["atomic_directory", "old_path", "publish_directory", "recover_directory"]


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
