"""An exported network as an ONNX model, written with the `onnx` package (no converter).

Why by hand: the network is a short list of standard layers (`lth.export.graph`), each one ONNX
operator, so writing the graph directly is a few lines per op and keeps the file free of
anything a converter might add. The model takes `x` (batch, *input_shape) float32, as lth's
models do (images NHWC), and returns `logits` (batch, classes); the batch dimension is symbolic.

Mapping: Dense -> Gemm (kernel (in, out), bias); Conv -> Conv (kernel transposed to ONNX's
(out, in, h, w), images transposed once to NCHW after the input); BatchNorm -> BatchNormalization
(evaluation mode, the running statistics, lth's epsilon); Relu -> Relu; MaxPool -> MaxPool 2x2
stride 2; Flatten -> Transpose back to NHWC + Flatten (so features come in the (H, W, C) order
of `x.reshape(B, -1)`); GlobalMean -> GlobalAveragePool + Flatten; Residual -> its body's and
shortcut's nodes from the same input, then Add. Opset 17. An int8 layer (`scale` set) stores its
kernel as int8 codes with per-output-channel scales, dequantised in the graph by DequantizeLinear
(the weight half of the QDQ format; activations stay float32).
"""

from __future__ import annotations

import numpy as np

from lth.export.graph import int8_codes
from lth.export.graph import BatchNorm, Conv, Dense, Flatten, GlobalMean, MaxPool, Op, Relu, Residual

OPSET = 17
IR_VERSION = 8  # what opset 17 shipped with: loadable by older onnxruntime releases too


def to_onnx(ops: list[Op], input_shape: tuple[int, ...], num_classes: int, name: str = "lth_export"):
    """The `onnx.ModelProto` of the network `ops` for inputs of shape (batch, *input_shape)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    state = {"x": "x", "n": 0}

    def fresh(prefix: str) -> str:
        state["n"] += 1
        return f"{prefix}_{state['n']}"

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def weight(op, value: np.ndarray, axis: int) -> str:
        """The kernel `value` (in ONNX's layout): a float32 initializer, or for an int8 layer int8
        codes dequantised by DequantizeLinear along the output `axis` (per-channel scales, zero
        point 0): q * scale, the same float32 products as the kernel."""
        if op.scale is None:
            return const(f"{op.name}.kernel", value)
        q = int8_codes(op)
        q = q.transpose(3, 2, 0, 1) if q.ndim == 4 else q
        inits.append(numpy_helper.from_array(np.ascontiguousarray(q, np.int8), f"{op.name}.kernel_int8"))
        const(f"{op.name}.kernel_scale", op.scale)
        inits.append(numpy_helper.from_array(np.zeros(op.scale.shape, np.int8), f"{op.name}.kernel_zero"))
        out = f"{op.name}.kernel"
        nodes.append(helper.make_node("DequantizeLinear", [f"{op.name}.kernel_int8", f"{op.name}.kernel_scale",
                                                           f"{op.name}.kernel_zero"], [out], axis=axis))
        return out

    def node(op_type: str, inputs: list[str], **attrs) -> None:
        out = fresh(op_type.lower())
        nodes.append(helper.make_node(op_type, [state["x"]] + inputs, [out], **attrs))
        state["x"] = out

    layout = {"nchw": False}

    def emit(op_list: list[Op]) -> None:
        for op in op_list:
            emit_one(op)

    def emit_one(op: Op) -> None:
        if isinstance(op, (Conv, Residual)) and not layout["nchw"]:
            node("Transpose", [], perm=[0, 3, 1, 2])
            layout["nchw"] = True
        if isinstance(op, Residual):
            start = state["x"]
            emit(op.body)
            body = state["x"]
            state["x"] = start
            emit(op.shortcut)
            out = fresh("add")
            nodes.append(helper.make_node("Add", [body, state["x"]], [out]))
            state["x"] = out
        elif isinstance(op, Dense):
            node("Gemm", [weight(op, op.kernel, 1), const(f"{op.name}.bias", op.bias)])
        elif isinstance(op, Conv):
            kh, kw = op.kernel.shape[:2]
            ph, pw = op.pads
            bias = [] if op.bias is None else [const(f"{op.name}.bias", op.bias)]
            node("Conv", [weight(op, op.kernel.transpose(3, 2, 0, 1), 0), *bias],
                 kernel_shape=[kh, kw], pads=[ph, pw, ph, pw], strides=[op.strides, op.strides])
        elif isinstance(op, BatchNorm):
            node("BatchNormalization", [const(f"{op.name}.scale", op.scale), const(f"{op.name}.bias", op.bias),
                                        const(f"{op.name}.mean", op.mean), const(f"{op.name}.var", op.var)],
                 epsilon=float(op.eps))
        elif isinstance(op, Relu):
            node("Relu", [])
        elif isinstance(op, MaxPool):
            node("MaxPool", [], kernel_shape=[2, 2], strides=[2, 2])
        elif isinstance(op, Flatten):
            if layout["nchw"]:
                node("Transpose", [], perm=[0, 2, 3, 1])
                layout["nchw"] = False
            node("Flatten", [], axis=1)
        elif isinstance(op, GlobalMean):
            node("GlobalAveragePool", [])
            node("Flatten", [], axis=1)
            layout["nchw"] = False
        else:
            raise TypeError(f"no ONNX mapping for {op!r}")

    emit(ops)
    nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", num_classes])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lth")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def session(model_or_path, *, fuse_int8: bool = False, threads: int | None = None):
    """An onnxruntime CPU session of an ONNX model (a `ModelProto` or a file path).

    A model with int8 weights (DequantizeLinear) runs with onnxruntime's basic graph optimizations
    unless `fuse_int8`: the extended ones (part of the default) fuse DequantizeLinear + MatMul into
    `MatMulNBits`, which computes another function (on this project's onnxruntime 1.32 its outputs
    differ from the dequantised network's by ~0.1 on a random 8x3 layer), while the basic ones
    keep every output equal to lth's int8 network. `threads`: onnxruntime's intra-op threads
    (None: its default, one per core)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(model_or_path) if isinstance(model_or_path, str) else model_or_path
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
    if not fuse_int8 and any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The session's logits for `x`, in batches of `batch`."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.asarray(x[i:i + batch], np.float32)})[0]
                           for i in range(0, len(x), batch)])
