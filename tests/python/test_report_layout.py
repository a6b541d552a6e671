"""The sweep report as a browser lays it out: headless Chromium (Debian's
`chromium`, installed by scripts/setup.sh; missing, the test fails) at a 1400 px
wide window.

A copy of the report gets a probe script that measures the page once it has
loaded and writes the facts into the DOM, which `chromium --dump-dom` prints:
no text below 11 px, no table wider than its box and no box past the page,
no horizontal page scroll, every plot shown at its own size (so the numbers
drawn in it keep theirs). Also the plot colours themselves: every number on
a heatmap contrasts with its cell (WCAG ratio >= 4.5) at >= 11 px. And
scripts/report_screenshot.sh writes a 1400 px screenshot with no console
message."""
import html
import json
import re
import shutil
import struct
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "analysis"))
import safesteer_analysis as sa  # noqa: E402
from safesteer_analysis import plots, report, selection, synthetic  # noqa: E402

WIDTH = 1400
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """<script>
window.addEventListener("load", () => {
  const f = {innerWidth: window.innerWidth, pageWidth: document.documentElement.scrollWidth,
             bodyRight: document.body.getBoundingClientRect().right, fonts: [], tables: [],
             images: []};
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || seen.has(el)) continue;
    seen.add(el);
    f.fonts.push([parseFloat(getComputedStyle(el).fontSize), n.textContent.trim().slice(0, 40)]);
  }
  for (const t of document.querySelectorAll("table")) {
    const box = t.parentElement;
    f.tables.push({cls: t.className, width: t.getBoundingClientRect().width,
                   box: box.clientWidth, boxRight: box.getBoundingClientRect().right,
                   overflowX: getComputedStyle(box).overflowX});
  }
  for (const i of document.images)
    f.images.push({alt: i.alt, complete: i.complete, natural: i.naturalWidth, shown: i.width});
  const out = document.createElement("pre");
  out.id = "dom-facts";
  out.textContent = JSON.stringify(f);
  document.body.appendChild(out);
});
</script>"""


