"""Time every op of a .tflite model under the LiteRT interpreter, one op at a time.

    python scripts/profile_tflite.py --model=export/tflite/cascade_int8.tflite \
        --image=photo.jpg --json=/tmp/ops.json

The Python interpreter of ai-edge-litert has no per-op profiler, so the script
cuts each op out of the model into a model of its own, with the same tensors,
quantization and constant buffers, and times it alone. The op's inputs are the
values it receives when the whole model runs on one input: the photo given by
--image, letterboxed into the model's square input as `tflite_export` does, or
random pixels in [0, 255]. Each one-op model runs with the default resolver,
which hands the op to XNNPACK when XNNPACK accepts it, and again without the
default delegates. The "XNNPACK" column counts the ops that XNNPACK accepted.

Ops are grouped by stage: an op whose output tensor name starts with one of
--stages belongs to that net, every other op to "other" (cropping,
localization, SVMs). Times are the minimum over repeated calls, in
microseconds, on --threads threads. The whole model is timed too. It takes
longer than the sum of its ops because of the interpreter's per-op work and
the switches between XNNPACK partitions and the other kernels.
"""

from __future__ import annotations

import collections
import copy
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ai_edge_litert import schema_py_generated as schema  # noqa: E402
from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from ai_edge_litert.interpreter import OpResolverType  # noqa: E402
from ai_edge_litert.tools import flatbuffer_utils  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "The .tflite file to profile.", required=True)
_IMAGE = flags.DEFINE_string(
    "image", None, "Photo to run the model on; default: random pixels in [0, 255]."
)
_THREADS = flags.DEFINE_integer("threads", 1, "Interpreter threads.")
_STAGES = flags.DEFINE_list(
    "stages", ["lnet_o", "lnet_s", "anet"],
    "Output tensor name prefixes that make up a stage each; other ops form 'other'.",
)
_BUDGET = flags.DEFINE_float("budget_ms", 50.0, "Time spent timing each op, in milliseconds.")
_JSON = flags.DEFINE_string("json", None, "Also write one row per op to this JSON file.")

_OP_NAMES = {
    code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")
}
_TYPE_NAMES = {
    code: name for name, code in vars(schema.TensorType).items() if not name.startswith("_")
}
_STAGE_SEPARATORS = ("_1/", "/")


def model_input(interpreter: Interpreter, image_path: str | None) -> np.ndarray:
    """Return the input for the whole model: a letterboxed photo or random pixels."""
    detail = interpreter.get_input_details()[0]
    shape = tuple(int(side) for side in detail["shape"])
    if image_path is None:
        return np.random.default_rng(0).uniform(0.0, 255.0, shape).astype(np.float32)
    if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2]:
        raise ValueError(
            f"--image needs a model whose input is [1, S, S, 3], but {_MODEL.value} takes "
            f"{list(shape)}. Leave out --image to run it on random pixels."
        )
    from lnet_anet_tf import image_io
    from lnet_anet_tf import tflite_export

    image = image_io.read_image(image_path).numpy()
    canvas, _ = tflite_export.letterbox_canvas(image, shape[1])
    return canvas[np.newaxis]


def run_whole_model(content: bytes, image: np.ndarray) -> Interpreter:
    """Run the model once without delegates, keeping every intermediate tensor readable."""
    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    return interpreter


def _is_constant(model, graph, tensor_index: int) -> bool:
    buffer = model.buffers[graph.tensors[tensor_index].buffer]
    return buffer.data is not None and len(buffer.data) > 0


def one_op_model(model, op) -> tuple[bytes, list[int]]:
    """Return a model that runs `op` alone, and the original indices of its variable inputs.

    The new graph keeps the op's tensors with their quantization and the
    buffers of its constant inputs. Its inputs are the op's other inputs.
    """
    graph = model.subgraphs[0]
    tensors, buffers, mapping = [], [schema.BufferT()], {}

    def add(index: int) -> int:
        if index < 0:
            return index
        if index not in mapping:
            tensor = copy.copy(graph.tensors[index])
            tensor.buffer = 0
            if _is_constant(model, graph, index):
                buffers.append(model.buffers[graph.tensors[index].buffer])
                tensor.buffer = len(buffers) - 1
            mapping[index] = len(tensors)
            tensors.append(tensor)
        return mapping[index]

    single = copy.copy(op)
    single.inputs = [add(int(index)) for index in op.inputs]
    single.outputs = [add(int(index)) for index in op.outputs]
    if op.intermediates is not None:
        single.intermediates = [add(int(index)) for index in op.intermediates]
    single.opcodeIndex = 0
    variable_inputs = list(dict.fromkeys(
        int(index) for index in op.inputs if index >= 0 and not _is_constant(model, graph, int(index))
    ))

    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.operators = [single]
    subgraph.inputs = [mapping[index] for index in variable_inputs]
    subgraph.outputs = [mapping[int(index)] for index in op.outputs]
    result = schema.ModelT()
    result.version = model.version
    result.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
    result.subgraphs = [subgraph]
    result.buffers = buffers
    return bytes(flatbuffer_utils.convert_object_to_bytearray(result)), variable_inputs


