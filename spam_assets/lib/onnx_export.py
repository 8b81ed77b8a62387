"""XGBoost (and the ensemble around it) -> ONNX, and the parity measurement the blocking
check uses.

Pitfalls handled: the booster must carry no custom feature names (onnxmltools wants
``f0..fN``); XGBoost 3 stores ``base_score`` in a form onnxmltools < 1.15 mis-reads (pinned
>= 1.15); the binary classifier's second output is probabilities ``[N, 2]``.

The ensemble (``spam_assets.lib.ensemble``) is one graph: the tree ensemble's node reads the
row's first ``n_base`` columns with its post-transform set to ``NONE`` (ONNX Runtime then
returns ``[-margin, margin]``: the raw margin, not a probability to invert), and the linear
second stage reads that margin and the stacking block (one stage per door, selected by the
block's ``form:json_fields`` column), then a sigmoid gives the same ``label``/
``probabilities`` outputs as the tree-only graph, so serving cannot tell them apart.
"""

from __future__ import annotations

import numpy as np

from spam_assets.lib.mapped import SCORE_CHUNK_ROWS, row_chunks


def booster_from_bytes(raw: bytes, nthread: int = 1):
    """Load a UBJSON booster; ``nthread=1`` because single-row predict on 2 cores with OpenMP
    spinning costs 10-30x."""
    import xgboost as xgb

    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    return booster


def to_onnx(booster, n_features: int, stack=None, n_base: int | None = None) -> bytes:
    """The tree model over all ``n_features`` columns, or with ``stack`` (an
    ``ensemble.Stack``) the ensemble: trees over the first ``n_base``, the stack over the rest."""
    from onnxmltools.convert import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster.feature_names = None
    booster.feature_types = None
    width = n_features if stack is None else n_base
    model = convert_xgboost(booster, initial_types=[("input", FloatTensorType([None, width]))])
    if stack is None:
        return model.SerializeToString()
    return _with_stack(model, stack, n_features, n_base).SerializeToString()


def _with_stack(trees, stack, n_features: int, n_base: int):
    """Rewire the converted tree graph into the ensemble graph (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = trees.graph
    (node,) = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    for attr in node.attribute:
        if attr.name == "post_transform":
            attr.s = b"NONE"
    node.input[0] = "base"
    node.output[0], node.output[1] = "tree_label", "tree_scores"

    def f32(name: str, value) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    def i64(name: str, value: int) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array([value], dtype=np.int64), name)

    consts = [
        i64("c0", 0),
        i64("cbase", n_base),
        i64("cend", n_features),
        i64("c1", 1),
        i64("c2", 2),
        i64("axis1", 1),
        i64("clast", n_features - n_base - 1),
        i64("cblock", n_features - n_base),
        f32("one", [1.0]),
        f32("half", [0.5]),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "c0", "cbase", "axis1"], ["base"]),
        node,
        helper.make_node("Slice", ["input", "cbase", "cend", "axis1"], ["block"]),
        helper.make_node("Slice", ["tree_scores", "c1", "c2", "axis1"], ["margin"]),
    ]

    def stage(prefix: str, st) -> str:
        """Nodes of one linear stage; returns the name of its logit."""
        consts.extend(
            [
                f32(prefix + "w_block", np.asarray(st.w_block).reshape(-1, 1)),
                f32(prefix + "w_trees", [st.w_trees]),
                f32(prefix + "intercept", [st.intercept]),
            ]
        )
        nodes.extend(
            [
                helper.make_node("Mul", ["margin", prefix + "w_trees"], [prefix + "m_trees"]),
                helper.make_node("MatMul", ["block", prefix + "w_block"], [prefix + "m_block"]),
                helper.make_node("Add", [prefix + "m_trees", prefix + "m_block"], [prefix + "m"]),
                helper.make_node("Add", [prefix + "m", prefix + "intercept"], [prefix + "logit"]),
            ]
        )
        return prefix + "logit"

    logit = stage("raw_", stack)
    if stack.fields is not None:
        fields_logit = stage("fields_", stack.fields)
        # the last block column is 1.0 for a message built from JSON fields: select its stage
        nodes += [
            helper.make_node("Slice", ["block", "clast", "cblock", "axis1"], ["form"]),
            helper.make_node("Greater", ["form", "half"], ["is_fields"]),
            helper.make_node("Where", ["is_fields", fields_logit, logit], ["logit"]),
        ]
        logit = "logit"
    nodes += [
        helper.make_node("Sigmoid", [logit], ["p_spam"]),
        helper.make_node("Sub", ["one", "p_spam"], ["p_ham"]),
        helper.make_node("Concat", ["p_ham", "p_spam"], ["probabilities"], axis=1),
        helper.make_node("Less", ["p_spam", "half"], ["is_ham"]),
        helper.make_node("Not", ["is_ham"], ["is_spam"]),
        helper.make_node("Cast", ["is_spam"], ["label_2d"], to=TensorProto.INT64),
        helper.make_node("Squeeze", ["label_2d", "axis1"], ["label"]),
    ]
    out = helper.make_graph(
        nodes,
        "spam_ensemble",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ],
        initializer=[*graph.initializer, *consts],
    )
    opsets = {o.domain: o.version for o in trees.opset_import}
    opsets[""] = max(opsets.get("", 0), 13)
    model = helper.make_model(
        out, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()]
    )
    model.ir_version = trees.ir_version
    onnx.checker.check_model(model)
    return model


def native_scores(booster, x: np.ndarray) -> np.ndarray:
    """XGBoost's own probabilities, predicted in place (no ``DMatrix`` copy of ``x``)."""
    return booster.inplace_predict(x, missing=np.nan).astype(np.float64)


def onnx_scores(onnx_bytes: bytes, x: np.ndarray, chunk_rows: int = SCORE_CHUNK_ROWS) -> np.ndarray:
    """ONNX Runtime's spam probabilities for ``x``, ``chunk_rows`` at a time (a memory-mapped
    matrix is never resident whole: ``spam_assets.lib.mapped``)."""
    sess = _session(onnx_bytes)
    parts = [_onnx_probs(sess, chunk) for chunk in row_chunks(x, chunk_rows)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _session(onnx_bytes: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])


def _onnx_probs(sess, chunk: np.ndarray) -> np.ndarray:
    out = sess.run(None, {sess.get_inputs()[0].name: chunk})
    return np.asarray(out[1], dtype=np.float64)[:, 1]


def parity(
    booster,
    onnx_bytes: bytes,
    x: np.ndarray,
    stack=None,
    n_base: int = 0,
    chunk_rows: int = SCORE_CHUNK_ROWS,
) -> dict:
    """Max/mean absolute difference between the native model (XGBoost, and the stack in
    numpy for an ensemble) and ONNX Runtime on every row of ``x``, compared a chunk of rows
    at a time (the whole test split at any corpus size, in bounded memory)."""
    from spam_assets.lib.ensemble import ensemble_scores

    sess = _session(onnx_bytes)
    worst, total = 0.0, 0.0
    for chunk in row_chunks(x, chunk_rows):
        native = (
            native_scores(booster, chunk)
            if stack is None
            else ensemble_scores(booster, stack, chunk, n_base)
        )
        diff = np.abs(native - _onnx_probs(sess, chunk))
        worst, total = max(worst, float(diff.max())), total + float(diff.sum())
    return {
        "rows": len(x),
        "max_abs_diff": worst,
        "mean_abs_diff": total / len(x) if len(x) else 0.0,
    }
