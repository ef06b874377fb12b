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
shortcut's nodes from the same input, then Add. Opset 17.
"""

from __future__ import annotations

import numpy as np

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
            node("Gemm", [const(f"{op.name}.kernel", op.kernel), const(f"{op.name}.bias", op.bias)])
        elif isinstance(op, Conv):
            kh, kw = op.kernel.shape[:2]
            ph, pw = op.pads
            bias = [] if op.bias is None else [const(f"{op.name}.bias", op.bias)]
            node("Conv", [const(f"{op.name}.kernel", op.kernel.transpose(3, 2, 0, 1)), *bias],
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


def session(model_or_path):
    """An onnxruntime CPU session of an ONNX model (a `ModelProto` or a file path)."""
    import onnxruntime as ort

    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def run(sess, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """The session's logits for `x`, in batches of `batch`."""
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.asarray(x[i:i + batch], np.float32)})[0]
                           for i in range(0, len(x), batch)])
