"""ONNX sources for ``gan-export import``: the graph's signature read and checked against the
declaration, the graph wrapped by exact adapters into the bundle contract (``src/``-prefixed in the
middle), parity against the original graph, and the fused render graph when the opsets agree."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from export.exporter import (
    PARITY_BATCHES,
    RENDER,
    GraphSpec,
    check_fused,
)
from export.importer import (
    Signature,
    check_images,
    check_logits,
    first_line,
    io_entry,
    probe_latents,
    source_format,
    within_tolerance,
)
from gancore.errors import ExportError

ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 10: "float16", 11: "float64"}
log = logging.getLogger(__name__)


# -- ONNX sources ---------------------------------------------------------------------------------
@dataclass
class OnnxSource:
    G: Any  # onnx.ModelProto of the wrapped generator (bundle names, NCHW, [-1, 1])
    D: Any | None
    G_source: Any  # the user's models, for parity
    D_source: Any | None
    kind: str
    latent_dim: int
    channels: int
    resolution: int
    class_names: list[str]
    source: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _load_onnx(path: Path, what: str):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise ExportError(
            f"{what} {path.name!r} is not a valid ONNX model: {first_line(e)}"
        ) from None
    if not model.graph.node:
        raise ExportError(f"{what} {path.name!r} is not a valid ONNX model: its graph is empty")
    return model


def _tensors(model, which: str) -> list[tuple[str, list[Any], str]]:
    """(name, dims, dtype) of the graph's real inputs (initializers excluded) or outputs."""
    inits = {i.name for i in model.graph.initializer}
    vis = model.graph.input if which == "input" else model.graph.output
    out = []
    for v in vis:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = []
        for d in t.shape.dim:
            dims.append(
                d.dim_param
                if d.HasField("dim_param")
                else d.dim_value
                if d.HasField("dim_value")
                else None
            )
        out.append((v.name, dims, ONNX_DTYPES.get(t.elem_type, f"type {t.elem_type}")))
    return out


def _fmt_dims(dims) -> str:
    return "[" + ", ".join(str(d) if d not in (None, "") else "?" for d in dims) + "]"


def _check_batch(what: str, name: str, dims, role: str) -> None:
    d0 = dims[0]
    if isinstance(d0, int) and d0 > 0:
        raise ExportError(
            f"{what}: {role} {name!r} has a fixed batch of {d0} (shape {_fmt_dims(dims)}); "
            "ganforge batches requests, so the batch axis must be dynamic: re-export with "
            'torch.onnx.export(..., dynamic_shapes={"'
            + name
            + '": {0: torch.export.Dim("batch")}}) '
            '(or dynamic_axes={"' + name + '": {0: "batch"}} with dynamo=False)'
        )


def _onnx_generator_io(model, what: str, sig: Signature):
    """(z input, label input or None, output, z rank): each checked against the declaration."""
    ins, outs = _tensors(model, "input"), _tensors(model, "output")
    want = "z [batch, latent_dim]" + (" and label [batch] int64" if sig.num_classes else "")
    if len(ins) != 1 + (sig.num_classes > 0):
        names = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in ins) or "none"
        raise ExportError(
            f"{what} has {len(ins)} inputs ({names}); a {sig.kind} generator takes {want}"
        )
    floats = [i for i in ins if i[2].startswith("float")]
    ints = [i for i in ins if i[2].startswith("int")]
    if len(floats) != 1 or len(ints) != (sig.num_classes > 0):
        names = ", ".join(f"{n} {t}" for n, _, t in ins)
        raise ExportError(f"{what} inputs are {names}; a {sig.kind} generator takes {want}")
    z = floats[0]
    name, dims, dtype = z
    if dtype != "float32":
        raise ExportError(f"{what}: input {name!r} is {dtype}, expected float32")
    if len(dims) not in (2, 4) or (len(dims) == 4 and dims[2:] != [1, 1]):
        raise ExportError(
            f"{what}: input {name!r} has shape {_fmt_dims(dims)}, expected z [batch, "
            f"{sig.latent_dim}] or [batch, {sig.latent_dim}, 1, 1] (is it a generator?)"
        )
    if dims[1] != sig.latent_dim:
        raise ExportError(
            f"{what}: input {name!r} has shape {_fmt_dims(dims)}: latent size {dims[1]}, "
            f"--latent-dim says {sig.latent_dim}"
        )
    _check_batch(what, name, dims, "input")
    label = None
    if sig.num_classes:
        label = ints[0]
        if len(label[1]) != 1 or label[2] not in ("int64", "int32"):
            raise ExportError(
                f"{what}: input {label[0]!r} is {label[2]} {_fmt_dims(label[1])}, "
                "expected label [batch] int64 (or int32)"
            )
        _check_batch(what, label[0], label[1], "input")
    if len(outs) != 1:
        names = ", ".join(n for n, _, _ in outs)
        raise ExportError(
            f"{what} has {len(outs)} outputs ({names}); a generator returns one image"
        )
    out = outs[0]
    if out[2] != "float32":
        raise ExportError(f"{what}: output {out[0]!r} is {out[2]}, expected float32 images")
    if len(out[1]) != 4:
        raise ExportError(
            f"{what}: output {out[0]!r} has shape {_fmt_dims(out[1])}, expected an image "
            f"batch {'[batch, C, H, W]' if sig.layout == 'nchw' else '[batch, H, W, C]'} "
            "(is it a generator?)"
        )
    _check_batch(what, out[0], out[1], "output")
    return z, label, out, len(dims)


