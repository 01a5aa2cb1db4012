"""Durable file primitives: the only module that calls ``open``/``fsync``/``link``.

Measured on these machines (docs/benchmarks.md): a durable publish of a new file (write, fsync,
rename or link, fsync of the directory) costs 0.7-1.9 ms; one append + fdatasync of an
already-open file about 0.17 ms; a write without fsync 0.06-0.3 ms. So steps are
committed by appending to an open journal (one fdatasync), and only rare state changes
(trigger, claim, end of a run) pay for publishing a file.

Every file is opened with ``O_NOFOLLOW`` (a symlink planted in the root is refused, never
followed) and created ``0600``; directories are created ``0700`` (runs can hold secrets).
``O_NOFOLLOW`` guards only the last component of a path, so everything that creates,
writes, links, renames or removes a name does it relative to a directory descriptor from
:func:`open_dir`, which reaches the directory from the root one component at a time and
never through a symlink (invariant 9), even one planted while the process runs.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator

from ._errors import StoreError

MAX_RECORD_BYTES = 256 * 1024 * 1024
"""Largest record file read whole (values are capped at 64 MiB; a record holds one or
two, plus errors and tracebacks). A larger one, such as a truncated or sparse file of
gigabytes, is refused without reading it."""

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FLAGS_READ = os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK
_FLAGS_ROOT = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | O_CLOEXEC
_FLAGS_DIR = _FLAGS_ROOT | O_NOFOLLOW


def wrap_os_error(exc: OSError, what: str, path: str) -> StoreError:
    """Turn an ``OSError`` into a :class:`StoreError` that names the file and the cause."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    if exc.errno == errno.ELOOP:
        reason = "it is a symbolic link, which durably never follows"
    elif exc.errno == errno.ENOSPC and _no_free_inodes(path):
        reason += " (the file system has no free inodes left)"
    return StoreError(f"cannot {what} {path}: {reason}", path=path)


def _no_free_inodes(path: str) -> bool:
    """True if the file system holding ``path`` (or its nearest existing parent) has run
    out of inodes: ENOSPC then means "no more files", not "no more bytes"."""
    while path and path != os.path.dirname(path):
        try:
            st = os.statvfs(path)
        except OSError:
            path = os.path.dirname(path)
            continue
        return st.f_files > 0 and st.f_favail == 0
    return False


def own_only(fd: int, mode: int) -> None:
    """Give a file or directory durably created exactly ``mode`` (0600 or 0700).

    ``open`` and ``mkdir`` apply the process umask, which may take bits the owner needs
    (umask 0277 leaves 0500 directories nobody but root can write into) or, for files
    created by another tool, leave others some. Set through the descriptor, so a path
    swapped meanwhile is never changed. A file system without modes (vfat) refuses:
    nothing more can be done there.
    """
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)


def own_dir(path: str) -> None:
    """:func:`own_only` for a directory this process just created."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    try:
        own_only(fd, 0o700)
    finally:
        os.close(fd)


def sync_file(path: str) -> None:
    """Make the data of ``path`` durable (fdatasync); nothing if it is missing.

    Any descriptor flushes the file, so this also syncs a journal another process
    appends to.
    """
    try:
        fd = os.open(path, os.O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def open_dir(root: str, path: str, *, create: bool = False, sync: bool = False) -> int:
    """Open directory ``path`` (``root`` or a directory below it); return its descriptor.

    No symlink below ``root`` is followed, also one planted while this process runs:
    ``O_NOFOLLOW`` on a whole path guards only its last component, so the directory is
    reached one component at a time with ``O_DIRECTORY | O_NOFOLLOW``. The first one is
    opened by its full path (the root's own path is followed as the user named it; the
    component, being last, is guarded), each further one relative to the one before
    (``openat``). With ``create``, missing directories are made ``0700``, and with
    ``sync`` the parent of each one made is fsynced (invariant 2).

    Raises:
        FileNotFoundError: a directory is missing (and not ``create``); callers decide.
        StoreError: a component is a symlink or not a directory, or cannot be opened.
    """
    if path == root:
        try:
            return os.open(root, _FLAGS_ROOT)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise wrap_os_error(exc, "open directory", root) from exc
    if not path.startswith(root) or path[len(root) : len(root) + 1] != os.sep:
        raise ValueError(f"{path} is not below {root}")
    parts = path[len(root) + 1 :].split(os.sep)
    if "" in parts or "." in parts or ".." in parts:
        raise ValueError(f"{path} is not a plain path below {root}")
    first = root + os.sep + parts[0]
    try:  # the hot path: one open per component, no call; errors go to open_subdir
        fd = os.open(first, _FLAGS_DIR)
    except OSError:
        fd = open_subdir(None, first, first, create=create, sync=sync)
    for i in range(1, len(parts)):
        try:
            try:
                child = os.open(parts[i], _FLAGS_DIR, dir_fd=fd)
            except OSError:
                child = open_subdir(
                    fd, parts[i], os.sep.join([root, *parts[: i + 1]]), create=create, sync=sync
                )
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        fd = child
    return fd


class _Opened:
    """The descriptors of :func:`opened_dirs`, closed when the ``with`` block ends."""

    __slots__ = ("fds",)

    def __init__(self, fds: list[int]) -> None:
        self.fds = fds

    def __enter__(self) -> list[int]:
        return self.fds

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds:
            os.close(fd)


def opened_dirs(
    root: str, *paths: str, create: bool = False, sync: bool = False
) -> contextlib.AbstractContextManager[list[int]]:
    """:func:`open_dir` of each of ``paths``, for a ``with`` block that closes them."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(open_dir(root, path, create=create, sync=sync))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return _Opened(fds)


