"""The path guard: the one way anything touches a file below a datastore root.

Every write, link, rename and delete below a root goes through `PathGuard`,
which resolves the path at the moment of use: it opens each directory from the
root with ``O_NOFOLLOW`` and acts on the last component through that
directory's descriptor (``openat``, ``mkdirat``, ``linkat``, ``unlinkat``).
A directory swapped for a symlink between a check and the act therefore
cannot carry the act out of the root. A symlink met on the way is resolved
there and then: one that stays inside the root is followed by walking its
target again without following anything; one that leads out raises
`PathEscapeError`.

Reads are guarded more cheaply, on the hot path: one ``lstat`` per component
finds symlinks, only a regular file is ever opened (a FIFO or a device is
refused before it could block), and the file opened must be the very file
(device and inode) that the walk found.

New files never have a name until they are complete: an unnamed
``O_TMPFILE`` inode is written, fsynced and then linked to its final name,
which fails if the name exists. A write that fails, or whose process dies,
leaves nothing; where ``O_TMPFILE`` is unavailable a dot-named temporary file
is used and removed on failure. Directories a failed write created are
removed again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import NotARegularFileError, PathEscapeError

__all__ = ["PathGuard", "file_kind"]

_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_DIR_FLAGS = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
#: An unnamed file is linked through /proc (linkat with AT_EMPTY_PATH needs privileges).
_PROC_FD = os.path.isdir("/proc/self/fd")
#: errno values meaning "this file system cannot hard-link"; we fall back to rename.
_NO_HARDLINK = frozenset(
    {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
)
#: errno values of an ``O_TMPFILE`` open that mean "not supported here".
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL})
#: errno values of an ``O_NOFOLLOW`` directory open that may mean "a symlink is here".
_MAYBE_LINK = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})
#: How often a path that keeps changing under us is walked again before giving up.
_RETRIES = 8

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symlink"),
)


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, for messages: ``"a FIFO"``, ``"a directory"``..."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _fsync_fd(fd: int) -> None:
    """fsync a directory descriptor (some file systems refuse; nothing more can be done)."""
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in {errno.EINVAL, errno.EBADF, errno.ENOTSUP, errno.EOPNOTSUPP}:
            raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _VanishedError(Exception):
    """A directory being written into was removed meanwhile (another put's undo): walk again."""


class PathGuard:
    """File operations below ``root`` that never follow a symlink out of it.

    Paths are relative, ``/``-separated, free of ``..``; the root itself is the
    caller's configuration and is taken as given (symlinks in it included).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root)

    # --- paths ------------------------------------------------------------------

    def _split(self, relative: str) -> list[str]:
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if not parts or relative.startswith("/") or ".." in parts or "\x00" in relative:
            raise PathEscapeError(
                f"path {relative!r} is not a relative path below the datastore root "
                f"{self.root}; refusing it"
            )
        return parts

    def _escape(self, relative: str, real: str) -> PathEscapeError:
        return PathEscapeError(
            f"datastore path {relative!r} resolves to {real}, outside the datastore root "
            f"{self.root} (a symlink points out of it); refusing it"
        )

    def _resolve(self, parts: list[str], relative: str) -> list[str]:
        """Where a symlink among ``parts`` leads now, relative to the root; escapes raise."""
        real = os.path.realpath(os.path.join(self._root, *parts))
        root_real = os.path.realpath(self._root)
        if real == root_real:
            return []
        if not real.startswith(root_real + os.sep):
            raise self._escape(relative, real)
        return real[len(root_real) + 1 :].split(os.sep)

    def absolute(self, relative: str) -> str:
        """The absolute path of ``relative``, for messages (no check, no system call)."""
        return f"{self._root}{os.sep}{relative}"

    # --- reading (the hot path: no descriptors but the file's own) ---------------

    def locate(self, relative: str) -> tuple[str, os.stat_result | None, bool]:
        """The absolute path, its stat (None if missing) and whether a symlink was followed.

        One ``lstat`` per component: only a symlink can leave the root (the
        path has no ``..``), and one that does raises `PathEscapeError`. A
        symlink that stays inside is followed (the stat is its target's).
        """
        full = f"{self._root}{os.sep}{relative}"
        path, info = self._root, None
        for part in relative.split("/"):
            path = f"{path}{os.sep}{part}"
            try:
                info = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return full, None, False  # nothing below a missing entry can be a link
            if stat.S_ISLNK(info.st_mode):
                real = os.path.realpath(full)
                if not real.startswith(os.path.realpath(self._root) + os.sep):
                    raise self._escape(relative, real)
                try:
                    return full, os.stat(full), True
                except (FileNotFoundError, NotADirectoryError):
                    return full, None, True
        return full, info, False

    def not_regular(self, relative: str, info: os.stat_result) -> NotARegularFileError:
        """The error for a non-regular file at ``relative`` (never opened)."""
        path = f"{self._root}{os.sep}{relative}"
        return NotARegularFileError(
            errno.EINVAL,
            f"{file_kind(info.st_mode)} is where an artifact should be (an artifact is "
            "always a regular file); it was not opened",
            path,
        )

    def open_read(self, relative: str) -> int:
        """A descriptor for reading the regular file at ``relative``.

        Raises:
            FileNotFoundError: nothing is there.
            NotARegularFileError: a FIFO, device, directory or socket is there.
            PathEscapeError: a symlink leads out of the root, or the path kept
                changing while it was being opened.
        """
        for _ in range(_RETRIES):
            path, info, followed = self.locate(relative)
            if info is None:
                raise FileNotFoundError(errno.ENOENT, "no such artifact", path)
            if not stat.S_ISREG(info.st_mode):
                raise self.not_regular(relative, info)
            # O_NONBLOCK: should a FIFO be swapped in after the lstat, opening
            # it must not wait for a writer; the fstat below then refuses it.
            flags = os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY
            try:
                fd = os.open(path, flags if followed else flags | _O_NOFOLLOW)
            except OSError as e:
                if e.errno in _MAYBE_LINK:
                    continue  # a symlink appeared since the walk: walk again
                raise
            now = os.fstat(fd)
            if stat.S_ISREG(now.st_mode) and (now.st_dev, now.st_ino) == (
                info.st_dev,
                info.st_ino,
            ):
                return fd
            os.close(fd)
        raise PathEscapeError(
            f"datastore path {relative!r} under {self.root} kept changing while it was "
            "being opened (a directory or the file was swapped); refusing it"
        )

    def read_bytes(self, relative: str) -> bytes:
        """The bytes of the regular file at ``relative`` (see `open_read`)."""
        with os.fdopen(self.open_read(relative), "rb") as f:
            return f.read()

    # --- walking with directory descriptors ------------------------------------

    @contextlib.contextmanager
    def _parent(
        self, relative: str, *, create: bool, fsync: bool, created: list[list[str]] | None = None
    ) -> Iterator[tuple[int, str]]:
        """The descriptor of the directory holding ``relative``'s last part, and that part.

        Each directory is opened from the one above with ``O_NOFOLLOW``; with
        ``create``, missing ones are made (their paths appended to ``created``).
        """
        parts = self._split(relative)
        dirs, name = parts[:-1], parts[-1]
        fds = [os.open(self._root, _DIR_FLAGS)]
        try:
            walked: list[str] = []
            restarts = made = 0
            while dirs:
                part = dirs[0]
                try:
                    fd = os.open(part, _DIR_FLAGS | _O_NOFOLLOW, dir_fd=fds[-1])
                except FileNotFoundError:
                    if not create:
                        raise
                    made += 1
                    if made > len(parts) + _RETRIES:
                        raise _VanishedError from None  # made and removed again and again
                    try:
                        os.mkdir(part, 0o777, dir_fd=fds[-1])
                    except FileExistsError:
                        pass  # another process made it a moment ago
                    except FileNotFoundError as e:
                        raise _VanishedError from e
                    else:
                        if created is not None:
                            created.append([*walked, part])
                        if fsync:
                            _fsync_fd(fds[-1])
                    continue  # open what is there now
                except OSError as e:
                    if e.errno not in _MAYBE_LINK:
                        raise
                    info = os.stat(part, dir_fd=fds[-1], follow_symlinks=False)
                    if not stat.S_ISLNK(info.st_mode):
                        where = os.path.join(self._root, *walked, part)
                        raise NotADirectoryError(
                            errno.ENOTDIR, f"{file_kind(info.st_mode)} is in the way", where
                        ) from e
                    restarts += 1
                    if restarts > _RETRIES:
                        raise PathEscapeError(
                            f"datastore path {relative!r} under {self.root} kept changing "
                            "while it was being walked; refusing it"
                        ) from e
                    # Resolved now; then walked again from the root, following nothing.
                    dirs = self._resolve([*walked, part], relative) + dirs[1:]
                    for fd in fds[1:]:
                        os.close(fd)
                    del fds[1:]
                    walked = []
                    continue
                fds.append(fd)
                walked.append(part)
                dirs = dirs[1:]
            yield fds[-1], name
        finally:
            for fd in fds:
                os.close(fd)

    def _entry(self, dir_fd: int, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    # --- writing and deleting -----------------------------------------------------

    def lexists(self, relative: str) -> bool:
        """Whether any entry (even a dangling symlink) is at ``relative``, walked safely."""
        try:
            with self._parent(relative, create=False, fsync=False) as (dir_fd, name):
                return self._entry(dir_fd, name) is not None
        except (FileNotFoundError, NotADirectoryError):
            return False

    def write_new(self, relative: str, data: bytes, *, fsync: bool) -> bool:
        """Atomically create the file ``relative`` holding ``data``; False if the name exists.

        Missing directories (and the root) are created. On any failure nothing
        is left: no temporary file, no directory this call created.
        """
        for _ in range(_RETRIES):
            made_root = self._make_root()
            created: list[list[str]] = []
            try:
                with self._parent(relative, create=True, fsync=fsync, created=created) as (
                    dir_fd,
                    name,
                ):
                    if self._entry(dir_fd, name) is not None:
                        return False  # nothing written (the link below refuses it anyway)
                    return self._link_new(dir_fd, name, data, fsync)
            except BaseException as e:
                self._undo(created, made_root)
                if isinstance(e, _VanishedError):
                    continue
                raise
        raise OSError(
            errno.EAGAIN,
            "directories kept vanishing while writing (another process removes them)",
            os.path.join(self._root, relative),
        )

    def _make_root(self) -> list[str]:
        """Create the root and missing parents; the paths created, deepest last."""
        missing: list[str] = []
        path = self._root
        while not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        made = []
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            made.append(path)
        return made

    def _undo(self, created: list[list[str]], made_root: list[str]) -> None:
        """Remove the directories a failed write created, deepest first, if still empty."""
        for parts in reversed(created):
            with (
                contextlib.suppress(OSError, PathEscapeError),
                self._parent("/".join(parts), create=False, fsync=False) as (dir_fd, name),
            ):
                os.rmdir(name, dir_fd=dir_fd)
        for path in reversed(made_root):
            with contextlib.suppress(OSError):
                os.rmdir(path)

    def _link_new(self, dir_fd: int, name: str, data: bytes, fsync: bool) -> bool:
        if _O_TMPFILE and _PROC_FD:
            try:
                fd = os.open(".", os.O_WRONLY | _O_TMPFILE | _O_CLOEXEC, 0o666, dir_fd=dir_fd)
            except OSError as e:
                if e.errno == errno.ENOENT:
                    raise _VanishedError from e
                if e.errno not in _NO_TMPFILE:
                    raise
            else:
                try:
                    _write_all(fd, data)
                    if fsync:
                        os.fsync(fd)
                    try:
                        # A link fails if the name exists, even if another process
                        # created it a moment ago, where a rename would clobber it.
                        os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dir_fd)
                    except FileExistsError:
                        return False
                    except OSError as e:
                        # ENOENT: /proc is not usable, or the directory vanished
                        # (the named path below finds out which).
                        if e.errno not in _NO_HARDLINK | {errno.ENOENT}:
                            raise
                    else:
                        if fsync:
                            _fsync_fd(dir_fd)
                        return True
                finally:
                    os.close(fd)
        return self._link_named(dir_fd, name, data, fsync)

    def _link_named(self, dir_fd: int, name: str, data: bytes, fsync: bool) -> bool:
        """`_link_new` through a dot-named temporary file, removed whatever happens."""
        temp = f".{name}.{secrets.token_hex(6)}.tmp"
        # O_EXCL and O_NOFOLLOW: never write through a file or symlink someone put there.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC | _O_BINARY
        try:
            fd = os.open(temp, flags, 0o666, dir_fd=dir_fd)
        except FileNotFoundError as e:
            raise _VanishedError from e
        try:
            try:
                _write_all(fd, data)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
            except FileExistsError:
                return False
            except OSError as e:
                if e.errno not in _NO_HARDLINK:
                    raise
                if self._entry(dir_fd, name) is not None:
                    return False
                os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)
        if fsync:
            _fsync_fd(dir_fd)
        return True

    def unlink(self, relative: str) -> bool:
        """Delete the file at ``relative`` (a symlink itself, never its target); False if absent.

        Raises:
            PathEscapeError: a directory on the way leads out of the root.
            IsADirectoryError: a directory is there (it is left alone).
        """
        try:
            with self._parent(relative, create=False, fsync=False) as (dir_fd, name):
                info = self._entry(dir_fd, name)
                if info is None:
                    return False
                if stat.S_ISDIR(info.st_mode):
                    raise IsADirectoryError(
                        errno.EISDIR,
                        "a directory is where an artifact should be; left alone",
                        os.path.join(self._root, relative),
                    )
                os.unlink(name, dir_fd=dir_fd)
                return True
        except (FileNotFoundError, NotADirectoryError):
            return False
