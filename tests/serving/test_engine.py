"""Unit tests: the engine, the request pipeline, bundle verification, settings, middleware."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gancore import filters, sampling
from serving.config import Limits, Settings, split_list, worker_device_id
from serving.engine import Engine
from serving.errors import ClientError, EngineError
from serving.pipeline import Pipeline
from serving.registry import NoModels, check_bundles, load_bundles
from serving.schemas import ModelOut
from tests.serving.conftest import REPO, tampered_copy

CALLS: list[tuple[str, str, int]] = []  # (api, model, rows) of every engine call


@pytest.fixture(scope="module")
def engine(bundle_dirs):
    settings = Settings(bundles=[str(p) for p in bundle_dirs.values()], allow_ungated=True)
    eng = Engine(load_bundles(settings), observe=lambda *call: CALLS.append(call))
    eng.warm_up(sizes=(1, 4))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def pipe(engine):
    return Pipeline(engine, Limits())


def run(coro):
    return asyncio.run(coro)


def bundle_of(engine, kind):
    return next(b for b in engine.bundles if b.kind == kind)


@pytest.mark.parametrize("kind", ["dcgan", "cgan", "stylegan"])
def test_served_images_are_export_sampling_images(engine, pipe, kind):
    bundle = bundle_of(engine, kind)
    psi = 0.7
    got = run(pipe.generate(bundle.name, 5, None, 11, psi, "none", 1))
    want = sampling.generate(bundle, list(range(11, 16)), truncation=psi)
    np.testing.assert_array_equal(got.images, want)
    assert [m["seed"] for m in got.meta] == list(range(11, 16))
    want_logits = bundle.discriminator(
        want, sampling.labels_for_seeds(range(11, 16), bundle.num_classes)
    )
    np.testing.assert_allclose(got.scores, want_logits, rtol=1e-6)


def test_an_image_does_not_depend_on_its_batch(engine, pipe, names):
    """64 concurrent requests of three models are merged into engine calls of many rows, and every
    request gets the pixels and score it gets alone."""
    requests = [(names[k], seed) for seed in range(22) for k in ("dcgan", "cgan", "stylegan")][:64]

    async def together():
        return await asyncio.gather(
            *(pipe.generate(m, 1, None, s, 1.0, "none", 1) for m, s in requests)
        )

    CALLS.clear()
    merged = run(together())
    sizes = [rows for api, _, rows in CALLS if api == "render"]
    assert max(sizes) > 1 and len(sizes) < len(requests)
    for (model, seed), got in zip(requests, merged):
        alone = run(pipe.generate(model, 1, None, seed, 1.0, "none", 1))
        np.testing.assert_array_equal(got.images, alone.images)
        np.testing.assert_array_equal(got.scores, alone.scores)


def test_style_mix_and_interpolation_follow_export_sampling(engine, pipe):
    bundle = bundle_of(engine, "stylegan")
    got = run(pipe.style_mix(bundle.name, [1, 2], [3, 4, 5], "coarse", 0.7))
    want = sampling.style_mix(bundle, [1, 2], [3, 4, 5], "coarse", 0.7)
    np.testing.assert_array_equal(got.images, want)
    assert got.grid_columns == 4 and got.meta[0] == {"blank": True}
    mix = got.meta[-1]["style"]
    assert mix["source"] == "mix" and mix["row_seed"] == 2 and mix["col_seed"] == 5
    assert mix["col_styles"] == list(range(*bundle.style_ranges["coarse"]))
    for space in ("z", "w"):
        got = run(pipe.interpolate(bundle.name, [1, 9], 5, space, 0.7))
        want = sampling.interpolate(bundle, 1, 9, 5, space, truncation=0.7)
        np.testing.assert_array_equal(got.images, want)
    cgan = bundle_of(engine, "cgan")
    got = run(pipe.interpolate(cgan.name, [1, 9], 4, "z", 1.0, class_label=2))
    np.testing.assert_array_equal(got.images, sampling.interpolate(cgan, 1, 9, 4, "z", label=2))


def test_a_coded_stylegan_mixes_within_one_code_as_export_sampling_does(tmp_path):
    """A StyleGAN-lite with a latent code: /models names the code, and the served style-mixing
    grid is gancore.sampling's, whose mixed cells take one code each."""
    from export.exporter import export_run
    from tests.conftest import train_run

    run_dir = train_run("stylegan", tmp_path / "run", latent_code=4)
    path = export_run(run_dir, tmp_path / "sg-coded", formats=("onnx",))
    settings = Settings(bundles=[str(path)], allow_ungated=True)
    eng = Engine(load_bundles(settings))
    try:
        p = Pipeline(eng, Limits())
        (bundle,) = eng.bundles
        info = p.model(bundle.name)
        assert bundle.latent_code == 4 and ModelOut.from_info(info).latent_code == 4
        rows, cols = [1, 2, 3], [4, 5, 6]
        codes = sampling.latent_codes(sampling.z_from_seeds(rows + cols, bundle.latent_dim), 4)
        assert len(set(codes.tolist())) > 1
        ws = sampling.ws_for_seeds(bundle, rows + cols, None, 0.8)
        for styles in ("coarse", "fine"):
            got = run(p.style_mix(bundle.name, rows, cols, styles, 0.8))
            want = sampling.style_mix(bundle, rows, cols, styles, 0.8)
            np.testing.assert_array_equal(got.images, want)
            # Mixing the seeds' own ws, whatever their codes, would draw other cells.
            layers = sampling.check_styles(styles, bundle.num_ws, bundle.style_ranges)
            plain = sampling.synthesize(bundle, sampling.style_mix_cells(ws[:3], ws[3:], layers))
            mixed = [1 + (r + 1) * 4 + c for r in range(3) for c in range(3)]
            differ = [not np.array_equal(got.images[i], plain[i]) for i in mixed]
            assert any(differ) and not all(differ)  # cells whose two seeds share a code agree
    finally:
        eng.close()


