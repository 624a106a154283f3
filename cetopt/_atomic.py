"""Atomic file writes: a temporary file in the target folder, fsync, then rename over the target.

A reader never sees half a file, and an interrupted write leaves the previous version intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    target = Path(path)
    if target.exists() and not target.is_file():  # never rename over a device, FIFO or folder
        raise IsADirectoryError(21, "not a regular file; refusing to replace it", str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp makes 0600; a saved file should read like any other
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


STAGE_MARK = ".stage-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_stages(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging folders of ``target`` left by a process that no longer runs (killed with -9 during
    :func:`staged_dir`); return what was removed."""
    import shutil

    target = Path(target).absolute()
    removed = []
    for path in target.parent.glob(f".{target.name}{STAGE_MARK}*"):
        pid_text = path.name[len(f".{target.name}{STAGE_MARK}"):].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)) and path.is_dir() and not path.is_symlink():
            if (path / "previous").is_dir() and not target.exists():  # killed between the two-rename fallback's
                os.rename(path / "previous", target)                  # renames: the old folder goes back
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class staged_dir:  # noqa: N801 (used as a context manager, like tempfile.TemporaryDirectory)
    """Build a folder in a fresh staging folder next to ``target`` and swap it into place only when the block
    ends without an error: a reader sees the old folder or the new one, never a mix; an error or Ctrl-C leaves
    the old one as it was and no staging folder behind; a ``kill -9`` leaves the old one intact and a staging
    folder that the next :func:`remove_stale_stages` (called on entry) removes.

    Usage::

        with staged_dir(out) as stage:
            atomic_write_bytes(stage / "a.bin", data)
    """

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = Path(target).absolute()
        self.stage: Path | None = None

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_stages(self.target)
        self.stage = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{STAGE_MARK}{os.getpid()}-",
                                           dir=self.target.parent))
        return self.stage

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        import logging
        import shutil

        assert self.stage is not None
        try:
            if kind is None:
                _fsync_dir(self.stage)
                try:
                    os.rename(self.stage, self.target)  # no target yet (or an empty folder): a plain rename
                except OSError:
                    if not self.target.is_dir() or self.target.is_symlink():
                        raise
                    if not _exchange(self.stage, self.target):  # the new folder in, the old one out, at once
                        logging.getLogger(__name__).info(
                            "this system cannot swap folders atomically; replacing %s in two renames", self.target)
                        old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}{STAGE_MARK}{os.getpid()}-old-",
                                                    dir=self.target.parent))
                        os.rename(self.target, old / "previous")
                        os.rename(self.stage, self.target)
                        shutil.rmtree(old, ignore_errors=True)
                _fsync_dir(self.target.parent)
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)  # after a swap: the previous folder; after an error: the new