def _const(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(array), name)


def _wrap_onnx(
    model, inputs: list[tuple[str, list, str]], outputs: list[tuple[str, list, str]], pre, post
):
    """A model whose graph inputs/outputs are the bundle's (``inputs``/``outputs``), with the
    source graph prefixed ``src/`` in between; ``pre``/``post``: (nodes, initializers) adapters
    from the bundle names to ``src/...`` and back."""
    import onnx
    from onnx import helper

    src = onnx.compose.add_prefix(model, "src/")
    elem = {"float32": onnx.TensorProto.FLOAT, "int64": onnx.TensorProto.INT64}
    g = helper.make_graph(
        list(pre[0]) + list(src.graph.node) + list(post[0]),
        "ganforge_import",
        [helper.make_tensor_value_info(n, elem[t], s) for n, s, t in inputs],
        [helper.make_tensor_value_info(n, elem[t], s) for n, s, t in outputs],
        initializer=list(src.graph.initializer) + list(pre[1]) + list(post[1]),
    )
    out = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(src.functions)
    onnx.checker.check_model(out)
    return out


def _wrap_onnx_generator(model, what: str, sig: Signature):
    from onnx import helper

    z, label, out, z_rank = _onnx_generator_io(model, what, sig)
    pre_nodes, inits = [], []
    if z_rank == 4:
        inits.append(_const("adapt/z_shape", np.array([-1, sig.latent_dim, 1, 1], np.int64)))
        pre_nodes.append(helper.make_node("Reshape", ["z", "adapt/z_shape"], ["src/" + z[0]]))
    else:
        pre_nodes.append(helper.make_node("Identity", ["z"], ["src/" + z[0]]))
    if label is not None:
        if label[2] == "int32":
            pre_nodes.append(helper.make_node("Cast", ["label"], ["src/" + label[0]], to=6))
        else:
            pre_nodes.append(helper.make_node("Identity", ["label"], ["src/" + label[0]]))
    post_nodes, y = [], "src/" + out[0]
    if sig.layout == "nhwc":
        post_nodes.append(helper.make_node("Transpose", [y], ["adapt/nchw"], perm=[0, 3, 1, 2]))
        y = "adapt/nchw"
    lo, hi = sig.value_range
    if (lo, hi) != (-1.0, 1.0):
        inits += [
            _const("adapt/lo", np.float32(lo)),
            _const("adapt/scale", np.float32(2.0 / (hi - lo))),
            _const("adapt/one", np.float32(1.0)),
        ]
        post_nodes += [
            helper.make_node("Sub", [y, "adapt/lo"], ["adapt/shifted"]),
            helper.make_node("Mul", ["adapt/shifted", "adapt/scale"], ["adapt/scaled"]),
            helper.make_node("Sub", ["adapt/scaled", "adapt/one"], ["image"]),
        ]
    else:
        post_nodes.append(helper.make_node("Identity", [y], ["image"]))
    ins = [("z", ["batch", sig.latent_dim], "float32")]
    if label is not None:
        ins.append(("label", ["batch"], "int64"))
    img = ("image", ["batch", None, None, None], "float32")
    return _wrap_onnx(model, ins, [img], (pre_nodes, inits), (post_nodes, [])), (
        z,
        label,
        out,
        z_rank,
    )