def open_subdir(dir_fd: int | None, name: str, path: str, *, create: bool = False, sync: bool = False) -> int:
    """One step of :func:`open_dir`: open directory ``name`` in directory ``dir_fd`` (left
    open; None: ``name`` is a full path) without following a symlink at ``name``;
    ``path`` names it in errors."""
    try:
        return os.open(name, _FLAGS_DIR, dir_fd=dir_fd)
    except OSError as exc:
        if not (create and isinstance(exc, FileNotFoundError)):
            raise _dir_error(dir_fd, name, path, exc) from exc
    made = False
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=dir_fd)
        made = True
        if sync:
            _fsync_parent(dir_fd, name)
    try:
        fd = os.open(name, _FLAGS_DIR, dir_fd=dir_fd)
    except OSError as exc:
        raise _dir_error(dir_fd, name, path, exc) from exc
    if made:
        own_only(fd, 0o700)
    return fd


def _fsync_parent(dir_fd: int | None, name: str) -> None:
    """fsync the directory holding ``name`` (``dir_fd``, or by path)."""
    if dir_fd is not None:
        os.fsync(dir_fd)
        return
    fd = os.open(os.path.dirname(name), _FLAGS_ROOT)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dir_error(dir_fd: int | None, name: str, path: str, exc: OSError) -> OSError | StoreError:
    """What to raise when directory ``name`` of ``dir_fd`` could not be opened."""
    if isinstance(exc, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    try:
        is_link = stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        is_link = False
    if is_link:
        return StoreError(
            f"cannot use {path}: it is a symbolic link (planted in the root?), which durably never follows",
            path=path,
        )
    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
        return StoreError(f"cannot use {path}: it should be a directory but is not", path=path)
    return wrap_os_error(exc, "open directory", path)


@contextlib.contextmanager
def opened_dir(root: str, path: str, *, create: bool = False, sync: bool = False) -> Iterator[int]:
    """:func:`open_dir` for a ``with`` block that closes it."""
    fd = open_dir(root, path, create=create, sync=sync)
    try:
        yield fd
    finally:
        os.close(fd)


def open_below(root: str, path: str, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a file below ``root``, its directory reached through :func:`open_dir`.

    ``O_NOFOLLOW`` and ``O_CLOEXEC`` are always added.

    Raises:
        OSError: from the final open (``FileNotFoundError`` also for a missing directory).
        StoreError: a directory on the way is a symlink or not a directory.
    """
    directory, _, name = path.rpartition(os.sep)
    dir_fd = open_dir(root, directory)
    try:
        return os.open(name, flags | O_NOFOLLOW | O_CLOEXEC, mode, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def ensure_dir(path: str, *, sync: bool) -> bool:
    """Create directory ``path`` (0700) if missing; return True if it was created.

    For the root itself (directories below it: :func:`open_dir` with ``create``). A symlink
    or a file where the directory belongs is refused with a clear error. After creating
    it, the parent is fsynced when ``sync`` (invariant 2).
    """
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(
                f"{path} should be a directory but is not (symlink or file planted in the root)",
                path=path,
            ) from None
        return False
    except FileNotFoundError:
        ensure_dir(os.path.dirname(path), sync=sync)
        return ensure_dir(path, sync=sync)
    own_dir(path)
    if sync:
        _fsync_parent(None, path)
    return True


def is_read_only(path: str) -> bool:
    """Whether this process cannot write directory ``path`` (if missing: where it would be
    created, its nearest existing ancestor).

    Three checks, because each misses a case: ``os.access`` (permissions; a read-only
    mount), the mount's ``ST_RDONLY`` flag (``statvfs``), and, where the system has it, an
    unnamed ``O_TMPFILE`` that vanishes on close: the only one to see an ext4 that
    remounted itself read-only after an error (``errors=remount-ro``: ``emergency_ro``),
    which ``access`` and ``statvfs`` still report writable. Nothing is left behind.
    """
    target = os.path.abspath(path)
    while not os.path.isdir(target) and os.path.dirname(target) != target:
        target = os.path.dirname(target)
    if not os.access(target, os.W_OK):
        return True
    tmpfile = getattr(os, "O_TMPFILE", 0)
    try:
        if os.statvfs(target).f_flag & os.ST_RDONLY:
            return True
        if not tmpfile:
            return False
        os.close(os.open(target, tmpfile | os.O_WRONLY | O_CLOEXEC, 0o600))
    except OSError as exc:  # EOPNOTSUPP (no O_TMPFILE here), ENOSPC...: not read-only
        return exc.errno in (errno.EROFS, errno.EACCES)
    return False


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def create_file(dir_fd: int, name: str, data: bytes, *, sync: bool) -> bool:
    """Create ``name`` in directory ``dir_fd`` with ``data`` unless it exists (``O_EXCL``).

    Returns False if it existed. The file's contents are fsynced; the caller fsyncs the
    directory. A reader may see the file before its bytes are complete: records are JSON
    objects, and no proper prefix of one parses, so a partial file reads as "not written
    yet".
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC
    try:
        fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    except FileExistsError:
        return False
    try:
        own_only(fd, 0o600)
        write_all(fd, data)
        if sync:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        _unlink_quietly(dir_fd, name)
        raise
    os.close(fd)
    return True


def _tmp_name() -> str:
    return f"{os.getpid()}-{os.urandom(6).hex()}.tmp"


def publish_once(tmp_fd: int, dir_fd: int, name: str, data: bytes, *, sync: bool) -> bool:
    """Publish ``data`` as ``name`` in directory ``dir_fd``, complete or not at all; first
    writer wins.

    Writes a temp file in ``tmp_fd``, fsyncs it, hard-links it to ``name`` (``EEXIST``
    means another writer won: return False) and fsyncs the directory. Readers never see
    a partial file.
    """
    tmp = _tmp_name()
    create_file(tmp_fd, tmp, data, sync=sync)
    try:
        won = link_once(tmp_fd, tmp, dir_fd, name, sync=False)
    finally:
        _unlink_quietly(tmp_fd, tmp)
    if won and sync:
        os.fsync(dir_fd)
    return won


def stage(tmp_fd: int, data: bytes, *, sync: bool) -> str:
    """A new temp file of directory ``tmp_fd`` holding ``data`` (fsynced with ``sync``), to
    publish under one name or more with :func:`link_once`; the caller removes it."""
    tmp = _tmp_name()
    create_file(tmp_fd, tmp, data, sync=sync)
    return tmp


def link_once(tmp_fd: int, tmp: str, dir_fd: int, name: str, *, sync: bool) -> bool:
    """Link the staged file ``tmp`` to ``name`` in directory ``dir_fd``, unless it exists
    (``EEXIST``: another writer won, False); with ``sync``, fsync the directory."""
    try:
        os.link(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        return False
    if sync:
        os.fsync(dir_fd)
    return True


def replace_file(tmp_fd: int, dir_fd: int, name: str, data: bytes, *, sync: bool) -> None:
    """Atomically replace ``name`` in directory ``dir_fd`` with ``data`` (temp file + rename)."""
    tmp = _tmp_name()
    create_file(tmp_fd, tmp, data, sync=sync)
    try:
        os.rename(tmp, name, src_dir_fd=tmp_fd, dst_dir_fd=dir_fd)
    except OSError:
        _unlink_quietly(tmp_fd, tmp)
        raise
    if sync:
        os.fsync(dir_fd)


def read_bytes(path: str, limit: int | None = None) -> bytes | None:
    """Read a regular file; None if it is missing. Symlinks and FIFOs are refused, and
    so is a file larger than ``limit`` bytes (before reading any of it)."""
    try:
        fd = os.open(path, _FLAGS_READ)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a planted symlink; EACCES: a foreign file
        raise wrap_os_error(exc, "read", path) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path} is not a regular file; refusing to read it", path=path)
        if limit is not None and st.st_size > limit:
            raise StoreError(
                f"{path} is {st.st_size} bytes, more than any record durably "
                f"writes ({limit}); refusing to read it",
                path=path,
            )
        return _read_to_end(fd, max(st.st_size, 65536))
    finally:
        os.close(fd)


def _read_to_end(fd: int, chunk_size: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, chunk_size)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_from(path: str, offset: int) -> bytes:
    """Bytes of ``path`` from ``offset`` on (journals, the feed); b"" if it is missing.

    Reading stops at the first NUL byte: journal lines and feed lines never hold one
    (JSON escapes it), so what follows is damage; a sparse file of gigabytes (a
    truncate, a power loss) costs one chunk, not its size in memory.

    Raises:
        StoreError: ``path`` is not a regular file (a FIFO would block the open).
    """
    try:
        fd = os.open(path, _FLAGS_READ)
    except FileNotFoundError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{path} is not a regular file; refusing to read it", path=path)
        os.lseek(fd, offset, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            nul = chunk.find(b"\0")
            if nul >= 0:
                chunks.append(chunk[:nul])
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def publish_path(root: str, tmp_dir: str, path: str, data: bytes, *, sync: bool) -> bool:
    """:func:`publish_once` of ``path`` below ``root`` (its temp file in ``tmp_dir``);
    False if another writer published it first."""
    with opened_dirs(root, tmp_dir, os.path.dirname(path)) as (tmp_fd, dir_fd):
        return publish_once(tmp_fd, dir_fd, os.path.basename(path), data, sync=sync)


def remove_path(root: str, path: str) -> bool:
    """Remove file ``path`` below ``root``; False if it (or its directory) was already gone.

    Raises:
        StoreError: it could not be removed (the error names it and the cause).
    """
    try:
        with opened_dir(root, os.path.dirname(path)) as dir_fd:
            return remove_file(dir_fd, os.path.basename(path))
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise wrap_os_error(exc, "remove", path) from exc


def sync_dir(dir_fd: int) -> None:
    """fsync a directory: the names created, linked, renamed or removed in it are durable."""
    os.fsync(dir_fd)


def make_subdir(dir_fd: int, name: str) -> bool:
    """Create directory ``name`` (0700) in directory ``dir_fd``; False if it existed.

    The caller fsyncs ``dir_fd`` (when it needs the name durable) and opens the new
    directory with :func:`open_subdir`, which refuses a symlink planted in its place.
    """
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        return False
    return True


def move(src_fd: int, name: str, dst_fd: int, new_name: str, *, sync: bool) -> None:
    """Rename ``name`` of directory ``src_fd`` to ``new_name`` of ``dst_fd`` (never
    following a link: the entry itself moves); with ``sync``, fsync both directories."""
    os.rename(name, new_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    if sync:
        os.fsync(src_fd)
        if dst_fd != src_fd:
            os.fsync(dst_fd)


def remove_tree(dir_fd: int, name: str, *, ignore_errors: bool = False) -> None:
    """Remove directory ``name`` of ``dir_fd`` and everything in it; never follows a link."""
    shutil.rmtree(name, dir_fd=dir_fd, ignore_errors=ignore_errors)


def remove_entry(dir_fd: int, name: str) -> bool:
    """Remove ``name`` of ``dir_fd``, a file or a whole directory; False if it was gone."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree(dir_fd, name)
        return True
    return remove_file(dir_fd, name)


def entries(dir_fd: int) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of directory ``dir_fd`` (entries gone meanwhile are left out)."""
    out = []
    for name in os.listdir(dir_fd):
        try:
            out.append((name, os.stat(name, dir_fd=dir_fd, follow_symlinks=False)))
        except FileNotFoundError:
            continue
    return out


def set_mode(root: str, path: str) -> int | None:
    """Give a file (0600) or directory (0700) of the root its mode, through a descriptor
    (a link planted meanwhile is never followed); return the mode set, None for others."""
    fd = open_below(root, path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        mode = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600 if stat.S_ISREG(st.st_mode) else None
        if mode is not None:
            os.fchmod(fd, mode)
        return mode
    finally:
        os.close(fd)


def mtime(path: str) -> float:
    """Modification time of ``path`` (not following a link); 0.0 if it is gone."""
    try:
        return os.stat(path, follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def size(path: str) -> int:
    """Size of ``path`` (not following a link); 0 if it is gone."""
    try:
        return os.stat(path, follow_symlinks=False).st_size
    except OSError:
        return 0


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def remove_file(dir_fd: int, name: str) -> bool:
    """Remove file ``name`` from directory ``dir_fd``; False if it was already gone."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def list_dir(path: str) -> list[str]:
    """Names in a directory, or [] if it is missing."""
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
