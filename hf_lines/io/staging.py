"""Output folders that one run owns from start to finish and that appear only when complete.

A run on ``OUT`` works like this:

1. It takes ``.OUT.lock`` beside ``OUT`` (an ``flock``: the kernel drops it when the
   process dies, even by ``kill -9``); the file names the holder (pid, host, start). A second
   run on the same ``OUT`` fails at once with ``OutputLockedError``.
2. Holding the lock, it tidies what dead runs left beside ``OUT``: staging folders
   (``.OUT.tmp-PID-XXXX``) are removed, and an ``OUT`` that an interrupted overwrite had moved
   aside (``.OUT.old-PID-XXXX``) is put back. Each is said in one log line.
3. It refuses an ``OUT`` that is, holds or lies inside an input (real paths, symlinks followed):
   inputs are never modified, with or without ``overwrite``.
4. It writes into a fresh staging folder beside ``OUT`` (created with the user's umask).
5. It moves the staging folder into place only when everything is written, and never over
   anything it did not create: without ``overwrite`` the move is ``renameat2(RENAME_NOREPLACE)``,
   so a folder that appeared at ``OUT`` meanwhile is left as it is and the finished result is
   kept beside it (``OUT.new-XXXX``, named in the error). With ``overwrite`` the old ``OUT`` is
   swapped out atomically with ``renameat2(RENAME_EXCHANGE)``, so the path holds the complete
   old or the complete new folder at every instant. Where the file system lacks
   ``renameat2``, the move is two renames (``OUT`` -> ``.OUT.old-*``, staging -> ``OUT``) and
   step 2 of the next run on ``OUT`` (or ``hf-lines clean OUT``) undoes a crash between them.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from hf_lines.errors import OutputExistsError, OutputLockedError, OutputWriteError, UnsafeOutputError

log = logging.getLogger(__name__)

STAGE_TAG, OLD_TAG, KEPT_TAG = "tmp", "old", "new"


def absolute(path: str | os.PathLike) -> Path:
    """``path`` made absolute without following a final symlink: the move happens at this path."""
    return Path(os.path.abspath(Path(path).expanduser()))


# ------------------------------------------------------------------ renameat2
_RENAME_NOREPLACE, _RENAME_EXCHANGE = 1, 2
_AT_FDCWD = -100
_libc = None


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """``renameat2(src, dst, flags)``; False where the OS or file system does not offer it."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.renameat2  # glibc 2.28+; other C libraries may lack it
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def move_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if anything is at ``dst``, never replacing it."""
    if _renameat2(src, dst, _RENAME_NOREPLACE):
        return
    # No RENAME_NOREPLACE here: check, then rename (rename(2) itself would replace an empty folder).
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def swap(src: Path, dst: Path) -> bool:
    """Exchange ``src`` and ``dst`` atomically; False where the file system cannot."""
    return _renameat2(src, dst, _RENAME_EXCHANGE)


# ------------------------------------------------------------------ the lock
@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since)) if self.since else "an unknown time"
        return f"pid {self.pid} on {self.host}, since {when}"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


class OutputLock:
    """An exclusive ``flock`` on ``.OUT.lock``; the file is removed on release.

    Removing a lock file is safe only if a waiter checks, once it holds the lock, that the
    path still names the file it locked; ``acquire`` does, and retries otherwise.
    """

    def __init__(self, out: str | os.PathLike):
        self.out = absolute(out)
        self.path = lock_path(self.out)
        self._fd: int | None = None

    def acquire(self) -> "OutputLock":
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _cannot_write(self.out.parent, e) from e
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise _cannot_write(self.path, e) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise OutputLockedError(
                    f"{self.out} is being written by another hf-lines run ({holder}); "
                    "wait for it to finish or choose another output folder"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file between our open and flock
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _cannot_write(path: Path, e: OSError) -> OutputWriteError:
    return OutputWriteError(f"cannot write {path} ({e.strerror or e}); choose an output folder you can write to")


def _read_holder(fd: int) -> str:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return Holder(int(data["pid"]), str(data["host"]), float(data["since"])).describe()
    except (ValueError, KeyError, TypeError, OSError):
        return "holder unknown: it is still starting"


# ------------------------------------------------------------------ leftovers
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling_pid(path: Path) -> int | None:
    """The pid in ``.OUT.tmp-PID-XXXX`` / ``.OUT.old-PID-XXXX``."""
    try:
        return int(path.name.rsplit("-", 2)[-2])
    except (ValueError, IndexError):
        return None


def _siblings(out: Path, tag: str) -> list[Path]:
    prefix = f".{out.name}.{tag}-"
    try:
        return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(f.lstat().st_size for f in path.rglob("*") if not f.is_dir() or f.is_symlink())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _dead(path: Path) -> bool:
    # Holding OUT's lock, no live run of this kind can own these; the pid check also spares a live
    # process that works without the lock.
    pid = _sibling_pid(path)
    return pid is None or pid == os.getpid() or not _pid_alive(pid)


def tidy(out: Path) -> list[str]:
    """What dead runs left beside ``out``, removed or put back; call it holding ``out``'s lock.

    Returns one line per action, for the log and ``hf-lines clean``.
    """
    done: list[str] = []
    olds = [p for p in _siblings(out, OLD_TAG) if _dead(p)]
    if olds and not os.path.lexists(out):
        keep = max(olds, key=lambda p: p.stat().st_mtime)  # an overwrite that died between its two renames
        move_noreplace(keep, out)
        olds.remove(keep)
        done.append(f"restored {out} from {keep.name}, left by an overwrite that was interrupted")
    for p in olds:
        _remove(p)
        done.append(f"removed {p.name}, the old copy of an overwrite that was interrupted")
    for p in _siblings(out, STAGE_TAG):
        if _dead(p):
            size = _size(p)
            _remove(p)
            done.append(f"removed {p.name} ({size / 1e6:.1f} MB), the staging folder of an interrupted run")
    return done


def clean(out: str | os.PathLike) -> list[str]:
    """``hf-lines clean OUT``: tidy beside ``OUT`` and, for a soup folder, beside each of its outputs."""
    out = absolute(out)
    done: list[str] = []
    with OutputLock(out):
        done += tidy(out)
    if out.is_dir() and not out.is_symlink():
        names = {p.name[1:].split(f".{tag}-")[0] for p in out.iterdir() for tag in (STAGE_TAG, OLD_TAG)
                 if p.name.startswith(".") and f".{tag}-" in p.name}
        for name in sorted(names):
            with OutputLock(out / name):
                done += tidy(out / name)
    return done


# ------------------------------------------------------------------ inputs
def check_not_input(out: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse an ``out`` that is, holds or lies inside an input (real paths: symlinks are followed)."""
    real_out = Path(os.path.realpath(out))
    for inp in inputs:
        real_in = Path(os.path.realpath(inp))
        if real_out.is_relative_to(real_in) or real_in.is_relative_to(real_out):
            how = "is" if real_out == real_in else "lies inside" if real_out.is_relative_to(real_in) else "holds"
            raise UnsafeOutputError(
                f"the output folder {out} {how} the input {inp}"
                + (f" (real path {real_in})" if str(real_in) != str(inp) else "")
                + "; inputs are never modified, even with --overwrite: choose an output folder outside every input"
            )