def test_conditional_classes_by_index_and_name(engine, pipe):
    cgan = bundle_of(engine, "cgan")
    name = cgan.class_names[7]
    got = run(pipe.generate(cgan.name, 3, None, 0, 1.0, "none", 1, class_labels=[2, name]))
    assert [m["class"]["index"] for m in got.meta] == [2, 2, 2, 7, 7, 7]
    assert [m["seed"] for m in got.meta] == [0, 1, 2, 0, 1, 2]
    want = sampling.generate(cgan, [0, 1, 2], labels=[7, 7, 7])
    np.testing.assert_array_equal(got.images[3:], want)
    assert got.grid_columns == 3


def test_top_k_keeps_the_best_scores(engine, pipe):
    b = bundle_of(engine, "dcgan")
    got = run(pipe.generate(b.name, 4, None, 100, 1.0, "top_k", 3))
    every = run(pipe.generate(b.name, 12, None, 100, 1.0, "none", 1))
    best = sorted(np.argsort(-every.scores, kind="stable")[:4])
    assert [m["seed"] for m in got.meta] == [100 + i for i in best]
    assert got.extra["filter"] == {
        "method": "top_k",
        "oversample": 3,
        "generated": 12,
        "returned": 4,
        "acceptance_rate": round(4 / 12, 6),
    }


def test_drs_is_reproducible_and_uses_the_calibration(engine, pipe):
    b = bundle_of(engine, "cgan")
    first = run(pipe.generate(b.name, 6, None, 50, 1.0, "drs", 8))
    again = run(pipe.generate(b.name, 6, None, 50, 1.0, "drs", 8))
    assert first.meta == again.meta
    np.testing.assert_array_equal(first.images, again.images)
    gen = first.extra["filter"]["generated"]
    seeds = list(range(50, 50 + gen))
    every = run(pipe.generate(b.name, gen, seeds, None, 1.0, "none", 1))
    mask = filters.drs_accept(every.scores, seeds, b.filters)
    assert [m["seed"] for m in first.meta] == [s for s, ok in zip(seeds, mask) if ok][:6]
    assert 0 < first.extra["filter"]["acceptance_rate"] <= 1