def dom_facts(chromium, report_html, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text(report_html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}",
                           f"--window-size={WIDTH},1000", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="dom-facts">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"no facts in chromium's DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo run, and a paper-sized grid with long category names."""
    tmp = tmp_path_factory.mktemp("layout")
    demo = synthetic.write_example(tmp / "demo")["run"]
    paper = synthetic.write_sweep(tmp / "paper", layers=(14, 16, 20, 25, 31),
                                  strengths=tuple(x / 2 for x in range(1, 9)),
                                  methods=("mean-diff", "pruned", "pca"), n_prompts=15,
                                  categories=("Illegal Activity", "Hate/Harass/Violence",
                                              "Malware Viruses"))
    return {"demo": demo, "paper": paper}


@pytest.fixture(scope="module")
def chromium():
    assert CHROMIUM, "chromium not found: scripts/setup.sh installs Debian's chromium"
    return CHROMIUM


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_report_layout_in_chromium(chromium, runs, name, tmp_path):
    f = dom_facts(chromium, report.render(runs[name]), tmp_path)
    assert f["innerWidth"] == WIDTH
    assert f["pageWidth"] <= WIDTH, "the page scrolls sideways"
    small = [(px, text) for px, text in f["fonts"] if px < 11]
    assert not small, f"text below 11 px: {small[:5]}"
    assert len(f["fonts"]) > 100
    assert any("best" in t["cls"] for t in f["tables"])
    for t in f["tables"]:
        assert t["overflowX"] == "auto", t        # a narrower window scrolls inside the box
        assert t["width"] <= t["box"] + 1, f"table wider than its box at {WIDTH} px: {t}"
        assert t["boxRight"] <= f["bodyRight"] + 1, t
    methods = 1 if name == "demo" else 3
    assert len(f["images"]) == 2 * methods + 1   # unsafe and refusal maps per method, trade-off
    for img in f["images"]:
        assert img["complete"] and img["natural"] > 0, img
        assert img["shown"] >= img["natural"], f"plot scaled down, its text shrinks: {img}"


def test_heatmap_numbers_are_large_and_contrast_with_their_cells(runs):
    cells = sa.load_sweep(runs["demo"]).cells
    fig = plots.rate_heatmaps(cells, "unsafe_rate", min_n=30)
    fig.canvas.draw()
    checked = 0
    for ax in fig.axes:
        if not ax.images:
            continue
        image = ax.images[0]
        grid = image.get_array()
        for t in ax.texts:
            x, y = t.get_position()
            cell = image.cmap(image.norm(grid[int(round(y)), int(round(x))]))
            assert t.get_fontsize() * fig.dpi / 72 >= 11
            assert plots.contrast_ratio(t.get_color(), cell) >= 4.5, (t.get_text(), cell)
            checked += 1
    assert checked == 4 * 4 * 3          # 4 categories x (baseline + 3 layers) x 3 strengths
    assert plots.text_colour((0.65, 0.0, 0.15)) == "white"   # dark red
    assert plots.text_colour((1.0, 1.0, 0.75)) == "black"    # pale yellow


def test_best_cell_respects_quality_bounds(runs):
    cells = sa.load_sweep(runs["demo"]).cells
    rated = selection.against_baseline(cells)
    best = selection.best_cells(cells)
    assert list(best["category"]) == sorted(synthetic.CATEGORIES)
    steered = rated[rated["layer"] != -1]
    for _, b in best.iterrows():
        assert b["perplexity_ratio"] <= 1.5 and b["distinct_2_drop"] <= 0.1
        assert b["relevance_drop"] <= 0.1
        mine = steered[(steered["category"] == b["category"]) & steered["within_bounds"]]
        assert b["unsafe_rate"] == mine["unsafe_rate"].min()
    # unsafe rate alone would pick the strongest, degenerate cells
    lowest = steered.sort_values("unsafe_rate").groupby("category").head(1)
    assert not lowest["within_bounds"].any()
    assert (lowest["degenerate_rate"] > 0.2).all()
    loose = selection.best_cells(cells, selection.QualityBounds(100, 1, 1))
    assert (loose["unsafe_rate"].to_numpy() <= best["unsafe_rate"].to_numpy()).all()
    assert set(loose["cell_id"]) == set(lowest["cell_id"])


def test_model_named_by_its_file_when_general_name_is_a_tag():
    tag = {"model_name": "Smollm2 135M 8k Lc100K Mix1 Ep2",
           "model_path": "/m/SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert report.model_names(tag) == (
        "SmolLM2-135M-Instruct.Q4_1",
        'file SmolLM2-135M-Instruct.Q4_1.gguf; its general.name is "Smollm2 135M 8k Lc100K '
        'Mix1 Ep2"')
    real = {"model_name": "Meta Llama 3 8B Instruct",
            "model_path": "/m/Meta-Llama-3-8B-Instruct-Q8_0.gguf"}
    assert report.model_names(real)[0] == "Meta Llama 3 8B Instruct"
    hf = {"model_name": "Llama-Guard-3-8B", "model_path": "/models/Llama-Guard-3-8B/"}
    assert report.model_names(hf) == ("Llama-Guard-3-8B", "file Llama-Guard-3-8B")
    # version 1 tables have no model_path: the config's model line
    assert report.model_names({"model_name": "x y"}, 'model: "runs/My-Model.gguf"\n')[0] == \
        "My-Model"


def test_screenshot_script_writes_a_1400px_page(chromium, tmp_path):
    out = tmp_path / "report.png"
    proc = subprocess.run(["bash", str(REPO / "scripts" / "report_screenshot.sh"), "",
                           str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no console messages" in proc.stdout
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (WIDTH, 3000)


def test_report_command_passes_the_bounds(safesteer_bin, runs, tmp_path):
    out = tmp_path / "r.html"
    proc = subprocess.run([str(safesteer_bin), "report", str(runs["demo"]), "--out", str(out),
                           "--max-perplexity-ratio", "100", "--max-distinct2-drop", "1",
                           "--max-relevance-drop", "1", "--min-n", "50"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text(encoding="utf-8")
    assert "perplexity at most 100× the baseline's" in text and "(36 of 36 steered" in text
    assert "40 of 40 cells rest on fewer than 50 generations" in text
    # the defaults its --help states are the package's
    help_text = subprocess.run([str(safesteer_bin), "report", "--help"], capture_output=True,
                               text=True).stdout
    q = selection.QualityBounds()
    for phrase in (f"within R times the\n  baseline's (default {q.max_perplexity_ratio:g})",
                   f"(defaults {q.max_distinct2_drop:g})", f"(default {report.MIN_N})"):
        assert phrase in help_text, phrase
    assert q.max_distinct2_drop == q.max_relevance_drop
