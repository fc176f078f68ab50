"""bench/run_all.py (`make bench`) rewrites only its own section of docs/benchmarks.md: the hand-written
sections other areas add (before or after it) survive every run, byte for byte."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _section(mod, text: str) -> str:
    return f"{mod.BEGIN}\n\n## Figures of `make bench`\n\n{text}\n\n{mod.END}\n"


def test_first_run_inserts_before_the_first_section_and_later_runs_replace_only_it(tmp_path):
    mod = _run_all()
    doc = tmp_path / "benchmarks.md"
    intro = "# Benchmarks\n\nIntro.\n"
    splunk = "## Splunk HEC\n\nHand-written: 12,345 events/s.\n"
    doc.write_text(intro + "\n" + splunk)
    mod.write(doc, _section(mod, "figures one"))
    first = doc.read_text()
    assert first.startswith(intro) and first.endswith(splunk)
    assert first.index("figures one") < first.index("## Splunk HEC")
    # another branch adds a section after ours, and one before
    otlp = "\n## OTLP\n\nHand-written too.\n"
    doc.write_text(first.replace(intro, intro + "\n## Early\n\nkept\n") + otlp)
    before = doc.read_text()
    mod.write(doc, _section(mod, "figures two"))
    after = doc.read_text()
    assert "figures one" not in after and "figures two" in after
    assert after.replace(_section(mod, "figures two"), "") == before.replace(_section(mod, "figures one"), "")
    assert after.count(mod.BEGIN) == 1 and after.count(mod.END) == 1


def test_render_names_every_area_and_says_what_was_not_measured():
    mod = _run_all()
    m = {"cpu": "cpu", "cores": 2, "kernel": "k", "python": "3.11", "load": 1.0, "date": "d"}
    res = {a: (None, "skipped: needs root (eBPF)", 0.0) for a in mod.SUITE}
    res["replay"] = ({"events": 10, "bytes_per_event": 1000, "naive_cpu_s": 1.0, "naive_eps_per_cpu": 10,
                      "replay_cpu_s": 0.5, "replay_startup_cpu_s": 0.1, "replay_eps_per_cpu": 20,
                      "replay_eps_per_cpu_steady": 25, "replay_us_per_event": 50.0,
                      "replay_us_per_event_steady": 40.0, "ratio": 2.0, "ratio_steady": 2.5, "replay_wall_s": 1}, "", 1.0)
    page = mod.render(m, res, 60.0, False)
    assert page.startswith(mod.BEGIN) and page.rstrip().endswith(mod.END)
    assert "| `siemhub replay` | 0.5 | 50.0 | 20 | 2.0× |" in page
    assert page.count("_skipped: needs root (eBPF)_") == len(mod.SUITE) - 1


def test_a_partial_run_keeps_the_other_areas_figures(tmp_path):
    mod = _run_all()
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n")
    m = {"cpu": "cpu", "cores": 2, "kernel": "k", "python": "3.11", "load": 1.0, "date": "day one"}
    fig = {"events": 10, "bytes_per_event": 1000, "naive_cpu_s": 1.0, "naive_eps_per_cpu": 10, "replay_cpu_s": 0.5,
           "replay_startup_cpu_s": 0.1, "replay_eps_per_cpu": 20, "replay_eps_per_cpu_steady": 25,
           "replay_us_per_event": 50.0, "replay_us_per_event_steady": 40.0, "ratio": 2.0, "ratio_steady": 2.5,
           "replay_wall_s": 1}
    mod.write(doc, mod.render(m, {"replay": (fig, "", 1.0)}, 1.0, False))
    assert mod.previous(doc) == {"replay": {"fig": fig, "date": "day one"}}
    # a later run of another area only: replay's figures stay, marked with their date
    old = mod.previous(doc)
    res = {"codec": (None, "failed: x", 0.0), "replay": (old["replay"]["fig"], "", 0.0)}
    mod.write(doc, mod.render(dict(m, date="day two"), res, 1.0, False, {"replay": "day one"}))
    text = doc.read_text()
    assert "| `siemhub replay` | 0.5 | 50.0 | 20 | 2.0× |" in text and "_(figures of the run of day one)_" in text
    assert "_failed: x_" in text and text.endswith("## Other\n")
