"""What the API modules share: calling the library (errors become
exceptions), progress sinks that also carry Ctrl-C into the C code, and
conversions between Python/numpy values and C arrays."""
import contextlib
import ctypes as C
import signal
import sys
import threading

import numpy as np

from . import _lib, errors


def lib():
    return _lib.lib()


def call(fn, *args):
    """fn(*args, &err); raises the library's error when it returns -1."""
    err = _lib.Error()
    if fn(*args, C.byref(err)) < 0:
        raise errors.from_c(err)


def utf8(s):
    return None if s is None else str(s).encode("utf-8")


def c_strings(items):
    """A char*[n] of UTF-8 copies (keep the returned array alive)."""
    arr = (C.c_char_p * max(len(items), 1))()
    for i, s in enumerate(items):
        arr[i] = utf8(s)
    return arr


def c_ints(values, ctype=C.c_int):
    arr = (ctype * max(len(values), 1))()
    for i, v in enumerate(values):
        arr[i] = int(v)
    return arr


def take_text(ptr):
    """A char* the library malloc'd, as str, freed."""
    if not ptr:
        return ""
    try:
        return C.string_at(ptr).decode("utf-8", "replace")
    finally:
        lib().ss_abi_free(ptr)


def array(ptr, count, dtype):
    """A copy of count values at a C pointer (empty when NULL or 0)."""
    if not ptr or count <= 0:
        return np.zeros(0, dtype=dtype)
    return np.ctypeslib.as_array(ptr, shape=(count,)).astype(dtype, copy=True)


def strings(ptr, count):
    return [ptr[i].decode("utf-8", "replace") for i in range(count)] if ptr else []


# ---------------------------------------------------------------- progress and Ctrl-C

class _Interrupt:
    """Ctrl-C during a library call: a SIGINT handler sets the flag, and the
    next progress report asks the C code to stop (it then fails with kind
    SS_ERR_STOPPED, raised as KeyboardInterrupt)."""

    def __init__(self):
        self.requested = False


@contextlib.contextmanager
def interruptible():
    state = _Interrupt()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None

    def on_sigint(signum, frame):
        state.requested = True

    if main:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield state
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def print_report(r):
    """The CLI's progress line, on stderr."""
    print(f"{r['task']}: {r['done']}/{r['total']} {r['unit']}, {r['rate']:.2f} {r['unit']}/s, "
          f"elapsed {r['elapsed']:.0f} s, ETA {r['eta']:.0f} s", file=sys.stderr, flush=True)


def sink(state, progress=None):
    """An ss_progress_sink: progress True prints lines, a callable gets each
    report as a dict; any value stops the work once Ctrl-C was pressed.
    Returns (sink, keepalive)."""
    report = print_report if progress is True else progress if callable(progress) else None

    def fn(user, rp):
        if report is not None:
            r = rp.contents
            try:
                report({"task": r.task.decode(), "unit": r.unit.decode(), "done": r.done,
                        "total": r.total, "elapsed": r.elapsed, "rate": r.rate, "eta": r.eta,
                        "final": bool(r.final)})
            except Exception as e:  # a failing callback stops the run
                print(f"safesteer: progress callback failed: {e!r}", file=sys.stderr)
                return 1
        return 1 if state.requested else 0

    cfn = _lib.PROGRESS_FN(fn)
    return _lib.ProgressSink(cfn, None), cfn
