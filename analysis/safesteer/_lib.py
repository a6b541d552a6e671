"""ctypes bindings of libsafesteer: finding the shared library, the struct
mirrors (checked against the library's own sizes, abi.h) and the function
prototypes.  Everything above this module speaks Python and numpy."""
import ctypes as C
import os
import pathlib

from . import errors

HERE = pathlib.Path(__file__).resolve().parent
LIB_NAME = "libsafesteer.so"


def _candidates():
    if os.environ.get("SAFESTEER_LIB"):
        yield pathlib.Path(os.environ["SAFESTEER_LIB"])
    yield HERE / LIB_NAME                     # copied in by `pip install ./analysis`
    repo = HERE.parents[1]                    # analysis/safesteer -> the repository
    if os.environ.get("SAFESTEER_BUILD"):
        yield pathlib.Path(os.environ["SAFESTEER_BUILD"]) / LIB_NAME
    yield repo / "build" / LIB_NAME


def find_library():
    """The first libsafesteer.so of: $SAFESTEER_LIB, the installed package,
    $SAFESTEER_BUILD, the repository's build/ folder."""
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file():
            return path
    raise errors.LibraryError(
        "libsafesteer.so not found (tried " + ", ".join(tried) + "); build it with "
        "scripts/setup.sh, or set SAFESTEER_LIB to its path")


# ---------------------------------------------------------------- structs (include/safesteer/*.h)

c_int64_p = C.POINTER(C.c_int64)
c_int32_p = C.POINTER(C.c_int32)
c_char_pp = C.POINTER(C.c_char_p)


class Error(C.Structure):
    _fields_ = [("msg", C.c_char * 1024), ("kind", C.c_int)]


class ProgressReport(C.Structure):
    _fields_ = [("task", C.c_char_p), ("unit", C.c_char_p), ("done", C.c_int64),
                ("total", C.c_int64), ("elapsed", C.c_double), ("rate", C.c_double),
                ("eta", C.c_double), ("final", C.c_int)]


PROGRESS_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(ProgressReport))


class ProgressSink(C.Structure):
    _fields_ = [("fn", PROGRESS_FN), ("user", C.c_void_p)]


class Config(C.Structure):
    _fields_ = [(n, C.c_int) for n in ("n_layers", "d_model", "n_heads", "n_kv_heads",
                                       "head_dim", "d_ff", "vocab_size", "max_ctx")] + [
        ("rms_eps", C.c_float), ("rope_theta", C.c_float), ("rope_neox", C.c_int),
        ("rope_scaling", C.c_int), ("rope_factor", C.c_float),
        ("rope_low_freq_factor", C.c_float), ("rope_high_freq_factor", C.c_float),
        ("rope_orig_ctx", C.c_int), ("tied_embeddings", C.c_int)]


class ModelHead(C.Structure):
    """The leading fields of ss_model (the rest is never read here)."""
    _fields_ = [("path", C.c_char * 1024), ("name", C.c_char * 256), ("format", C.c_int),
                ("cfg", Config)]


class EngineOpts(C.Structure):
    _fields_ = [(n, C.c_int) for n in ("device", "threads", "max_seqs", "max_ctx", "gpu")]


class SamplerParams(C.Structure):
    _fields_ = [("temperature", C.c_float), ("top_p", C.c_float), ("seed", C.c_uint64)]


class GenParams(C.Structure):
    _fields_ = [("max_new", C.c_int), ("sampler", SamplerParams), ("stop_strings", c_char_pp),
                ("n_stop_strings", C.c_int), ("logprobs_k", C.c_int)]


class GenResult(C.Structure):
    _fields_ = [("ids", c_int32_p), ("n_ids", C.c_int), ("text", C.c_void_p),
                ("stop_reason", C.c_int), ("top_ids", C.POINTER(C.c_int)),
                ("top_logprobs", C.POINTER(C.c_float)), ("n_steps", C.c_int)]


class GenTiming(C.Structure):
    _fields_ = [("prefill_seconds", C.c_double), ("prefill_tokens", C.c_long),
                ("decode_seconds", C.c_double), ("decode_tokens", C.c_long)]


class Positions(C.Structure):
    _fields_ = [("rule", C.c_int), ("k", C.c_int)]


