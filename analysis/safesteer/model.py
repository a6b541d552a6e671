"""A model on an engine: tokenizer, chat templates, batched steered
generation and activation capture, all through libsafesteer."""
import ctypes as C
import os
from dataclasses import dataclass, field

import numpy as np

from . import _lib
from ._common import (array, c_ints, c_strings, call, interruptible, lib, sink, take_text,
                      utf8)
from .plan import CompiledPlans, Plan
from .vectors import SITES

POOLS = ("mean", "last", "all", "gen_mean")
STOP_REASONS = ("length", "eos", "stop_string", "context")


def default_model_path():
    """$SAFESTEER_MODEL, else the cached SmolLM2-135M-Instruct (scripts/fetch-model.sh)."""
    return lib().ss_default_model_path().decode()


@dataclass
class Generation:
    """One prompt's generation: like `safesteer generate --json`."""
    text: str
    ids: list
    prompt_ids: list
    stop_reason: str
    logprobs: list = field(default_factory=list)  # per step: (top ids [k], log-probs [k])


@dataclass
class CaptureResult:
    """Activations captured in memory: acts [N][L][d] pooled per prompt, or
    [T][L][d] every token with offsets [N+1] (pool "all")."""
    acts: np.ndarray
    layers: np.ndarray
    n_tokens: np.ndarray
    layer_norms: np.ndarray
    site: str
    pool: str
    n_layers_model: int
    offsets: np.ndarray = None

    def prompt(self, i):
        """Prompt i's rows: [L][d] pooled, or [tokens][L][d] for pool all."""
        return self.acts[self.offsets[i]:self.offsets[i + 1]] if self.offsets is not None \
            else self.acts[i]