@pytest.mark.parametrize(
    "call, status, field",
    [
        (lambda p, n: p.generate("nope", 1, None, 0, 1.0, "none", 1), 404, "model"),
        (lambda p, n: p.generate(n["dcgan"], 65, None, 0, 1.0, "none", 1), 422, "n"),
        (lambda p, n: p.generate(n["dcgan"], 1, None, 0, 0.0, "none", 1), 422, "truncation"),
        (
            lambda p, n: p.generate(n["dcgan"], 64, None, 0, 1.0, "top_k", 16),
            422,
            "filter.oversample",
        ),
        (lambda p, n: p.generate(n["dcgan"], 1, None, 0, 1.0, "none", 1, [1]), 422, "class_label"),
        (lambda p, n: p.generate(n["cgan"], 1, None, 0, 1.0, "none", 1, [10]), 422, "class_label"),
        (lambda p, n: p.generate(n["cgan"], 1, None, 0, 1.0, "none", 1, ["x"]), 422, "class_label"),
        (
            lambda p, n: p.generate(n["cgan"], 40, None, 0, 1.0, "none", 1, [1, 2]),
            422,
            "class_label",
        ),
        (lambda p, n: p.style_mix(n["cgan"], [1], [2], "coarse", 1.0), 422, "model"),
        (lambda p, n: p.style_mix(n["stylegan"], [1], [2], [0, 99], 1.0), 422, "col_styles"),
        (lambda p, n: p.style_mix(n["stylegan"], [1], [2], "huge", 1.0), 422, "col_styles"),
        (
            lambda p, n: p.style_mix(n["stylegan"], list(range(16)), list(range(16)), "fine", 1.0),
            422,
            "row_seeds",
        ),
        (lambda p, n: p.style_mix(n["stylegan"], [1], [2], "fine", 3.0), 422, "truncation"),
        (lambda p, n: p.interpolate(n["dcgan"], [1, 2], 4, "w", 1.0), 422, "space"),
        (lambda p, n: p.interpolate(n["dcgan"], [1, 2], 65, "z", 1.0), 422, "steps"),
    ],
)
def test_client_mistakes_name_the_field(pipe, names, call, status, field):
    with pytest.raises(ClientError) as err:
        run(call(pipe, names))
    assert err.value.status == status
    assert err.value.field == field
    assert str(err.value)


def test_tampered_and_ungated_bundles_are_refused(bundle_dirs, tmp_path, caplog):
    good = bundle_dirs["dcgan"]
    bad = tampered_copy(bundle_dirs["cgan"], tmp_path / "tampered")
    caplog.set_level(logging.INFO, logger="ganforge.serving")
    loaded = load_bundles(Settings(bundles=[str(bad), str(good)], allow_ungated=True))
    assert [b.kind for b in loaded.values()] == ["dcgan"]
    assert any(
        "refused bundle" in r.message and str(bad) in r.message and "checksum" in r.message
        for r in caplog.records
    )
    with pytest.raises(NoModels):
        load_bundles(Settings(bundles=[str(bad)], allow_ungated=True))
    with pytest.raises(NoModels):
        check_bundles(Settings(bundles=[str(bad), str(tmp_path / "missing")]))
    with pytest.raises(NoModels, match="no bundles configured"):
        load_bundles(Settings())


