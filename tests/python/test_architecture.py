"""The module boundaries docs/architecture.md describes hold in the tree:
every file of host/ and cuda/ is listed there and every listed file exists,
and each public header's functions are defined in the host/ folder of the
same name."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"
SOURCE = (".c", ".h", ".cu", ".cuh")


def tree_files():
    return sorted(str(p.relative_to(REPO)) for top in ("host", "cuda")
                  for p in (REPO / top).rglob("*") if p.is_file() and p.suffix in SOURCE)


def listed_files():
    return sorted(set(re.findall(r"`((?:host|cuda)/[\w/]+\.(?:c|h|cu|cuh))`", DOC.read_text())))


def test_every_file_is_listed_and_exists():
    tree, listed = set(tree_files()), set(listed_files())
    assert tree, "no sources found"
    assert sorted(tree - listed) == [], "files docs/architecture.md does not list"
    assert sorted(listed - tree) == [], "files docs/architecture.md lists that do not exist"


def declared_functions(header):
    text = re.sub(r"/\*.*?\*/", "", header.read_text(), flags=re.S)
    names = set(re.findall(r"\b(ss_[a-z0-9_]+)\s*\(", text))
    return names - set(re.findall(r"\(\*\s*(ss_[a-z0-9_]+)\)", text))  # function pointers


def defining_files(name, sources):
    """Files holding a definition (not a call or declaration) of name."""
    pat = re.compile(r'^(?:extern "C" )?[A-Za-z_][\w \*]*[ \*]' + name + r"\([^;{}]*\)\s*\{",
                     re.M)
    return [f for f, text in sources.items() if pat.search(text)]


HEADERS = sorted((REPO / "include" / "safesteer").glob("*.h"))


@pytest.mark.parametrize("header", HEADERS, ids=[h.stem for h in HEADERS])
def test_header_functions_live_in_its_folder(header):
    sources = {str(p.relative_to(REPO)): p.read_text()
               for top in ("host", "cuda") for p in (REPO / top).rglob("*")
               if p.suffix in (".c", ".cu")}
    folder = f"host/{header.stem}/"
    assert (REPO / folder).is_dir(), f"{header.name} has no folder {folder}"
    names = declared_functions(header)
    assert names, f"{header.name} declares no function"
    wrong = {}
    for name in sorted(names):
        where = defining_files(name, sources)
        if not where or any(not f.startswith(folder) for f in where):
            wrong[name] = where
    assert wrong == {}, f"functions of {header.name} defined outside {folder}"