# ------------------------------------------------------------------ the run
@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the finished folder is moved into place (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mask = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, mask)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _place(stage: Path, out: Path, overwrite: bool) -> None:
    if not overwrite or not os.path.lexists(out):
        try:
            move_noreplace(stage, out)
            return
        except FileExistsError:
            if overwrite:  # appeared this instant: replace it as asked
                pass
            else:
                kept = out.parent / f"{out.name}.{KEPT_TAG}-{secrets.token_hex(3)}"
                move_noreplace(stage, kept)
                raise OutputExistsError(
                    f"{out} appeared while this run was writing and was left as it is; the finished output "
                    f"is complete at {kept}: move it where you want, or rerun with --overwrite"
                ) from None
    if swap(stage, out):
        _remove(stage)  # the old folder, now at the staging path
        return
    old = out.parent / f".{out.name}.{OLD_TAG}-{os.getpid()}-{secrets.token_hex(3)}"
    os.rename(out, old)
    move_noreplace(stage, out)
    _remove(old)


@contextlib.contextmanager
def staged_output(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | os.PathLike] = (),
) -> Iterator[Path]:
    """Own ``out`` for the block and yield an empty staging folder that replaces it if the block finishes.

    Raises ``OutputLockedError`` (another run writes ``out``), ``OutputExistsError`` (``out``
    exists, or appeared meanwhile, without ``overwrite``) and ``UnsafeOutputError`` (``out``
    overlaps an input), each before the block runs except the second, which then names where
    the finished output was kept.
    """
    out = absolute(out)
    check_not_input(out, inputs)
    with OutputLock(out):
        for line in tidy(out):
            log.warning("hf-lines: %s", line)
        if os.path.lexists(out) and not overwrite:
            raise OutputExistsError(f"{out} already exists; choose another output folder or pass --overwrite")
        stage = out.parent / f".{out.name}.{STAGE_TAG}-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            try:
                os.mkdir(stage, 0o777)  # the umask decides, as for any folder the user makes
            except OSError as e:
                raise _cannot_write(stage, e) from e
            yield stage
            with _signals_deferred():
                _place(stage, out, overwrite)
        except BaseException:
            _remove(stage)
            raise


def input_paths(*inputs: object) -> list[Path]:
    """Every folder and weight file the given checkpoints read (an adapter's base model too); paths
    given as such (a card template) count as they are, None is skipped."""
    paths: set[Path] = set()
    stack, seen = [c for c in inputs if c is not None], set()
    while stack:
        ckpt = stack.pop()
        if isinstance(ckpt, (str, os.PathLike)):
            paths.add(Path(ckpt))
            continue
        if id(ckpt) in seen:
            continue
        seen.add(id(ckpt))
        for attr in ("path", "adapter_path"):
            if getattr(ckpt, attr, None) is not None:
                paths.add(Path(getattr(ckpt, attr)))
        if hasattr(ckpt, "file_of"):
            paths.update(Path(ckpt.file_of(n)) for n in ckpt.names())
        for attr in ("base", "adapter"):
            inner = getattr(ckpt, attr, None)
            if inner is not None and inner is not ckpt and hasattr(inner, "path"):
                stack.append(inner)
    return sorted(paths)