def test_gate_is_required_unless_ungated_is_allowed(bundle_dirs, tmp_path, caplog):
    import shutil

    ungated = tmp_path / "ungated"
    shutil.copytree(bundle_dirs["dcgan"], ungated)
    (ungated / "gate.json").unlink(missing_ok=True)
    caplog.set_level(logging.INFO, logger="ganforge.serving")
    with pytest.raises(NoModels):
        load_bundles(Settings(bundles=[str(ungated)]))
    assert any("gate" in r.message for r in caplog.records if r.levelno >= logging.ERROR)
    loaded = load_bundles(Settings(bundles=[str(ungated)], allow_ungated=True))
    info = Engine(loaded).models[0]
    assert info.ungated and not info.gate["passed"]
    assert any("UNGATED" in r.message for r in caplog.records)


def test_settings_from_env():
    s = Settings.from_env(
        {"GAN_BUNDLES": "a:b,c", "GAN_MAX_N": "8", "GAN_ALLOW_UNGATED": "1", "GAN_BATCHING": "0"}
    )
    assert s.bundles == ["a", "b", "c"] and s.limits.max_n == 8
    assert s.allow_ungated and not s.batching and s.api_key is None
    assert split_list(" , ") == []
    with pytest.raises(ValueError, match="GAN_MAX_N"):
        Settings.from_env({"GAN_MAX_N": "many"})