def _wrap_onnx_discriminator(model, what: str, sig: Signature, channels: int, res: int):
    from onnx import helper

    ins, outs = _tensors(model, "input"), _tensors(model, "output")
    cond = sig.num_classes > 0
    want = "image" + (" and label [batch] int64" if cond else "")
    if len(ins) != 1 + cond:
        raise ExportError(f"{what} has {len(ins)} inputs ({', '.join(n for n, _, _ in ins)}); "
                          f"a {sig.kind} discriminator takes {want}")  # fmt: skip
    images = [i for i in ins if len(i[1]) == 4 and i[2] == "float32"]
    labels = [i for i in ins if i[2] in ("int64", "int32") and len(i[1]) == 1]
    if len(images) != 1 or len(labels) != cond:
        desc = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in ins)
        raise ExportError(
            f"{what} inputs are {desc}; a {sig.kind} discriminator takes float32 {want}"
        )
    image, label = images[0], labels[0] if cond else None
    for name, dims, _ in [image] + ([label] if label else []):
        _check_batch(what, name, dims, "input")
    if len(outs) != 1 or outs[0][2] != "float32" or len(outs[0][1]) not in (1, 2):
        desc = ", ".join(f"{n} {_fmt_dims(d)} {t}" for n, d, t in outs)
        raise ExportError(
            f"{what} outputs {desc}; a discriminator returns one float32 score [batch] or [batch, 1]"
        )
    out = outs[0]
    _check_batch(what, out[0], out[1], "output")
    # The filters need logits: a final Sigmoid is dropped (exact) rather than inverted.
    producer = {o: n for n in model.graph.node for o in n.output}.get(out[0])
    y = out[0]
    dropped_sigmoid = producer is not None and producer.op_type == "Sigmoid"
    if dropped_sigmoid:
        y = producer.input[0]
    pre_nodes, inits, x = [], [], "image"
    lo, hi = sig.value_range
    if (lo, hi) != (-1.0, 1.0):
        inits += [_const("adapt/one", np.float32(1.0)), _const("adapt/half_width", np.float32((hi - lo) / 2.0)),
                  _const("adapt/lo", np.float32(lo))]  # fmt: skip
        pre_nodes += [
            helper.make_node("Add", [x, "adapt/one"], ["adapt/plus1"]),
            helper.make_node("Mul", ["adapt/plus1", "adapt/half_width"], ["adapt/scaled"]),
            helper.make_node("Add", ["adapt/scaled", "adapt/lo"], ["adapt/ranged"]),
        ]
        x = "adapt/ranged"
    if sig.layout == "nhwc":
        pre_nodes.append(helper.make_node("Transpose", [x], ["src/" + image[0]], perm=[0, 2, 3, 1]))
    else:
        pre_nodes.append(helper.make_node("Identity", [x], ["src/" + image[0]]))
    if label is not None:
        op = ("Cast", {"to": 6}) if label[2] == "int32" else ("Identity", {})
        pre_nodes.append(helper.make_node(op[0], ["label"], ["src/" + label[0]], **op[1]))
    inits.append(_const("adapt/flat", np.array([-1], np.int64)))
    post = ([helper.make_node("Reshape", ["src/" + y, "adapt/flat"], ["logit"])], [])
    ins_b = [("image", ["batch", channels, res, res], "float32")]
    if cond:
        ins_b.append(("label", ["batch"], "int64"))
    wrapped = _wrap_onnx(model, ins_b, [("logit", ["batch"], "float32")], (pre_nodes, inits), post)
    return wrapped, {"dropped_final_sigmoid": dropped_sigmoid, "source_output": out[0]}


def _ort(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), so, providers=["CPUExecutionProvider"]
        )
    except Exception as e:
        raise ExportError(f"ONNX Runtime cannot load the model: {first_line(e)}") from None


def _run(sess, what: str, *arrays) -> np.ndarray:
    try:
        names = [i.name for i in sess.get_inputs()]
        return sess.run(None, dict(zip(names, arrays)))[0]
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{what} fails to run: {first_line(e)}") from None


