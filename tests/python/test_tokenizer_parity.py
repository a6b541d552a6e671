"""Tokenizer and chat-template parity, live against the reference libraries.

* SmolLM2 (byte-level BPE, Digits + GPT-2 regex): `tokenizers` built from the
  GGUF's own vocabulary (scripts/goldens/tokenizer_json.py) vs
  `safesteer tokenize --model` on the golden strings; decode too.
* SentencePiece-style BPE (Llama-2: Prepend/Replace normalizer, byte
  fallback; and the Metaspace pre-tokenizer form) and Llama-3 style
  (ByteLevel with the Llama-3 split regex): small tokenizers trained here
  with `tokenizers`, saved as folders, vs `safesteer tokenize --tokenizer`.
* Chat templates: the SmolLM2 template from the GGUF and Meta's Llama-2,
  Llama-3 and Llama Guard 3 templates rendered by jinja2 vs `safesteer
  tokenize --chat --print-prompt`; the sweep judge's Llama Guard prompt
  golden (tests/golden/llama_guard3_judge_prompt.json) re-rendered.
"""
import json
import pathlib
import sys

import pytest

from conftest import REPO, run_safesteer

tokenizers = pytest.importorskip("tokenizers")
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, trainers)

sys.path.insert(0, str(REPO / "scripts" / "goldens"))
from tokenizer_json import LLAMA3_REGEX, build_tokenizer_json, read_gguf_tokenizer  # noqa: E402
import make_llama_guard_golden as guard  # noqa: E402

STRINGS_FILE = REPO / "scripts" / "goldens" / "tokenizer_strings.jsonl"
SPACE = "\u2581"

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}")

LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

BOS_EOS = {"chatml": ("<|im_start|>", "<|im_end|>"), "llama2": ("<s>", "</s>"),
           "llama3": ("<|begin_of_text|>", "<|eot_id|>")}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "  padded question \n"},
     {"role": "assistant", "content": " Four. "},
     {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": "You are a pirate."},
     {"role": "user", "content": "Hello there"},
     {"role": "assistant", "content": "Arr, ahoy!"},
     {"role": "user", "content": "多少钱？ 😀\nline two"}],
]


def load_strings():
    with open(STRINGS_FILE, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def cli_ids(binary, source_args, strings, tmp_path):
    """Ids for every string through one `safesteer tokenize --file` run."""
    inp = tmp_path / "strings.jsonl"
    inp.write_text("".join(json.dumps(s) + "\n" for s in strings), encoding="utf-8")
    out = run_safesteer(binary, "tokenize", *source_args, "--file", inp, "--json-lines",
                        "--json").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(strings)
    return rows


def compare(tok, binary, source_args, strings, tmp_path):
    got = cli_ids(binary, source_args, strings, tmp_path)
    bad = [(s, tok.encode(s, add_special_tokens=False).ids, g)
           for s, g in zip(strings, got) if tok.encode(s, add_special_tokens=False).ids != g]
    assert not bad, "%d of %d strings differ; first: %r" % (len(bad), len(strings), bad[0])


# ---------------------------------------------------------------- SmolLM2


@pytest.fixture(scope="module")
def smollm2_tok(default_model):
    return Tokenizer.from_str(build_tokenizer_json(str(default_model)))


def test_smollm2_encode_matches_tokenizers(safesteer_bin, default_model, smollm2_tok, tmp_path):
    compare(smollm2_tok, safesteer_bin, ["--model", default_model], load_strings(), tmp_path)


def test_smollm2_detokenize_matches_tokenizers(safesteer_bin, default_model, smollm2_tok):
    for s in ["Hello 😀 world", "naïve résumé\n\tcode()", "<|im_start|>user\nHi<|im_end|>",
              "你好，世界 1234"]:
        ids = smollm2_tok.encode(s).ids
        for skip in (False, True):
            args = ["detokenize", "--model", default_model, "--json"]
            args += ["--skip-special"] if skip else []
            got = json.loads(run_safesteer(safesteer_bin, *args, *ids).stdout)
            assert got == smollm2_tok.decode(ids, skip_special_tokens=skip)


def test_smollm2_golden_file_is_current(default_model, smollm2_tok):
    """The committed goldens are what `tokenizers` produces today."""
    path = REPO / "tests" / "golden" / "tokenizer_smollm2.jsonl"
    # split("\n"), not splitlines(): the texts hold raw U+2028 and U+0085
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert [r["text"] for r in rows] == load_strings()
    for r in rows:
        assert smollm2_tok.encode(r["text"], add_special_tokens=False).ids == r["ids"], r["text"]


# ---------------------------------------------------------------- trained


def training_corpus():
    base = load_strings()
    extra = ["The cat sat on the mat and the dog sat on the log.",
             "Tokenizers split text into pieces; byte fallback covers the rest.",
             "def f(x):\n    return x * 2  # doubled", "Numbers like 12, 345 and 6789 appear."]
    return (base + extra) * 3


def save_folder(tok, folder, add_bos=False, edit=None):
    folder.mkdir(parents=True, exist_ok=True)
    tj = json.loads(tok.to_str())
    if edit:
        edit(tj)
    (folder / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": add_bos, "bos_token": "<s>", "eos_token": "</s>"}), encoding="utf-8")
    return Tokenizer.from_str(json.dumps(tj, ensure_ascii=False))


def byte_tokens_not_added(tj):
    """Like Llama-2: <0xNN> live in the model vocabulary, not as added tokens."""
    tj["added_tokens"] = [a for a in tj["added_tokens"] if not a["content"].startswith("<0x")]


@pytest.fixture(scope="module")
def spm_model():
    """A byte-fallback BPE trained on whole words with "▁" marks."""
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE),
                                           normalizers.Replace(" ", SPACE)])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never",
                                                 split=True)
    specials = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=specials, limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(training_corpus(), trainer)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return tok