class SteerPlan(C.Structure):
    _fields_ = [("n_layers", C.c_int), ("d_model", C.c_int), ("n_entries", C.c_int),
                ("entries", C.c_void_p), ("positions", Positions)]


TEXT_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_char_p, C.c_size_t)


class GenRequest(C.Structure):
    _fields_ = [("n", C.c_int), ("prompts", C.POINTER(c_int32_p)),
                ("n_prompt", C.POINTER(C.c_int)), ("plans", C.POINTER(C.POINTER(SteerPlan))),
                ("params", GenParams), ("on_text", TEXT_FN), ("user", C.c_void_p),
                ("progress", ProgressSink)]


class VectorSet(C.Structure):
    _fields_ = [("path", C.c_char * 1024), ("n_categories", C.c_int), ("n_layers", C.c_int),
                ("d_model", C.c_int), ("categories", c_char_pp), ("layers", c_int32_p),
                ("vectors", C.POINTER(C.c_float)), ("site", C.c_int), ("method", C.c_char * 64),
                ("pooling", C.c_char * 16), ("model_name", C.c_char * 256),
                ("model_sha256", C.c_char * 80), ("model_hint", C.c_char * 256),
                ("norms", C.POINTER(C.c_float)), ("cosine", C.POINTER(C.c_float)),
                ("safe_pool", c_char_pp), ("counts_unsafe", c_int64_p),
                ("counts_safe", c_int64_p), ("counts_kept", c_int64_p),
                ("separability", C.POINTER(C.c_float)), ("n_prompts", C.c_int64),
                ("n_safe_prompts", C.c_int64), ("split", C.POINTER(C.c_int8)),
                ("safe_split", C.POINTER(C.c_int8)), ("passes", C.c_int),
                ("pca_iterations", C.c_int), ("pca_residual", C.c_double),
                ("source_sha256", C.c_char * 65), ("safe_source_sha256", C.c_char * 65),
                ("unsafe_label", C.c_char * 64), ("safe_label", C.c_char * 64),
                ("holdout", C.c_double), ("seed", C.c_uint64)]


class SteerSource(C.Structure):
    _fields_ = [("vectors", C.POINTER(VectorSet)), ("category", C.c_char_p), ("site", C.c_int),
                ("layers", C.POINTER(C.c_int)), ("n_layers", C.c_int),
                ("strengths", C.POINTER(C.c_float)), ("n_strengths", C.c_int),
                ("op", C.c_int), ("normalize_acts", C.c_char_p)]


class VecOptions(C.Structure):
    _fields_ = [("acts_path", C.c_char_p), ("safe_acts_path", C.c_char_p),
                ("unsafe_label", C.c_char_p), ("safe_label", C.c_char_p),
                ("safe_category", C.c_char_p), ("categories", c_char_pp),
                ("n_categories", C.c_int), ("layers", C.POINTER(C.c_int)), ("n_layers", C.c_int),
                ("method", C.c_int), ("holdout", C.c_double), ("seed", C.c_uint64),
                ("pca_iters", C.c_int), ("chunk_rows", C.c_int), ("progress", ProgressSink)]


ENCODE_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.c_int, C.POINTER(c_int32_p), C.POINTER(C.c_int),
                        C.POINTER(C.c_int), C.POINTER(Error))


class CaptureSource(C.Structure):
    _fields_ = [("n", C.c_int), ("text", c_char_pp), ("id", c_char_pp), ("category", c_char_pp),
                ("label", c_char_pp), ("response", c_char_pp), ("encode", ENCODE_FN),
                ("user", C.c_void_p)]


class CaptureOpts(C.Structure):
    _fields_ = [("site", C.c_int), ("n_layers", C.c_int), ("layers", C.POINTER(C.c_int)),
                ("pool", C.c_int), ("mean_response", C.c_int), ("f16", C.c_int),
                ("batch", C.c_int), ("resume", C.c_int), ("force", C.c_int),
                ("progress", ProgressSink), ("tok", C.c_void_p), ("gen", GenParams),
                ("model_name", C.c_char_p), ("model_path", C.c_char_p),
                ("model_sha256", C.c_char_p), ("chat", C.c_int), ("chat_template", C.c_char_p),
                ("data_path", C.c_char_p)]


class CaptureOutcome(C.Structure):
    _fields_ = [("n_before", C.c_int64), ("was_complete", C.c_int)]


