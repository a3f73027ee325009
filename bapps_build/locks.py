"""One writer per folder: a lock file beside the folder a command writes.

The lock of `<parent>/<name>/` is `<parent>/.<name>.lock`, beside the folder rather than in it,
so it can be taken before the folder exists (an export renames its folder into place) and
never shows among a subset's files. It is created with O_CREAT | O_EXCL and holds JSON: host,
pid, the process start time, the command and a random token.

What is guaranteed:

- On one host: two commands never hold the lock of one folder together. A lock left by a dead
  process (its pid gone, or reused by a process that started later) is taken over: under a
  second O_EXCL "breaker" file, the taker re-reads the lock, checks it still holds the dead
  holder's token, and only then removes it and creates its own.
- On a shared file system (NFSv3 and later, Lustre, GPFS, CephFS, ...): O_EXCL creation is
  atomic, so of two hosts creating the lock at once exactly one succeeds. Whether a process
  on another host is alive cannot be known from here, so a lock from another host is never
  broken automatically; the message names the host and pid and says how to remove the file.
  Dask workers on other hosts write under the lock held by the driver; they take none.
- Not guaranteed: a writer that ignores these locks (another tool, a `cp`), or an NFSv2
  mount (where O_EXCL is not atomic).

The holder re-checks its token before it marks its work complete (`check`), so a lock
removed by hand under a running command makes that command stop rather than finish silently.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import time
from pathlib import Path
from typing import Optional

from .errors import UserError

LOCK_SUFFIX = ".lock"


class LockError(UserError, RuntimeError):
    """Another command holds the folder (or held it, on another host); the message says what to do."""


def lock_path(folder) -> Path:
    folder = Path(folder).absolute()
    return folder.parent / f".{folder.name}{LOCK_SUFFIX}"


def _start_time(pid: int) -> Optional[str]:
    """The kernel's start time of a process (clock ticks since boot; Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int, started: Optional[str]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    now = _start_time(pid)
    return not (started and now and now != started)  # the pid now belongs to a later process


def _read(path: Path) -> Optional[dict]:
    try:
        with open(path, "rb") as f:
            data = f.read(65536)
    except FileNotFoundError:
        return None
    try:
        info = json.loads(data)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}  # being written this instant, or damaged


def describe(info: dict) -> str:
    when = info.get("time")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if isinstance(when, (int, float)) else "?"
    return (f"{info.get('command') or 'a command'} (host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"since {since})")


class FolderLock:
    """The lock on one folder; use as a context manager or acquire()/release()."""

    def __init__(self, folder, command: str = ""):
        self.folder = Path(folder)
        self.path = lock_path(folder)
        self.command = command
        self.token = None
        self.made_folders = []  # parents of the lock this lock created: removed again if left empty

    def _create(self) -> bool:
        info = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
                "time": time.time(), "command": self.command, "token": secrets.token_hex(16)}
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            from .files import write_all

            write_all(fd, json.dumps(info).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        os.close(fd)
        self.token = info["token"]
        return True

    def acquire(self) -> "FolderLock":
        missing, parent = [], self.path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for folder in reversed(missing):
            try:
                folder.mkdir()
                self.made_folders.append(folder)
            except FileExistsError:
                pass
        try:
            return self._acquire()
        except BaseException:
            self._remove_made_folders()
            raise

    def _remove_made_folders(self) -> None:
        for folder in reversed(self.made_folders):
            try:
                folder.rmdir()  # only when empty: a failed command leaves no empty folders behind
            except OSError:
                break
        self.made_folders = []

    def _acquire(self) -> "FolderLock":
        for _ in range(20):
            if self._create():
                return self
            info = _read(self.path)
            if info is None:
                continue  # released meanwhile
            if not info:  # created, not yet written: give its writer a moment
                time.sleep(0.05)
                info = _read(self.path)
                if info is None:
                    continue
                if not info:
                    raise LockError(f"{self.folder} is locked by {self.path}, which is unreadable. If no command is "
                                    f"writing there, remove {self.path} and run again.")
            if info.get("host") != socket.gethostname():
                raise LockError(f"{self.folder} is being written by {describe(info)}: one writer per folder. "
                                f"Wait for it to finish. The lock was taken on another host, so it is never "
                                f"broken automatically: if that process is gone, remove {self.path} and run again.")
            if _alive(int(info.get("pid", -1)), info.get("start")):
                raise LockError(f"{self.folder} is being written by {describe(info)}: one writer per folder. "
                                f"Wait for it to finish, or write into another folder.")
            self._break_stale(info)
        raise LockError(f"could not take the lock {self.path}: it keeps changing hands; try again")

    def _break_stale(self, stale: dict) -> None:
        """Remove a dead holder's lock, unless another process took it over meanwhile."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # another process is breaking it right now (microseconds); a breaker older than a
            # minute was left by a process killed in that instant
            try:
                if time.time() - breaker.stat().st_mtime > 60:
                    breaker.unlink()
            except FileNotFoundError:
                pass
            time.sleep(0.05)
            return
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            current = _read(self.path)
            if current is not None and current.get("token") == stale.get("token"):
                os.unlink(self.path)
        finally:
            try:
                breaker.unlink()
            except FileNotFoundError:
                pass

    def check(self) -> None:
        """Raise if the lock is no longer ours (removed or taken over by hand)."""
        info = _read(self.path)
        if not info or info.get("token") != self.token:
            raise LockError(f"the lock {self.path} of {self.folder} was removed or taken by another command while "
                            f"this one was writing; stopped without marking anything complete. Check what wrote "
                            f"there, then run again (with --resume where the command has it).")

    def release(self) -> None:
        if self.token is None:
            return
        info = _read(self.path)
        if info and info.get("token") == self.token:
            try:
                os.unlink(self.path)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        self.token = None
        self._remove_made_folders()

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_folders(folders, command: str = ""):
    """Locks on several folders, taken in sorted order; all or none (a contextlib.ExitStack)."""
    from contextlib import ExitStack

    stack = ExitStack()
    try:
        for folder in sorted({str(Path(f).absolute()) for f in folders}):
            stack.enter_context(FolderLock(folder, command))
    except BaseException:
        stack.close()
        raise
    return stack