def onnx_source(generator: Path, discriminator: Path | None, sig: Signature) -> OnnxSource:
    what = f"generator {generator.name}"
    src_g = _load_onnx(generator, "generator")
    G, (z, label, out, z_rank) = _wrap_onnx_generator(src_g, what, sig)
    g = _ort(G)
    zs, lab = probe_latents(sig.latent_dim, sig.num_classes)
    args = () if lab is None else (lab,)
    try:
        first = _run(g, what, zs[:1], *(a[:1] for a in args))
    except ExportError as e:
        raise ExportError(f"{e} (at batch 1)") from None
    try:
        images = _run(g, what, zs, *args)
    except ExportError as e:
        raise ExportError(
            f"{e} (at batch {len(zs)}; it runs at batch 1): a batch size baked into the graph? "
            "Re-export it with a dynamic batch (torch.onnx.export(..., dynamic_shapes=...))"
        ) from None
    check_images(what, images, len(zs), sig.value_range)
    if first.shape[1:] != images.shape[1:]:
        raise ExportError(
            f"{what} makes {list(first.shape[1:])} at batch 1 but {list(images.shape[1:])} at batch {len(zs)}"
        )
    channels, res = int(images.shape[1]), int(images.shape[2])
    D = src_d = None
    d_info = None
    if discriminator is not None:
        if source_format(discriminator, "discriminator") != "onnx":
            raise ExportError(
                f"discriminator {discriminator.name!r}: an ONNX generator takes an ONNX "
                "discriminator (.onnx)"
            )
        dwhat = f"discriminator {discriminator.name}"
        src_d = _load_onnx(discriminator, "discriminator")
        D, d_info = _wrap_onnx_discriminator(src_d, dwhat, sig, channels, res)
        check_logits(dwhat, _run(_ort(D), dwhat, images, *args), len(zs))
    info = {
        "format": "ONNX",
        "declared": sig.to_dict(),
        "inputs": {"z": z[0]} | ({"label": label[0]} if label else {}),
        "output": out[0],
        "z_shape": "[N, latent, 1, 1]" if z_rank == 4 else "[N, latent]",
        "discriminator": d_info,
    }
    return OnnxSource(G, D, src_g, src_d, sig.kind, sig.latent_dim, channels, res,
                      list(sig.class_names), info)  # fmt: skip


def _source_reference(model, sig: Signature, role: str, info):
    """The user's graph run as-is, with the adapters done in numpy: the parity reference."""
    sess = _ort(model)
    lo, hi = sig.value_range
    names = [i.name for i in sess.get_inputs()]
    types = {i.name: i.type for i in sess.get_inputs()}

    def feed(x, label):
        arrays = {}
        for n in names:
            if "int" in types[n]:
                arrays[n] = label.astype(np.int32 if "int32" in types[n] else np.int64)
            else:
                arrays[n] = x
        return arrays

    if role == "generator":

        def run(z, label=None):
            x = z[:, :, None, None] if info["z_shape"] == "[N, latent, 1, 1]" else z
            y = sess.run(None, feed(x, label))[0]
            if sig.layout == "nhwc":
                y = y.transpose(0, 3, 1, 2)
            return (y - lo) * (2.0 / (hi - lo)) - 1.0

        return run

    def run_d(image, label=None):
        x = (image + 1.0) * ((hi - lo) / 2.0) + lo
        if sig.layout == "nhwc":
            x = x.transpose(0, 2, 3, 1)
        return sess.run(None, feed(x.astype(np.float32), label))[0].reshape(-1)

    return run_d


def _render_onnx(G, D):
    """G then D in one graph (outputs ``image`` and ``logit``), or None when their opsets differ."""
    import onnx
    from onnx import helper

    if {(o.domain, o.version) for o in G.opset_import} != {
        (o.domain, o.version) for o in D.opset_import
    }:
        return None
    g, d = onnx.compose.add_prefix(G, "g/"), onnx.compose.add_prefix(D, "d/")
    ins = [i for i in G.graph.input]
    nodes = [helper.make_node("Identity", [i.name], ["g/" + i.name]) for i in ins]
    if len(ins) == 2:
        nodes.append(helper.make_node("Identity", ["label"], ["d/label"]))
    nodes += list(g.graph.node)
    nodes.append(helper.make_node("Identity", ["g/image"], ["d/image"]))
    nodes += list(d.graph.node)
    nodes += [
        helper.make_node("Identity", ["g/image"], ["image"]),
        helper.make_node("Identity", ["d/logit"], ["logit"]),
    ]
    graph = helper.make_graph(
        nodes, "ganforge_render", ins, [G.graph.output[0], D.graph.output[0]],
        initializer=list(g.graph.initializer) + list(d.graph.initializer),
    )  # fmt: skip
    model = helper.make_model(
        graph, opset_imports=list(G.opset_import), ir_version=max(G.ir_version, D.ir_version)
    )
    model.functions.extend(list(g.functions) + list(d.functions))
    onnx.checker.check_model(model)
    return model


