"""Every option the README and docs/*.md show on a safesteer command line
exists in that command's --help, so the docs cannot drift from the CLI.

A command line is `safesteer CMD ...` or `$B CMD ...` with CMD one of the
commands `safesteer --help` lists (`vectors export` / `vectors import` are
their own commands); the options are the --words that follow it on the line,
up to a pipe, a semicolon or the end of a code span, and on the indented
`[--...` lines that continue a synopsis."""
import re
import subprocess

import pytest

from conftest import REPO


def commands(binary):
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True).stdout
    names = re.findall(r"^  ([a-z]+)\s", out, re.M)
    assert len(names) >= 10, out
    return set(names)


def options(text):
    return re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)


def doc_command_lines(known):
    """(file, line number, command, [options]) for every command line, and
    for the indented `[--...` lines that continue a synopsis."""
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    pat = re.compile(r"(?:\bsafesteer|\$B)\s+([a-z]+)((?:\s+(?:export|import)\b)?)([^`|;\n]*)")
    for path in files:
        last = None  # the command a continuation line belongs to
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if last and re.match(r"\s+[\[(]--", line):
                yield path.relative_to(REPO), n, last, options(line)
                continue
            last = None
            for m in pat.finditer(line):
                if m.group(1) not in known:
                    continue  # prose ("safesteer runs ...")
                last = (m.group(1) + m.group(2)).split()
                yield path.relative_to(REPO), n, last, options(m.group(3))


def test_documented_options_exist(safesteer_bin):
    known = commands(safesteer_bin)
    helps, missing, seen = {}, [], 0
    for path, n, cmd, opts in doc_command_lines(known):
        key = " ".join(cmd)
        if key not in helps:
            proc = subprocess.run([str(safesteer_bin), *cmd, "--help"], capture_output=True,
                                  text=True)
            assert proc.returncode == 0, f"safesteer {key} --help exited {proc.returncode}"
            helps[key] = proc.stdout + proc.stderr
        for opt in opts:
            seen += 1
            if not re.search(re.escape(opt) + r"(?![\w-])", helps[key]):
                missing.append(f"{path}:{n}: safesteer {key} {opt}")
    assert not missing, "options in the docs that --help does not list:\n" + "\n".join(missing)
    assert seen >= 80, f"only {seen} documented options found: is the pattern still right?"
    assert {"generate", "capture", "vectors", "sweep", "bench"} <= {k.split()[0] for k in helps}
