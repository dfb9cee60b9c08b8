"""Tests of scripts/benchmark.py: the rewrite of the generated section, and a --quick run.

No test asserts a time: the numbers depend on the machine and its load.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS_DIR = os.path.join(REPO_ROOT, "scripts")
sys.path.insert(0, SCRIPTS_DIR)

from benchmarks import markdown  # noqa: E402

SECTION_TITLES = (
    "### Training throughput",
    "### XLA, mixed precision and replicas",
    "### Locally connected layer against tf_keras",
    "### Inference latency and size",
    "### The alternative: MobileNetV3Small",
    "### Scale on paper (estimate)",
)
HAND_WRITTEN_BEFORE = "# Benchmarks\n\n## Annotation parsing\n\nHand-written | 1.386 s |\n\n"
HAND_WRITTEN_AFTER = "\n## TFRecord input\n\nAlso hand-written.\n"


def _write(path, text):
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)


def _read(path):
    with open(path, encoding="utf-8") as file:
        return file.read()


def test_replace_keeps_text_outside_markers(tmp_path):
    path = tmp_path / "benchmarks.md"
    original = (
        HAND_WRITTEN_BEFORE + markdown.BEGIN_MARKER + "\nold numbers\n" + markdown.END_MARKER
        + HAND_WRITTEN_AFTER
    )
    _write(path, original)

    markdown.replace_generated_section(str(path), "new numbers")

    text = _read(path)
    assert text.startswith(HAND_WRITTEN_BEFORE + markdown.BEGIN_MARKER + "\nnew numbers\n")
    assert text.endswith(markdown.END_MARKER + HAND_WRITTEN_AFTER)
    assert "old numbers" not in text


def test_replace_appends_markers_when_missing(tmp_path):
    path = tmp_path / "benchmarks.md"
    _write(path, HAND_WRITTEN_BEFORE.rstrip("\n") + "\n")

    markdown.replace_generated_section(str(path), "generated")

    text = _read(path)
    assert text.startswith(HAND_WRITTEN_BEFORE)
    assert text.endswith(f"{markdown.BEGIN_MARKER}\ngenerated\n{markdown.END_MARKER}\n")


def test_replace_keeps_file_mode(tmp_path):
    path = tmp_path / "benchmarks.md"
    _write(path, "text\n")
    os.chmod(path, 0o644)

    markdown.replace_generated_section(str(path), "generated")

    assert os.stat(path).st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "text",
    [
        f"{markdown.BEGIN_MARKER}\n{markdown.BEGIN_MARKER}\n{markdown.END_MARKER}\n",
        f"{markdown.END_MARKER}\nx\n{markdown.BEGIN_MARKER}\n",
        f"{markdown.BEGIN_MARKER}\nno end marker\n",
    ],
)
def test_replace_rejects_broken_markers(tmp_path, text):
    path = tmp_path / "benchmarks.md"
    _write(path, text)

    with pytest.raises(ValueError, match="markers"):
        markdown.replace_generated_section(str(path), "generated")

    assert _read(path) == text


def _section(text, title):
    start = text.index(title)
    following = [text.index(other) for other in SECTION_TITLES if text.find(other) > start]
    return text[start : min(following) if following else len(text)]


def _positive_rates(value, path="results"):
    """Yield (path, rate) for every "median" rate or "median_ms" latency in the results."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("median", "median_ms") and isinstance(item, float):
                yield f"{path}.{key}", item
            else:
                yield from _positive_rates(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _positive_rates(item, f"{path}[{index}]")


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path):
    output = tmp_path / "benchmarks.md"
    results_path = tmp_path / "results.json"
    _write(output, HAND_WRITTEN_BEFORE + markdown.BEGIN_MARKER + "\nstale\n"
           + markdown.END_MARKER + HAND_WRITTEN_AFTER)
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS_DIR, "benchmark.py"), "--quick",
         f"--output={output}", f"--cache_dir={tmp_path / 'cache'}",
         f"--work_dir={tmp_path / 'work'}", f"--results_json={results_path}"],
        capture_output=True, text=True, cwd=REPO_ROOT, env=environment, timeout=1800,
    )

    assert result.returncode == 0, result.stderr[-4000:]
    text = _read(output)
    assert text.startswith(HAND_WRITTEN_BEFORE + markdown.BEGIN_MARKER + "\n")
    assert text.endswith(markdown.END_MARKER + HAND_WRITTEN_AFTER)
    assert "stale" not in text
    assert "python scripts/benchmark.py --quick" in text
    assert "Quick run" in text
    for title in SECTION_TITLES:
        assert title in text
        section = _section(text, title)
        table_rows = [line for line in section.splitlines() if line.startswith("| ")]
        assert len(table_rows) >= 3, f"{title} has no table rows"
        assert re.search(r"\| \d[\d,]*(\.\d+)? \|", section), f"{title} has no number in a table"

    results = json.loads(_read(results_path))
    for group in ("training", "step_options", "locally_connected", "inference", "alternative", "scale"):
        assert group in results["results"]
    rates = list(_positive_rates(results["results"]))
    assert len(rates) >= 20
    for path, rate in rates:
        assert math.isfinite(rate), path
        assert rate > 0, path
