"""Files only this user may read: the state dir, the admin token, checkpoints and logs.

Every directory swell keeps secrets or pickles in is 0700 and owned by the user; every file is
written 0600 through a new, exclusively created temporary file (never following a symlink)
and renamed into place, and read only if it is owned by the user and private.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
import tempfile
from pathlib import Path

from swell.exceptions import ConfigError

TOKEN_BYTES = 32


def private_dir(path: str | Path, what: str) -> Path:
    """Create ``path`` (mode 0700) or check an existing one: a directory we own that no other
    user can write or read; tightens the mode of our own directory if it is looser."""
    directory = Path(path).expanduser().absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {directory} is not a directory (or is a symlink); pass another")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"{what} {directory} belongs to another user (uid {info.st_uid}); swell keeps "
            "tokens and pickled state there, so it must be yours: pass a directory you own"
        )
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)
    return directory


def runtime_dir() -> Path:
    """The per-user directory where running instances leave their admin tokens and logs."""
    base = os.environ.get("XDG_RUNTIME_DIR")  # set by the login session, already private
    if base and os.path.isdir(base) and os.stat(base).st_uid == os.getuid():
        return private_dir(Path(base) / "swell", "the runtime directory")
    return private_dir(
        Path(tempfile.gettempdir()) / f"swell-{os.getuid()}", "the runtime directory"
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` (mode 0600) atomically, through a fresh temporary file in its directory."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:  # mkstemp: O_EXCL, mode 0600
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_private(path: Path) -> bytes | None:
    """The file's bytes if it exists; refuse one that is a symlink, not ours, or not private."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(f"cannot read {path} safely ({error.strerror}); remove it") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ConfigError(
                f"{path} is not private to this user (owner uid {info.st_uid}, mode "
                f"{stat.S_IMODE(info.st_mode):o}); swell will not load it. Remove it, or make "
                "it yours with mode 600"
            )
        return file.read()


def open_private_log(path: Path) -> int:
    """A log file descriptor opened for append, 0600, never through a symlink."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_path(directory: Path, admin_port: int) -> Path:
    return directory / f"admin-{admin_port}.token"


def read_token(path: Path) -> str | None:
    data = read_private(path)
    return None if data is None else data.decode().strip() or None


def find_admin_token(admin_port: int) -> str | None:
    """The token a local instance on ``admin_port`` left in the user's runtime directory."""
    return read_token(token_path(runtime_dir(), admin_port))


class DirectoryLock:
    """An exclusive lock on a state dir for the lifetime of one controller, so two controllers
    never adopt the same replicas."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "controller.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(
                f"another swell controller (pid {holder}) is using state dir "
                f"{self._path.parent}; stop it first (`swell shutdown`) or pass another "
                "--state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