def write_onnx(tmp: Path, src: OnnxSource, sig: Signature, say) -> dict[str, Any]:
    import onnx

    graphs: dict[str, Any] = {}
    parity: dict[str, Any] = {}
    fused: dict[str, Any] = {}
    rng = np.random.default_rng(1234)
    r, c, nz = src.resolution, src.channels, src.latent_dim
    img = ("image", ["batch", c, r, r], "float32")
    lab_io = [("label", ["batch"], "int64")] if src.num_classes else []
    z_io = ("z", ["batch", nz], "float32")

    def inputs(b):
        z = rng.standard_normal((b, nz)).astype(np.float32)
        lab = (
            rng.integers(0, max(src.num_classes, 1), b).astype(np.int64)
            if src.num_classes
            else None
        )
        return z, lab

    g_ref = _source_reference(src.G_source, sig, "generator", src.source)
    g_sess = _ort(src.G)
    say("writing generator (onnx)")
    onnx.save(src.G, str(tmp / "generator.onnx"))
    graphs["generator"] = {"inputs": [io_entry(z_io)] + [io_entry(x) for x in lab_io], "outputs": [io_entry(img)],
                           "files": {"onnx": "generator.onnx"}}  # fmt: skip
    parity["generator"] = {"onnx": {}}
    for b in PARITY_BATCHES:
        z, lab = inputs(b)
        args = () if lab is None else (lab,)
        diff = float(np.abs(_run(g_sess, "generator", z, *args) - g_ref(z, lab)).max())
        parity["generator"]["onnx"][str(b)] = diff
        within_tolerance("onnx generator", "the source graph", diff, b)
    if src.D is None:
        graphs["discriminator"] = None
        return {"graphs": graphs, "parity": parity, "fused": fused}
    d_ref = _source_reference(src.D_source, sig, "discriminator", src.source["discriminator"])
    d_sess = _ort(src.D)
    onnx.save(src.D, str(tmp / "discriminator.onnx"))
    graphs["discriminator"] = {"inputs": [io_entry(img)] + [io_entry(x) for x in lab_io],
                               "outputs": [io_entry(("logit", ["batch"], "float32"))],
                               "files": {"onnx": "discriminator.onnx"}}  # fmt: skip
    parity["discriminator"] = {"onnx": {}}
    dropped = src.source["discriminator"]["dropped_final_sigmoid"]
    for b in PARITY_BATCHES:
        z, lab = inputs(b)
        args = () if lab is None else (lab,)
        x = _run(g_sess, "generator", z, *args)
        got = _run(d_sess, "discriminator", x, *args)
        ref = d_ref(x, lab)
        if dropped:  # the file ends in a Sigmoid: the bundle's logit through it equals its output
            got = 1.0 / (1.0 + np.exp(-got.astype(np.float64)))
        diff = float(np.abs(got - ref).max())
        parity["discriminator"]["onnx"][str(b)] = diff
        within_tolerance("onnx discriminator", "the source graph", diff, b)
    render = _render_onnx(src.G, src.D)
    if render is None:
        log.info("no fused render graph: the generator's and discriminator's opsets differ")
        return {"graphs": graphs, "parity": parity, "fused": fused}
    onnx.save(render, str(tmp / "render.onnx"))
    graphs[RENDER] = {"inputs": [io_entry(z_io)] + [io_entry(x) for x in lab_io],
                      "outputs": [io_entry(img), io_entry(("logit", ["batch"], "float32"))],
                      "files": {"onnx": "render.onnx"}}  # fmt: skip
    spec = GraphSpec(RENDER, None, [z_io] + lab_io, [img])
    fused["onnx"] = check_fused(spec, "onnx", tmp, {g: graphs[g]["files"]["onnx"] for g in graphs},
                                None, src.num_classes)  # fmt: skip
    return {"graphs": graphs, "parity": parity, "fused": fused}