class CaptureData(C.Structure):
    _fields_ = [(n, C.c_int) for n in ("n_prompts", "n_done", "complete", "n_layers", "d_model",
                                       "pool", "site")] + [
        ("layers", c_int32_p), ("n_rows", C.c_int64), ("acts", C.POINTER(C.c_float)),
        ("offsets", c_int64_p), ("n_tokens", c_int32_p), ("layer_norms", C.POINTER(C.c_float))]


class SweepOpts(C.Structure):
    _fields_ = [("out_dir", C.c_char_p), ("model", C.c_char_p), ("resume", C.c_int),
                ("shard_i", C.c_int), ("shard_n", C.c_int), ("threads", C.c_int),
                ("device", C.c_int), ("progress", ProgressSink),
                ("throughput", C.c_void_p),  # ss_sweep_throughput *; throughput.json has it
                ("trace_tokens", C.c_int)]


class ChatMsg(C.Structure):
    _fields_ = [("role", C.c_char_p), ("content", C.c_char_p)]


# struct name in C -> mirror (sizes compared at load)
MIRRORS = {"ss_error": Error, "ss_progress_report": ProgressReport,
           "ss_progress_sink": ProgressSink, "ss_config": Config, "ss_engine_opts": EngineOpts,
           "ss_sampler_params": SamplerParams, "ss_gen_params": GenParams,
           "ss_gen_result": GenResult, "ss_gen_timing": GenTiming, "ss_gen_request": GenRequest,
           "ss_positions": Positions, "ss_steer_plan": SteerPlan,
           "ss_steer_source": SteerSource, "ss_vector_set": VectorSet,
           "ss_vec_options": VecOptions, "ss_capture_source": CaptureSource,
           "ss_capture_opts": CaptureOpts, "ss_capture_data": CaptureData,
           "ss_sweep_opts": SweepOpts, "ss_chat_msg": ChatMsg}

# ---------------------------------------------------------------- functions

