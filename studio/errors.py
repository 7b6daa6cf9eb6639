"""The one exception type the user sees.

Anything raised as a StudioError is bad input or a bad state the user can fix: the CLI prints its
message on one line and exits non-zero, with no traceback. Messages name the problem and the fix.
"""

import errno

FIXES = {  # what to do about the operating-system errors a user can fix
    errno.EACCES: "check its permissions, or set LLM_STUDIO_HOME to a folder you can write",
    errno.EPERM: "check its permissions, or set LLM_STUDIO_HOME to a folder you can write",
    errno.EROFS: "the file system is read-only: set LLM_STUDIO_HOME to a writable folder",
    errno.ENOSPC: "the disk is full: free some space, or set LLM_STUDIO_HOME on another disk",
    errno.EDQUOT: "the disk quota is used up: free some space, or set LLM_STUDIO_HOME on another disk",
    errno.ENOTDIR: "a part of that path is a file, not a folder",
    errno.ENOENT: "it does not exist",
}


class StudioError(Exception):
    """A problem the user can fix; str(error) is the one line shown to them."""


def os_error_line(error: OSError) -> str:
    """An operating-system error as one line: what failed, on which path, and what to do."""
    where = f" on {error.filename}" if error.filename else ""
    fix = FIXES.get(error.errno, "")
    return f"{error.strerror or type(error).__name__}{where}" + (f"; {fix}" if fix else "")
