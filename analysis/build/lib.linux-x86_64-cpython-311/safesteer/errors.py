"""Exceptions raised by the safesteer package.  A failure inside the C
library becomes a SafesteerError carrying the library's message (which
names the file, field or parameter and the value at fault) and its kind."""

# ss_error_kind (include/safesteer/util.h)
FAILED, EXISTS, INCOMPLETE, STOPPED = 0, 1, 2, 3


class SafesteerError(Exception):
    """A C library call failed; str(e) is the library's message."""

    def __init__(self, message, kind=FAILED):
        super().__init__(message)
        self.message = message
        self.kind = kind


class OutputExistsError(SafesteerError, FileExistsError):
    """An output exists and would be overwritten: pass force=True."""


class IncompleteError(SafesteerError):
    """A file holds an unfinished run: pass resume=True, or delete it."""


class LibraryError(SafesteerError, OSError):
    """libsafesteer.so is missing, does not load, or does not match this package."""


def from_c(err):
    """The exception for a filled ss_error (KeyboardInterrupt when the
    caller's Ctrl-C stopped the work)."""
    msg = err.msg.decode("utf-8", "replace")
    if err.kind == STOPPED:
        return KeyboardInterrupt(msg)
    cls = {EXISTS: OutputExistsError, INCOMPLETE: IncompleteError}.get(err.kind, SafesteerError)
    return cls(msg, err.kind)