P, I, V = C.c_void_p, C.c_int, None
ERR = C.POINTER(Error)
PROTOTYPES = {
    "ss_abi_sizeof": (C.c_size_t, [C.c_char_p]),
    "ss_abi_version": (C.c_char_p, []),
    "ss_abi_has_cuda": (I, []),
    "ss_abi_free": (V, [P]),
    "ss_default_model_path": (C.c_char_p, []),
    "ss_model_load": (I, [C.c_char_p, C.POINTER(P), ERR]),
    "ss_model_free": (V, [P]),
    "ss_model_sha256": (I, [C.c_char_p, C.c_char_p, ERR]),
    "ss_model_param_count": (C.c_int64, [P]),
    "ss_tokenizer_load": (I, [P, C.POINTER(P), ERR]),
    "ss_tokenizer_free": (V, [P]),
    "ss_tokenizer_chat_template": (C.c_char_p, [P]),
    "ss_tokenizer_bos": (I, [P]),
    "ss_tokenizer_eos": (I, [P]),
    "ss_tokenize": (I, [P, C.c_char_p, C.c_size_t, I, C.POINTER(c_int32_p), C.POINTER(I), ERR]),
    "ss_detokenize": (I, [P, c_int32_p, I, I, C.POINTER(P), ERR]),
    "ss_chat_family_for_model": (I, [P, C.c_char_p, C.POINTER(I), ERR]),
    "ss_chat_family_name": (C.c_char_p, [I]),
    "ss_chat_render": (I, [I, C.POINTER(ChatMsg), I, I, C.c_char_p, C.POINTER(P), ERR]),
    "ss_chat_default_system": (P, [C.c_char_p]),
    "ss_encode_prompt": (I, [P, P, I, C.c_char_p, C.c_char_p, C.POINTER(c_int32_p), C.POINTER(I),
                             ERR]),
    "ss_engine_opts_default": (V, [C.POINTER(EngineOpts)]),
    "ss_engine_create": (I, [P, C.POINTER(EngineOpts), C.POINTER(P), ERR]),
    "ss_engine_free": (V, [P]),
    "ss_engine_config": (C.POINTER(Config), [P]),
    "ss_engine_max_seqs": (I, [P]),
    "ss_engine_max_ctx": (I, [P]),
    "ss_engine_device_name": (C.c_char_p, [P]),
    "ss_device_parse": (I, [C.c_char_p, C.POINTER(I), ERR]),
    "ss_site_parse": (I, [C.c_char_p, C.POINTER(I), ERR]),
    "ss_site_name": (C.c_char_p, [I]),
    "ss_pool_parse": (I, [C.c_char_p, C.POINTER(I), ERR]),
    "ss_positions_parse": (I, [C.c_char_p, C.POINTER(Positions), ERR]),
    "ss_layers_parse": (I, [C.c_char_p, I, C.POINTER(C.POINTER(I)), C.POINTER(I), ERR]),
    "ss_steer_plan_init": (V, [C.POINTER(SteerPlan), I, I]),
    "ss_steer_plan_free": (V, [C.POINTER(SteerPlan)]),
    "ss_steer_plan_add_vectors": (I, [C.POINTER(SteerPlan), C.POINTER(SteerSource), ERR]),
    "ss_generate": (I, [P, P, C.POINTER(GenRequest), C.POINTER(GenResult), C.POINTER(GenTiming),
                        ERR]),
    "ss_gen_result_free": (V, [C.POINTER(GenResult)]),
    "ss_vectors_load": (I, [C.c_char_p, C.POINTER(VectorSet), ERR]),
    "ss_vectors_write": (I, [C.c_char_p, C.POINTER(VectorSet), ERR]),
    "ss_vectors_free": (V, [C.POINTER(VectorSet)]),
    "ss_vectors_split_ref": (V, [C.c_char_p, C.c_char_p, C.c_size_t, C.POINTER(C.c_char_p)]),
    "ss_vectors_from_array": (I, [C.c_char_p, I, c_int32_p, I, I, C.POINTER(C.c_float),
                                  C.POINTER(VectorSet), ERR]),
    "ss_vectors_compute": (I, [C.POINTER(VecOptions), C.POINTER(VectorSet), ERR]),
    "ss_vec_options_init": (V, [C.POINTER(VecOptions)]),
    "ss_vec_method_parse": (I, [C.c_char_p, C.POINTER(I), ERR]),
    "ss_control_vector_write": (I, [C.c_char_p, C.POINTER(VectorSet), I, C.c_float, C.c_char_p,
                                    I, C.POINTER(I), ERR]),
    "ss_capture_opts_default": (V, [C.POINTER(CaptureOpts)]),
    "ss_capture_encode": (I, [P, P, I, C.c_char_p, C.c_char_p, C.POINTER(c_int32_p),
                              C.POINTER(I), C.POINTER(I), ERR]),
    "ss_capture_run": (I, [P, C.POINTER(CaptureSource), C.POINTER(CaptureOpts), C.c_char_p,
                           C.POINTER(CaptureOutcome), ERR]),
    "ss_capture_to_memory": (I, [P, C.POINTER(CaptureSource), C.POINTER(CaptureOpts),
                                 C.POINTER(CaptureData), ERR]),
    "ss_capture_data_free": (V, [C.POINTER(CaptureData)]),
    "ss_config_load": (I, [C.c_char_p, P, ERR]),
    "ss_config_free": (V, [P]),
    "ss_sweep_opts_default": (V, [C.POINTER(SweepOpts)]),
    "ss_sweep_run": (I, [P, C.POINTER(SweepOpts), ERR]),
}


def load():
    """The library with every prototype set, after checking the mirrors."""
    path = find_library()
    # OpenMP threads that spin while they wait make the CPU engine 5-10x
    # slower once anything else uses the cores (docs/cpu-engine.md); libgomp
    # reads this when it loads, so it must be set before the library is.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        lib = C.CDLL(str(path))   # CDLL: the GIL is released during every call
    except OSError as e:
        raise errors.LibraryError(f"{path}: cannot load: {e}") from None
    for name, (res, args) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    for cname, mirror in MIRRORS.items():
        want = lib.ss_abi_sizeof(cname.encode())
        if want != C.sizeof(mirror):
            raise errors.LibraryError(
                f"{path}: struct {cname} is {want} bytes in the library, {C.sizeof(mirror)} in "
                f"safesteer/_lib.py: the package and the library come from different versions")
    lib.sweep_config_size = lib.ss_abi_sizeof(b"ss_sweep_config")
    lib.path = path
    return lib


_LIB = None


def lib():
    global _LIB
    if _LIB is None:
        _LIB = load()
    return _LIB