def test_api_workers_default_to_the_usable_cpus_at_most_four(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert Settings.from_env({}).api_workers == 2
    assert Settings().api_workers == 2  # the dataclass default is the same rule
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert Settings.from_env({}).api_workers == 4
    assert Settings.from_env({"GAN_API_WORKERS": "1"}).api_workers == 1
    with pytest.raises(ValueError, match="GAN_API_WORKERS=0 must be >= 1"):
        Settings.from_env({"GAN_API_WORKERS": "0"})


def test_tracing_is_opt_in():
    assert not Settings.from_env({}).tracing
    assert Settings.from_env({"GAN_TRACING": "1"}).tracing


async def _call(app, path="/generate", headers=(), chunks=(b"{}",)):
    sent = []
    body = list(chunks)

    async def receive():
        if body:
            return {"type": "http.request", "body": body.pop(0), "more_body": bool(body)}
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": list(headers), "method": "POST"}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def _echo(scope, receive, send):
    data = b""
    while True:
        msg = await receive()
        data += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": data})


def test_middleware_auth_and_body_limit():
    from serving.middleware import ApiKeyMiddleware, BodyLimitMiddleware

    auth = ApiKeyMiddleware(_echo, api_key="s3cret")
    assert run(_call(auth))[0] == 401
    assert run(_call(auth, headers=[(b"authorization", b"Bearer nope")]))[0] == 401
    assert run(_call(auth, headers=[(b"authorization", b"Bearer s3cret")])) == (200, b"{}")
    assert run(_call(auth, path="/readyz"))[0] == 200
    limit = BodyLimitMiddleware(_echo, max_bytes=10)
    assert run(_call(limit, chunks=[b"12345", b"678"])) == (200, b"12345678")
    status, body = run(_call(limit, chunks=[b"123456", b"789012"]))  # chunked, no length
    assert status == 413 and json.loads(body)["field"] == "body"
    assert run(_call(limit, headers=[(b"content-length", b"11")], chunks=[b"x" * 11]))[0] == 413


def test_serving_onnx_bundles_never_imports_torch(bundle_dirs):
    code = textwrap.dedent(
        f"""
        import asyncio, sys
        import serving.service
        from serving.config import Settings
        from serving.engine import Engine
        from serving.registry import load_bundles
        eng = Engine(load_bundles(Settings(bundles={[str(p) for p in bundle_dirs.values()]!r},
                                           allow_ungated=True)))
        eng.warm_up(sizes=(1,))
        bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'training'))
        assert not bad, bad
        print('ok')
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_gated_bundles_are_served_and_failed_gates_refused(gated_bundle, caplog):
    passing, failing = gated_bundle("dcgan", True), gated_bundle("dcgan", False)
    caplog.set_level(logging.INFO, logger="ganforge.serving")
    loaded = load_bundles(Settings(bundles=[str(failing), str(passing)]))
    (bundle,) = loaded.values()
    assert bundle.path == passing
    info = Engine(loaded).models[0]
    assert info.gate["passed"] and not info.ungated
    assert info.gate["verdict"] == "passed" and info.gate["distance"] <= info.gate["threshold"]
    assert any(
        "refused bundle" in r.message and str(failing) in r.message and "gate failed" in r.message
        for r in caplog.records
    )
    assert check_bundles(Settings(bundles=[str(failing), str(passing)])) == [str(passing)]


def test_batcher_merges_concurrent_calls_and_splits_results(caplog):
    from concurrent.futures import ThreadPoolExecutor

    from serving.batcher import MicroBatcher

    calls, sizes = [], []

    def double(x, labels):
        calls.append(len(x))
        assert labels is None
        return (x * 2, x[:, 0])

    async def main(batcher):
        parts = [np.full((n, 3), i, np.float32) for i, n in enumerate([1, 2, 3, 1, 9, 1])]
        outs = await asyncio.gather(*(batcher(p, None) for p in parts))
        for p, (o, first) in zip(parts, outs):
            np.testing.assert_array_equal(o, p * 2)
            np.testing.assert_array_equal(first, p[:, 0])

    with ThreadPoolExecutor(1) as pool:
        run(main(MicroBatcher("double", double, pool, max_rows=8, observe=sizes.append)))
        assert calls == [7, 9, 1]  # the first call merges 1+2+3+1; the 9-row job goes alone
        assert sizes == [7, 9, 1]

        def broken(x, labels):
            raise RuntimeError("CUDA out of memory")

        async def failing():
            b = MicroBatcher("broken", broken, pool)
            return await asyncio.gather(
                *(b(np.zeros((1, 3)), None) for _ in range(5)), return_exceptions=True
            )

        caplog.set_level(logging.ERROR, logger="ganforge.serving")
        errors = run(failing())
        assert all(isinstance(e, EngineError) for e in errors)
        logged = [r for r in caplog.records if "failed" in r.message]
        assert len(logged) == 1 and "5 requests" in logged[0].message  # logged once per call
        run(main(MicroBatcher("double", double, pool, max_rows=8)))  # and the next call works


def test_worker_device_follows_the_worker_index():
    assert worker_device_id(None, {}) == 0
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    assert [worker_device_id(i, env) for i in (1, 2, 3, 4)] == [0, 1, 2, 0]
    assert [worker_device_id(i, {"GAN_NUM_GPUS": "2"}) for i in (1, 2, 3)] == [0, 1, 0]


def test_bundles_from_the_bentoml_model_store(gated_bundle, bundle_dirs):
    from export.store import push

    tag = push(gated_bundle("cgan", True))
    loaded = load_bundles(Settings(model_tags=[tag], bundles=[str(bundle_dirs["dcgan"])],
                                   allow_ungated=True))  # fmt: skip
    assert sorted(b.kind for b in loaded.values()) == ["cgan", "dcgan"]
    with pytest.raises(NoModels):
        load_bundles(Settings(model_tags=["no-such-model:latest"]))


def test_api_routes_skip_the_unsampled_tracing_span():
    """BentoML's default sample rate records no span; the API routes skip creating one."""
    from serving.service import API_PATHS, GanService

    excluded = GanService.config["tracing"]["excluded_urls"]
    assert set(API_PATHS) <= set(excluded) and "/livez" not in excluded


def test_cuda_serving_declares_its_gpu_and_settings_are_parsed_once():
    code = textwrap.dedent(
        """
        from serving import config
        from serving.service import GanService
        print(GanService.config.get("resources"), config.current() is config.current())
        """
    )
    for device, want in (("cuda", "{'gpu': 1} True"), ("cpu", "{} True")):
        env = {**__import__("os").environ, "GAN_DEVICE": device}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert out.stdout.strip().endswith(want), out.stdout + out.stderr[-2000:]


def test_small_idle_calls_run_on_the_event_loop_and_large_ones_on_the_engine_thread(caplog):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from serving.batcher import MicroBatcher

    where = []
    inflight = [0]  # requests in flight, counted as the app counts them

    def alone() -> bool:
        return inflight[0] <= 1

    def double(x, labels):
        where.append((len(x), threading.current_thread().name))
        return (x * 2, x[:, 0])

    async def request(batcher, part):
        inflight[0] += 1
        try:
            await asyncio.sleep(0)  # parsing the body: concurrent requests are all in flight
            return await batcher(part, None)
        finally:
            inflight[0] -= 1

    async def call(batcher, rows: list[int]):
        parts = [np.full((n, 2), n, np.float32) for n in rows]
        outs = await asyncio.gather(*(request(batcher, p) for p in parts))
        for p, (o, _) in zip(parts, outs):
            np.testing.assert_array_equal(o, p * 2)
        return threading.current_thread().name

    with ThreadPoolExecutor(1, thread_name_prefix="engine") as pool:
        b = MicroBatcher("double", double, pool, max_rows=64, inline_rows=4, alone=alone)
        loop_thread = run(call(b, [1]))  # a lone small request: run on the loop, at once
        run(call(b, [5]))  # a lone request larger than inline_rows: the engine thread
        run(call(b, [1, 2]))  # concurrent requests: merged, on the engine thread
        assert where[0] == (1, loop_thread)
        assert where[1][0] == 5 and where[1][1].startswith("engine")
        assert where[2][0] == 3 and where[2][1].startswith("engine")

        def broken(x, labels):
            raise RuntimeError("ORT failure")

        caplog.set_level(logging.ERROR, logger="ganforge.serving")
        failing = MicroBatcher("broken", broken, pool, inline_rows=8, alone=alone)

        async def fail(n: int):
            calls = (request(failing, np.zeros((1, 2))) for _ in range(n))
            return await asyncio.gather(*calls, return_exceptions=True)

        errors = run(fail(1)) + run(fail(3))
        assert all(isinstance(e, EngineError) for e in errors)  # inline failures answer 503 too
        assert len([r for r in caplog.records if "(1 requests)" in r.message]) == 1
        assert len([r for r in caplog.records if "(3 requests)" in r.message]) == 1  # logged once


def test_inline_rows_apply_to_cpu_providers_only(bundle_dirs):
    from serving.config import Settings
    from serving.registry import load_bundles

    assert Settings().inline_rows == 8
    assert Settings.from_env({"GAN_INLINE_ROWS": "0"}).inline_rows == 0
    loaded = load_bundles(Settings(bundles=[str(bundle_dirs["dcgan"])], allow_ungated=True))
    cpu = Engine(loaded, inline_rows=8)
    assert [b.inline_rows for b in cpu._render.values()] == [8]
    for b in loaded.values():
        b.provider = "CUDAExecutionProvider"  # on a GPU every call batches
    assert [b.inline_rows for b in Engine(loaded, inline_rows=8)._render.values()] == [0]


def test_slow_models_never_run_on_the_loop(bundle_dirs, monkeypatch):
    import serving.engine as engine_mod
    from serving.config import Settings
    from serving.registry import load_bundles

    loaded = load_bundles(Settings(bundles=[str(bundle_dirs["dcgan"])], allow_ungated=True))
    eng = Engine(loaded, inline_rows=8)
    eng.warm_up(sizes=(1,))
    assert [b.inline_rows for b in eng._render.values()] == [8]  # a tiny model: cheap
    monkeypatch.setattr(engine_mod, "INLINE_MAX_MS", 0.0)  # every model is now "slow"
    eng.warm_up(sizes=(1,))
    assert [b.inline_rows for b in eng._render.values()] == [0]