def test_spm_llama2_style_matches_tokenizers(safesteer_bin, spm_model, tmp_path):
    """Llama-2's tokenizer.json: Prepend + Replace normalizer, no
    pre-tokenizer, byte fallback, Strip decoder."""
    spm_model.pre_tokenizer = None
    ref = save_folder(spm_model, tmp_path / "llama2", edit=byte_tokens_not_added)
    compare(ref, safesteer_bin, ["--tokenizer", tmp_path / "llama2"], load_strings(), tmp_path)
    for s in ["Hello world", " leading space", "多少钱？ 😀", "a  b"]:
        ids = ref.encode(s).ids
        got = json.loads(run_safesteer(safesteer_bin, "detokenize", "--tokenizer",
                                       tmp_path / "llama2", "--json", *ids).stdout)
        assert got == ref.decode(ids), s


def test_spm_metaspace_style_matches_tokenizers(safesteer_bin, spm_model, tmp_path):
    """Newer SentencePiece conversions: Metaspace(prepend_scheme=first) and a
    Metaspace decoder, no normalizer."""
    spm_model.normalizer = None
    spm_model.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first",
                                                       split=False)
    spm_model.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="first",
                                           split=False)
    ref = save_folder(spm_model, tmp_path / "metaspace", edit=byte_tokens_not_added)
    compare(ref, safesteer_bin, ["--tokenizer", tmp_path / "metaspace"], load_strings(), tmp_path)


def test_llama3_style_matches_tokenizers(safesteer_bin, tmp_path):
    """Byte-level BPE with the Llama-3 split regex and ignore_merges."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, show_progress=False,
                                  special_tokens=["<|begin_of_text|>", "<|end_of_text|>",
                                                  "<|start_header_id|>", "<|end_header_id|>",
                                                  "<|eot_id|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_corpus(), trainer)
    ref = save_folder(tok, tmp_path / "llama3")
    compare(ref, safesteer_bin, ["--tokenizer", tmp_path / "llama3"], load_strings(), tmp_path)


# ---------------------------------------------------------------- chat


def jinja_render(template, family, messages, add_generation_prompt=True):
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    bos, eos = BOS_EOS[family]
    return env.from_string(template).render(messages=messages, bos_token=bos, eos_token=eos,
                                            add_generation_prompt=add_generation_prompt,
                                            raise_exception=raise_exception)


def cli_prompt(binary, source_args, messages, tmp_path, gen=True):
    path = tmp_path / "messages.json"
    path.write_text(json.dumps(messages), encoding="utf-8")
    args = ["tokenize", *source_args, "--chat", "--messages", path, "--print-prompt", "--json"]
    if not gen:
        args.append("--no-gen-prompt")
    return json.loads(run_safesteer(binary, *args).stdout)


@pytest.mark.parametrize("family,template", [("llama2", LLAMA2_TEMPLATE),
                                             ("llama3", LLAMA3_TEMPLATE)])
def test_llama_chat_templates_match_jinja(safesteer_bin, tmp_path, family, template):
    for conv in CONVERSATIONS:
        for gen in (True, False):
            want = jinja_render(template, family, conv, gen)
            got = cli_prompt(safesteer_bin, ["--chat-template", family], conv, tmp_path, gen)
            assert got == want, conv


def test_smollm2_chat_template_matches_jinja(safesteer_bin, default_model, smollm2_tok,
                                             tmp_path):
    template = read_gguf_tokenizer(str(default_model))["chat_template"]
    for conv in CONVERSATIONS:
        for gen in (True, False):
            want = jinja_render(template, "chatml", conv, gen)
            got = cli_prompt(safesteer_bin, ["--model", default_model], conv, tmp_path, gen)
            assert got == want, conv
    # The single-turn path (TEXT + --chat) gives the ids of the jinja text.
    want = smollm2_tok.encode(jinja_render(template, "chatml",
                                           [{"role": "user", "content": "Hi there"}])).ids
    got = json.loads(run_safesteer(safesteer_bin, "tokenize", "--model", default_model,
                                   "--chat", "--json", "Hi there").stdout)
    assert got == want


def test_llama2_roles_must_alternate(safesteer_bin, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"role": "user", "content": "a"},
                                {"role": "user", "content": "b"}]))
    proc = run_safesteer(safesteer_bin, "tokenize", "--chat-template", "llama2", "--chat",
                         "--messages", path, "--print-prompt", check=False)
    assert proc.returncode == 1 and "alternate" in proc.stderr


def test_llama_guard3_template_matches_jinja(safesteer_bin, tmp_path):
    pair = [{"role": "user", "content": guard.PROMPT},
            {"role": "assistant", "content": guard.RESPONSE}]
    for conv in ([pair[0]], pair, pair + [{"role": "user", "content": "  And now? "}]):
        want = guard.render(conv)
        got = cli_prompt(safesteer_bin, ["--chat-template", "llama-guard3"], conv, tmp_path)
        assert got == want, conv
    # the judge's prompt golden (checked against ss_eval_judge_prompt by test_eval.c)
    golden = json.loads(pathlib.Path(guard.GOLDEN).read_text(encoding="utf-8"))
    assert golden == guard.golden()
    assert golden["rendered"].startswith(" <|begin_of_text|>")
    assert golden["rendered"].endswith("<|start_header_id|>assistant<|end_header_id|>")
    (tmp_path / "bad.json").write_text(json.dumps([pair[1]]))
    proc = run_safesteer(safesteer_bin, "tokenize", "--chat-template", "llama-guard3", "--chat",
                         "--messages", tmp_path / "bad.json", "--print-prompt", check=False)
    assert proc.returncode == 1 and "alternate" in proc.stderr
