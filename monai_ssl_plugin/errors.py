"""The one error type users see: a single line that names the problem and the fix."""

from __future__ import annotations

import errno


class PluginError(RuntimeError):
    """A user-facing error. ``str(err)`` is one line: what is wrong, then how to fix it.

    The CLI prints it without a traceback; library callers can catch it like any RuntimeError.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem} Fix: {fix}")


# OSError numbers that mean "this place cannot take the files", with the words a user understands.
# Each becomes one PluginError line instead of a traceback (read-only mounts, full disks, quotas).
_DISK_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EDQUOT: "disk quota exceeded",
}


def disk_error(error: OSError) -> PluginError | None:
    """The one-line PluginError for a write that failed because of the disk (full, read-only, no
    permission), or ``None`` for any other OSError."""
    reason = _DISK_ERRNOS.get(getattr(error, "errno", None))
    if reason is None:
        return None
    where = error.filename or "a file"
    return PluginError(f"Cannot write {where}: {reason}.",
                       "Free space or choose a writable folder (another --output_dir / --dest / --out).")


def plugin_error_in(error: BaseException | None) -> PluginError | None:
    """The PluginError a failure comes down to, following ``raise ... from`` / ``during handling``
    chains (MONAI's config parser wraps errors in RuntimeError); a disk OSError counts as one."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, PluginError):
            return error
        if isinstance(error, OSError) and (found := disk_error(error)) is not None:
            return found
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
