"""LocallyConnected2D against tf_keras's three implementations, through bench_locally_connected.py.

That script times one forward and backward step of each implementation and
measures each one's peak memory in a subprocess of its own. It runs here as a
child process, because its absl flags would clash with this script's, and
because its memory figures need processes that hold nothing else.
"""

from __future__ import annotations

import json
import os
import tempfile

from benchmarks import common

SCRIPT = os.path.join(common.SCRIPTS_DIR, "bench_locally_connected.py")


def run(presets: list[str], batch_size: int, repeats: int, measure_memory: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-lc-") as directory:
        output = os.path.join(directory, "results.json")
        common.run_script(
            [
                SCRIPT,
                f"--presets={','.join(presets)}",
                f"--batch_size={batch_size}",
                f"--repeats={repeats}",
                "--warmup=1",
                f"--measure_memory={str(measure_memory).lower()}",
                f"--output_json={output}",
            ]
        )
        with open(output, encoding="utf-8") as file:
            results = json.load(file)
    return {
        "presets": presets,
        "batch_size": batch_size,
        "repeats": repeats,
        "measure_memory": measure_memory,
        "cases": results,
    }


def render_tables(results: dict) -> tuple[str, str]:
    """Return (Markdown table, summary lines), formatted by bench_locally_connected.py itself."""
    import sys

    if common.SCRIPTS_DIR not in sys.path:
        sys.path.insert(0, common.SCRIPTS_DIR)
    # Imported only here: the module defines absl flags when it is imported.
    import bench_locally_connected

    cases = results["cases"]
    return bench_locally_connected.format_table(cases), bench_locally_connected.format_summary(cases)


def render(results: dict) -> str:
    table_text, summary = render_tables(results)
    memory = (
        "Peak RSS is measured per implementation in a subprocess of its own."
        if results["measure_memory"] else "Peak memory was not measured in this run."
    )
    return "\n".join([
        "One forward and backward step (gradients for the input and every weight) of each "
        "LocallyConnected2D layer of ANet, against tf_keras's three implementations of an "
        f"unshared layer, batch {results['batch_size']}, median of {results['repeats']} steps, "
        f"by `scripts/bench_locally_connected.py`. {memory}",
        "",
        table_text,
        "",
        summary,
    ])
