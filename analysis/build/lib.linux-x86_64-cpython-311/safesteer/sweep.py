"""Config-driven sweeps (docs/sweeps.md) through libsafesteer."""
import ctypes as C
import os

from . import _lib
from ._common import call, interruptible, lib, sink, utf8


def sweep(config, out, model=None, resume=False, shard=None, threads=None, device=None,
          progress=True):
    """Runs the experiment file `config` into the folder `out`, as
    `safesteer sweep CONFIG --out OUT` does; returns out.

    shard: (i, n) or "i/n" to run only units u with u % n == i (join the
    folders with `safesteer merge`).  progress: True prints the CLI's
    progress lines on stderr, a callable receives each report as a dict,
    False prints nothing.  Ctrl-C stops the run cleanly (resume=True
    continues it)."""
    cfg = C.create_string_buffer(lib().sweep_config_size)
    err = _lib.Error()
    if lib().ss_config_load(utf8(os.fspath(config)), cfg, C.byref(err)) < 0:
        lib().ss_config_free(cfg)
        from .errors import from_c
        raise from_c(err)
    try:
        o = _lib.SweepOpts()
        lib().ss_sweep_opts_default(C.byref(o))
        o.out_dir, o.model, o.resume = utf8(os.fspath(out)), utf8(model), int(resume)
        if shard is not None:
            i, n = (int(x) for x in (shard.split("/") if isinstance(shard, str) else shard))
            o.shard_i, o.shard_n = i, n
        if threads is not None:
            o.threads = int(threads)
        if device is not None:
            dev = C.c_int()
            call(lib().ss_device_parse, utf8(device), C.byref(dev))
            o.device = dev.value
        with interruptible() as state:
            o.progress, keep = sink(state, progress)
            call(lib().ss_sweep_run, cfg, C.byref(o))
    finally:
        lib().ss_config_free(cfg)
    return out