def time_invoke(interpreter: Interpreter, budget_s: float, min_calls: int = 20) -> dict:
    """Call `invoke` for `budget_s` seconds (at least `min_calls` times) after 3 untimed calls."""
    for _ in range(3):
        interpreter.invoke()
    seconds = []
    start = time.perf_counter()
    while len(seconds) < min_calls or time.perf_counter() - start < budget_s:
        call_start = time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - call_start)
    return {"min_us": min(seconds) * 1e6, "median_us": statistics.median(seconds) * 1e6}


def stage_of(output_name: str, stages) -> str:
    for stage in stages:
        if output_name.startswith(tuple(stage + separator for separator in _STAGE_SEPARATORS)):
            return stage
    return "other"


def profile_ops(content: bytes, image: np.ndarray, threads: int, stages, budget_s: float) -> list:
    """Return one row per op of the model's main graph, in execution order."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    if len(model.subgraphs) != 1:
        raise ValueError(
            f"The model has {len(model.subgraphs)} graphs; this script profiles models "
            "with one graph only (no control flow ops)."
        )
    graph = model.subgraphs[0]
    whole = run_whole_model(content, image)
    rows = []
    for position, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        output = graph.tensors[int(op.outputs[0])]
        first_input = next(int(index) for index in op.inputs if index >= 0)
        row = {
            "position": position,
            "op": _OP_NAMES[max(code.builtinCode, code.deprecatedBuiltinCode)],
            "input_type": _TYPE_NAMES[graph.tensors[first_input].type],
            "output": output.name.decode(),
            "output_shape": [int(side) for side in output.shape],
            "stage": stage_of(output.name.decode(), stages),
        }
        single, inputs = one_op_model(model, op)
        for label, resolver in (
            ("default", OpResolverType.AUTO),
            ("no_delegates", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
        ):
            interpreter = Interpreter(
                model_content=single, num_threads=threads, experimental_op_resolver_type=resolver
            )
            interpreter.allocate_tensors()
            for detail, original in zip(interpreter.get_input_details(), inputs):
                interpreter.set_tensor(detail["index"], whole.get_tensor(original))
            row[f"{label}_us"] = time_invoke(interpreter, budget_s)["min_us"]
            if label == "default":
                details = interpreter._get_ops_details()
                row["xnnpack"] = any(detail["op_name"] == "DELEGATE" for detail in details)
        rows.append(row)
    return rows


def summary_table(rows: list) -> str:
    """Return a Markdown table per (stage, op, input type) and a table per stage."""
    groups = collections.defaultdict(lambda: {"ops": 0, "default": 0.0, "plain": 0.0, "xnnpack": 0})
    stages = collections.defaultdict(lambda: {"ops": 0, "default": 0.0})
    for row in rows:
        group = groups[(row["stage"], row["op"], row["input_type"])]
        group["ops"] += 1
        group["default"] += row["default_us"]
        group["plain"] += row["no_delegates_us"]
        group["xnnpack"] += int(row["xnnpack"])
        stages[row["stage"]]["ops"] += 1
        stages[row["stage"]]["default"] += row["default_us"]

    total = sum(stage["default"] for stage in stages.values())
    lines = [
        "| stage | ops | us | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, stage in stages.items():
        lines.append(
            f"| {name} | {stage['ops']} | {stage['default']:.0f} | {100 * stage['default'] / total:.0f}% |"
        )
    lines.append(f"| all | {len(rows)} | {total:.0f} | 100% |")
    lines += [
        "",
        "| stage | op | input type | ops | us | us without XNNPACK | taken by XNNPACK |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (stage, op, input_type), group in sorted(groups.items(), key=lambda item: -item[1]["default"]):
        lines.append(
            f"| {stage} | {op} | {input_type} | {group['ops']} | {group['default']:.1f} | "
            f"{group['plain']:.1f} | {group['xnnpack']} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    with open(_MODEL.value, "rb") as file:
        content = file.read()
    probe = Interpreter(model_content=content)
    image = model_input(probe, _IMAGE.value)
    budget_s = _BUDGET.value / 1000

    rows = profile_ops(content, image, _THREADS.value, _STAGES.value, budget_s)
    interpreter = Interpreter(model_content=content, num_threads=_THREADS.value)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    whole = time_invoke(interpreter, budget_s * 20)

    print(summary_table(rows))
    print(
        f"\nWhole model on {_THREADS.value} thread(s): min {whole['min_us']:.0f} us, median "
        f"{whole['median_us']:.0f} us; sum of the ops alone: "
        f"{sum(row['default_us'] for row in rows):.0f} us."
    )
    if _JSON.value:
        with open(_JSON.value, "w", encoding="utf-8") as file:
            json.dump({"model": _MODEL.value, "whole_model": whole, "ops": rows}, file, indent=1)


if __name__ == "__main__":
    app.run(main)