class Model:
    """A GGUF file or Hugging Face folder on the CPU or CUDA engine.

        m = safesteer.Model()                      # the default model
        out = m.generate(["How do I pick a lock?"], max_new=32,
                         steer=[safesteer.Plan().add("vectors.h5:crime", layers=[14],
                                                     strength=4)])

    max_seqs KV slots of max_ctx positions (0: the model's context up to
    4096): a generate() or capture() call with more prompts runs in batches
    of max_seqs."""

    def __init__(self, path=None, device="cpu", threads=0, max_seqs=16, max_ctx=0, gpu=0):
        self.path = os.fspath(path) if path is not None else default_model_path()
        self._m, self._tok, self._e = C.c_void_p(), C.c_void_p(), C.c_void_p()
        try:
            call(lib().ss_model_load, utf8(self.path), C.byref(self._m))
            call(lib().ss_tokenizer_load, self._m, C.byref(self._tok))
            o = _lib.EngineOpts()
            lib().ss_engine_opts_default(C.byref(o))
            dev = C.c_int()
            call(lib().ss_device_parse, utf8(device), C.byref(dev))
            o.device, o.threads, o.max_seqs, o.max_ctx, o.gpu = (dev.value, int(threads),
                                                                 int(max_seqs), int(max_ctx),
                                                                 int(gpu))
            call(lib().ss_engine_create, self._m, C.byref(o), C.byref(self._e))
        except BaseException:
            self.close()
            raise
        self.device = device

    def close(self):
        """Frees the engine, tokenizer and model (also on garbage collection)."""
        if _lib._LIB is None:
            return
        if self._e:
            lib().ss_engine_free(self._e)
        if self._tok:
            lib().ss_tokenizer_free(self._tok)
        if self._m:
            lib().ss_model_free(self._m)
        self._m = self._tok = self._e = C.c_void_p()

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _alive(self):
        if not self._e:
            raise ValueError("the model is closed")

    # ------------------------------------------------------------ description

    @property
    def config(self):
        return lib().ss_engine_config(self._e).contents

    @property
    def info(self):
        """Architecture, size and engine of the model, as a dict."""
        self._alive()
        g, head = self.config, C.cast(self._m, C.POINTER(_lib.ModelHead)).contents
        tmpl = lib().ss_tokenizer_chat_template(self._tok)
        info = {k: getattr(g, k) for k, _ in _lib.Config._fields_}
        info.update({"path": head.path.decode(), "name": head.name.decode(),
                     "format": ("gguf", "hf", "synthetic")[head.format],
                     "params": lib().ss_model_param_count(self._m),
                     "device": lib().ss_engine_device_name(self._e).decode(),
                     "max_seqs": lib().ss_engine_max_seqs(self._e),
                     "max_ctx": lib().ss_engine_max_ctx(self._e),
                     "chat_template": tmpl.decode() if tmpl else None,
                     "bos": lib().ss_tokenizer_bos(self._tok),
                     "eos": lib().ss_tokenizer_eos(self._tok)})
        return info

    # ------------------------------------------------------------ text

    def tokenize(self, text, special=False):
        """Token ids of text (no BOS); special=True parses "<|im_start|>"-like text."""
        self._alive()
        b = utf8(text)
        ids, n = _lib.c_int32_p(), C.c_int()
        call(lib().ss_tokenize, self._tok, b, len(b), int(special), C.byref(ids), C.byref(n))
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            lib().ss_abi_free(C.cast(ids, C.c_void_p))

    def detokenize(self, ids, skip_special=True):
        self._alive()
        arr = c_ints(ids, C.c_int32)
        out = C.c_void_p()
        call(lib().ss_detokenize, self._tok, arr, len(ids), int(skip_special), C.byref(out))
        return take_text(out)

    def _family(self, chat, template=None):
        if not chat:
            return 0  # SS_CHAT_NONE
        fam = C.c_int()
        call(lib().ss_chat_family_for_model, self._m, utf8(template), C.byref(fam))
        return fam.value

    def chat(self, messages, add_generation_prompt=True, template=None):
        """The text the model's chat template renders for messages: a user
        string, or a list of {"role", "content"} (the template's default
        system prompt is added when there is no system turn)."""
        self._alive()
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        msgs = (_lib.ChatMsg * len(messages))(
            *[_lib.ChatMsg(utf8(m["role"]), utf8(m["content"])) for m in messages])
        tmpl = lib().ss_tokenizer_chat_template(self._tok)
        default = lib().ss_chat_default_system(tmpl) if tmpl else None
        out = C.c_void_p()
        try:
            call(lib().ss_chat_render, self._family(True, template), msgs, len(messages),
                 int(add_generation_prompt), C.cast(default, C.c_char_p) if default else None,
                 C.byref(out))
        finally:
            if default:
                lib().ss_abi_free(default)
        return take_text(out)

    def encode(self, prompt, chat=True, system=None, template=None):
        """The prompt's token ids as generate() feeds them (chat: the user
        turn rendered through the template with the generation prompt)."""
        self._alive()
        ids, n = _lib.c_int32_p(), C.c_int()
        call(lib().ss_encode_prompt, self._m, self._tok, self._family(chat, template),
             utf8(system), utf8(prompt), C.byref(ids), C.byref(n))
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            lib().ss_abi_free(C.cast(ids, C.c_void_p))

    # ------------------------------------------------------------ generation

    def generate(self, prompts, max_new=128, temperature=0.0, top_p=1.0, seed=0, chat=True,
                 system=None, template=None, steer=None, logprobs=0, stop=None,
                 progress=False):
        """Generates for every prompt at once (in batches of max_seqs).

        steer: a Plan for every prompt, or a list with a Plan (or None) per
        prompt; prompts with different plans share one batch.  Prompt i
        samples with seed + i.  logprobs: top-k log-probabilities at every
        step.  Returns a list of Generation (one Generation for a str);
        self.last_timing then holds the engine's prefill and decode seconds
        and tokens (as `generate --json` reports them)."""
        self._alive()
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        if isinstance(steer, Plan) or steer is None:
            plans = [steer] * len(prompts)
        else:
            plans = list(steer)
            if len(plans) != len(prompts):
                raise ValueError(f"{len(plans)} plans for {len(prompts)} prompts")
        encoded = [self.encode(p, chat, system, template) for p in prompts]
        B, out = lib().ss_engine_max_seqs(self._e), []
        self.last_timing = dict.fromkeys(("prefill_seconds", "prefill_tokens", "decode_seconds",
                                          "decode_tokens"), 0)
        for b0 in range(0, len(prompts), B):
            out += self._generate_batch(encoded[b0:b0 + B], plans[b0:b0 + B], max_new,
                                        temperature, top_p, seed + b0, logprobs, stop or [],
                                        progress)
        return out[0] if single else out

    def _generate_batch(self, encoded, plans, max_new, temperature, top_p, seed, logprobs_k,
                        stop, progress):
        n, g = len(encoded), self.config
        rows = [c_ints(ids, C.c_int32) for ids in encoded]
        prompts = (_lib.c_int32_p * n)(*[C.cast(r, _lib.c_int32_p) for r in rows])
        lens = c_ints([len(ids) for ids in encoded])
        stops = c_strings(stop)
        compiled = CompiledPlans(plans, g.n_layers, g.d_model)
        results = (_lib.GenResult * n)()
        try:
            req = _lib.GenRequest(n=n, prompts=prompts, n_prompt=lens, plans=compiled.pointers)
            req.params.max_new = int(max_new)
            req.params.sampler = _lib.SamplerParams(float(temperature), float(top_p), int(seed))
            req.params.stop_strings, req.params.n_stop_strings = stops, len(stop)
            req.params.logprobs_k = int(logprobs_k)
            timing = _lib.GenTiming()
            with interruptible() as state:
                req.progress, keep = sink(state, progress)
                call(lib().ss_generate, self._e, self._tok, C.byref(req), results,
                     C.byref(timing))
            for k in self.last_timing:
                self.last_timing[k] += getattr(timing, k)
            return [self._generation(results[i], encoded[i], logprobs_k) for i in range(n)]
        finally:
            for i in range(n):
                lib().ss_gen_result_free(C.byref(results[i]))
            compiled.free()

    @staticmethod
    def _generation(r, prompt_ids, k):
        steps = []
        if k:
            ids = array(r.top_ids, r.n_steps * k, np.int32).reshape(r.n_steps, k)
            lps = array(r.top_logprobs, r.n_steps * k, np.float32).reshape(r.n_steps, k)
            steps = list(zip(ids, lps))
        return Generation(text=C.string_at(r.text).decode("utf-8", "replace") if r.text else "",
                          ids=[r.ids[i] for i in range(r.n_ids)], prompt_ids=list(prompt_ids),
                          stop_reason=STOP_REASONS[r.stop_reason], logprobs=steps)

    # ------------------------------------------------------------ capture

    def _capture_opts(self, layers, site, pool, batch, n, responses, max_new, progress_sink):
        if site not in SITES:
            raise ValueError(f"site {site!r} is not one of {', '.join(SITES)}")
        if pool not in POOLS:
            raise ValueError(f"pool {pool!r} is not one of {', '.join(POOLS)}")
        spec = layers if isinstance(layers, str) else ",".join(str(int(x)) for x in layers)
        lay, nl = C.POINTER(C.c_int)(), C.c_int()
        call(lib().ss_layers_parse, utf8(spec), self.config.n_layers, C.byref(lay), C.byref(nl))
        o = _lib.CaptureOpts()
        lib().ss_capture_opts_default(C.byref(o))
        o.site, o.pool, o.layers, o.n_layers = SITES.index(site), POOLS.index(pool), lay, nl.value
        o.batch = max(1, min(int(batch or lib().ss_engine_max_seqs(self._e)), n))
        o.mean_response = int(responses is not None and pool in ("mean", "all"))
        o.tok, o.progress = self._tok, progress_sink
        o.gen.max_new, o.gen.sampler.top_p = int(max_new), 1.0
        return o

    def _capture_source(self, prompts, family, responses, ids, categories, labels):
        n = len(prompts)
        cols = {"text": c_strings(prompts),
                "id": c_strings(ids or [f"row-{i}" for i in range(n)]),
                "category": c_strings(categories or [""] * n),
                "label": c_strings(labels or [""] * n),
                "response": c_strings(responses) if responses is not None else None}
        for name, values in (("ids", ids), ("categories", categories), ("labels", labels),
                             ("responses", responses)):
            if values is not None and len(values) != n:
                raise ValueError(f"{len(values)} {name} for {n} prompts")

        def encode(user, i, ids_out, n_ids, n_prompt, err):
            resp = responses[i] if responses is not None else None
            return lib().ss_capture_encode(self._m, self._tok, family, utf8(prompts[i]),
                                           utf8(resp), ids_out, n_ids, n_prompt, err)

        fn = _lib.ENCODE_FN(encode)
        src = _lib.CaptureSource(n, cols["text"], cols["id"], cols["category"], cols["label"],
                                 cols["response"], fn, None)
        return src, (cols, fn)

    def capture(self, prompts, layers="all", site="resid_post", pool="mean", chat=True,
                template=None, responses=None, batch=None, max_new=64, progress=False):
        """Activations of prompts at layers, pooled as `safesteer capture
        --pool` does, returned as arrays (no file).  responses: one per
        prompt, appended as the assistant turn (mean/all then cover them)."""
        self._alive()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        src, keep = self._capture_source(prompts, self._family(chat, template), responses,
                                         None, None, None)
        data = _lib.CaptureData()
        with interruptible() as state:
            ps, cb = sink(state, progress)
            o = self._capture_opts(layers, site, pool, batch, len(prompts), responses, max_new,
                                   ps)
            try:
                call(lib().ss_capture_to_memory, self._e, C.byref(src), C.byref(o),
                     C.byref(data))
            finally:
                lib().ss_abi_free(C.cast(o.layers, C.c_void_p))
        try:
            L, d = data.n_layers, data.d_model
            return CaptureResult(
                acts=array(data.acts, data.n_rows * L * d, np.float32).reshape(-1, L, d),
                layers=array(data.layers, L, np.int32),
                n_tokens=array(data.n_tokens, data.n_done, np.int32),
                layer_norms=array(data.layer_norms, L, np.float32), site=site, pool=pool,
                n_layers_model=self.config.n_layers,
                offsets=array(data.offsets, data.n_done + 1, np.int64) if data.offsets else None)
        finally:
            lib().ss_capture_data_free(C.byref(data))

    def capture_to(self, path, prompts, layers="all", site="resid_post", pool="mean", chat=True,
                   template=None, ids=None, categories=None, labels=None, responses=None,
                   f16=False, batch=None, max_new=64, resume=False, force=False,
                   data_path="", progress=False):
        """`safesteer capture` into path (docs/hdf5-schema.md): resumable,
        with the prompts' ids, categories and labels stored beside the
        activations.  Returns path."""
        self._alive()
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        family = self._family(chat, template)
        src, keep = self._capture_source(prompts, family, responses, ids, categories, labels)
        sha = C.create_string_buffer(65)
        call(lib().ss_model_sha256, utf8(self.path), sha)
        head = C.cast(self._m, C.POINTER(_lib.ModelHead)).contents
        provenance = [utf8(head.name.decode()), utf8(head.path.decode()), sha.value,
                      lib().ss_chat_family_name(family), utf8(data_path)]
        outcome = _lib.CaptureOutcome()
        with interruptible() as state:
            ps, cb = sink(state, progress)
            o = self._capture_opts(layers, site, pool, batch, len(prompts), responses, max_new,
                                   ps)
            o.model_name, o.model_path, o.model_sha256, o.chat_template, o.data_path = provenance
            o.chat, o.f16, o.resume, o.force = int(family != 0), int(f16), int(resume), int(force)
            try:
                call(lib().ss_capture_run, self._e, C.byref(src), C.byref(o),
                     utf8(os.fspath(path)), C.byref(outcome))
            finally:
                lib().ss_abi_free(C.cast(o.layers, C.c_void_p))
        return path
