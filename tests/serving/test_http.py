"""In-process HTTP tests: ``TestClient(GanService.to_asgi())``, real validation and middleware."""

from __future__ import annotations

import base64
import io
import logging

import numpy as np
import pytest
from PIL import Image, ImageSequence

from gancore import sampling
from gancore.bundle import load
from gancore.images import to_uint8
from serving.schemas import ErrorBody, ImagesResponse, ModelsResponse
from tests.serving.conftest import in_process, serving_env


def png_pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_models_lists_what_is_served(client, names):
    r = client.get("/models")
    assert r.status_code == 200
    body = r.json()
    ModelsResponse.model_validate(body)
    assert body["formats"] == ["png", "webp", "jpeg"]
    models = {m["name"]: m for m in body["models"]}
    assert set(models) == set(names.values())
    style = models[names["stylegan"]]
    assert style["kind"] == "stylegan" and style["num_ws"] > 0
    assert set(style["style_ranges"]) >= {"coarse", "middle", "fine"}
    cgan = models[names["cgan"]]
    assert cgan["conditional"] and len(cgan["classes"]) == 10
    for m in models.values():
        assert m["provider"] == "CPUExecutionProvider"
        assert {"passed", "verdict"} <= set(m["gate"]) and "ungated" in m
    assert body["default_filter"] == "none" and body["limits"]["max_n"] == 64


def test_generate_returns_the_seeds_images(client, names, bundle_dirs):
    r = client.post("/generate", json={"model": names["dcgan"], "n": 3, "seed": 40})
    assert r.status_code == 200, r.text
    body = r.json()
    ImagesResponse.model_validate(body)
    assert body["count"] == 3 and body["filter"]["method"] == "none"
    assert body["format"] == "png" and body["media_type"] == "image/png"
    bundle = load(bundle_dirs["dcgan"], require_gate=False)
    want = to_uint8(sampling.generate(bundle, [40, 41, 42]))
    for img, pix in zip(body["images"], want):
        assert img["class"] is None and img["style"] is None and isinstance(img["score"], float)
        np.testing.assert_array_equal(png_pixels(img["data"]), pix[..., 0])
    assert [i["seed"] for i in body["images"]] == [40, 41, 42]
    r = client.post("/generate", json={"model": names["dcgan"], "seeds": [7, 3]})
    assert [i["seed"] for i in r.json()["images"]] == [7, 3]


def test_generate_grid_is_one_png(client, names):
    r = client.post("/generate", json={"model": names["stylegan"], "n": 4, "output": "grid"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size[0] > 2 * 16  # a 2x2 grid of 16px images


def test_generate_conditional(client, names):
    r = client.post(
        "/generate_conditional",
        json={"model": names["cgan"], "class_label": [1, "3"], "n": 2, "seed": 5},
    )
    assert r.status_code == 200, r.text
    imgs = r.json()["images"]
    assert [(i["seed"], i["class"]["index"]) for i in imgs] == [(5, 1), (6, 1), (5, 3), (6, 3)]
    r = client.post("/generate_conditional", json={"model": names["cgan"], "class_label": "9"})
    assert r.json()["images"][0]["class"] == {"index": 9, "name": "9"}


def test_style_mix(client, names):
    r = client.post(
        "/style_mix",
        json={
            "model": names["stylegan"],
            "row_seeds": [1, 2],
            "col_seeds": [3],
            "col_styles": "fine",
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    sources = [i["style"]["source"] for i in body["images"]]
    assert sources == ["col", "row", "mix", "row", "mix"]
    r = client.post(
        "/style_mix",
        json={
            "model": names["stylegan"],
            "row_seeds": [1],
            "col_seeds": [3, 4],
            "col_styles": [0, 1],
            "output": "grid",
        },
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_interpolate(client, names):
    for model, space in ((names["dcgan"], "z"), (names["stylegan"], "w")):
        r = client.post(
            "/interpolate", json={"model": model, "seeds": [1, 2], "steps": 5, "space": space}
        )
        assert r.status_code == 200, r.text
        ts = [i["style"]["t"] for i in r.json()["images"]]
        assert ts == [0.0, 0.25, 0.5, 0.75, 1.0]


ANIM = {"model": "@dcgan", "seeds": [1, 5, 9], "output": "animation"}


def frames_of(data: bytes) -> list[np.ndarray]:
    anim = Image.open(io.BytesIO(data))
    return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(anim)]


def test_interpolate_animation_walks_through_the_seeds(client, names, bundle_dirs):
    body = {"model": names["dcgan"], "seeds": [1, 5, 9], "output": "animation", "frames": 3,
            "loop": True, "fps": 20}  # fmt: skip
    r = client.post("/interpolate", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif", r.text
    assert client.post("/interpolate", json=body).content == r.content  # same request, same bytes
    bundle = load(bundle_dirs["dcgan"], require_gate=False)
    want = to_uint8(sampling.walk(bundle, [1, 5, 9], 3, loop=True))
    got = frames_of(r.content)
    assert len(got) == 9 and Image.open(io.BytesIO(r.content)).info["duration"] == 50
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g[..., 0], w[..., 0])
    r = client.post(
        "/interpolate",
        json={"model": names["stylegan"], "seeds": [1, 2], "output": "animation", "frames": 4,
              "space": "w", "truncation": 0.7, "format": "webp", "scale": 2},
    )  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "image/webp", r.text
    got = frames_of(r.content)
    stylegan = load(bundle_dirs["stylegan"], require_gate=False)
    want = to_uint8(sampling.walk(stylegan, [1, 2], 4, space="w", truncation=0.7))
    assert len(got) == 5 and got[0].shape[0] == 2 * want.shape[1]
    for g, w in zip(got, want):  # lossless webp
        np.testing.assert_array_equal(g[::2, ::2], np.broadcast_to(w, g[::2, ::2].shape))


def test_gan_max_frames_caps_an_animation(bundle_dirs, names):
    with in_process(serving_env(bundle_dirs.values(), GAN_MAX_FRAMES="8")) as c:
        assert c.get("/models").json()["limits"]["max_frames"] == 8
        body = {"model": names["dcgan"], "seeds": [1, 2], "output": "animation", "frames": 7}
        assert c.post("/interpolate", json=body).status_code == 200  # 7 + the last seed
        r = c.post("/interpolate", json={**body, "loop": True, "frames": 5})  # 10 frames
        assert r.status_code == 422 and r.json()["field"] == "frames"
        assert "10 frames: at most 8 allowed (GAN_MAX_FRAMES)" in r.json()["error"]


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_gan_sample_walk_writes_the_servers_frames(client, names, bundle_dirs, tmp_path, fmt):
    from export.sample_cli import main as sample_main

    out = tmp_path / f"walk.{fmt}"
    argv = [str(bundle_dirs["cgan"]), "--walk", "3,1,4", "--frames", "5", "--loop", "--fps", "8",
            "--class", "2", "--out", str(out)]  # fmt: skip
    assert sample_main(argv) == 0
    body = {"model": names["cgan"], "seeds": [3, 1, 4], "output": "animation", "frames": 5,
            "loop": True, "fps": 8, "class_label": 2, "format": fmt}  # fmt: skip
    r = client.post("/interpolate", json=body)
    assert r.status_code == 200, r.text
    assert r.content == out.read_bytes()
    served, written = frames_of(r.content), frames_of(out.read_bytes())
    assert len(served) == len(written) == 15
    for a, b in zip(served, written):
        np.testing.assert_array_equal(a, b)


def test_filters_report_acceptance(client, names):
    r = client.post(
        "/generate",
        json={"model": names["dcgan"], "n": 4, "filter": {"method": "drs", "oversample": 8}},
    )
    assert r.status_code == 200, r.text
    f = r.json()["filter"]
    assert f["method"] == "drs" and f["returned"] == 4 and 0 < f["acceptance_rate"] <= 1
    r2 = client.post(
        "/generate",
        json={"model": names["dcgan"], "n": 4, "filter": {"method": "drs", "oversample": 8}},
    )
    assert r2.json() == r.json()  # reproducible
    r = client.post(
        "/generate",
        json={"model": names["dcgan"], "n": 2, "filter": {"method": "top_k", "oversample": 4}},
    )
    assert r.json()["filter"]["acceptance_rate"] == 0.25


BAD = [
    ("/generate", {"model": "nope"}, 404, "model"),
    ("/generate", {"model": "@dcgan", "n": 65}, 422, "n"),
    ("/generate", {"model": "@dcgan", "n": 0}, 422, "n"),
    ("/generate", {"model": "@dcgan", "n": "3"}, 422, "n"),
    ("/generate", {"model": "@dcgan", "seed": -1}, 422, "seed"),
    ("/generate", {"model": "@dcgan", "seed": 1.5}, 422, "seed"),
    ("/generate", {"model": "@dcgan", "seeds": [1, -2]}, 422, "seeds"),
    ("/generate", {"model": "@dcgan", "seeds": list(range(65))}, 422, "seeds"),
    ("/generate", {"model": "@dcgan", "truncation": 1.5}, 422, "truncation"),
    # Once a hang: tiny psi made the truncated-normal redraw loop run for minutes on the event loop.
    (
        "/generate",
        {"model": "@dcgan", "truncation": 1e-300, "filter": {"method": "drs"}},
        422,
        "truncation",
    ),
    (
        "/generate_conditional",
        {"model": "@cgan", "class_label": 1, "truncation": 0.01},
        422,
        "truncation",
    ),
    ("/generate", {"model": "@dcgan", "truncation": "high"}, 422, "truncation"),
    ("/generate", {"model": "@stylegan", "truncation": 5}, 422, "truncation"),
    ("/generate", {"model": "@dcgan", "output": "zip"}, 422, "output"),
    ("/generate", {"model": "@dcgan", "filter": {"method": "best"}}, 422, "filter.method"),
    (
        "/generate",
        {"model": "@dcgan", "n": 64, "filter": {"method": "top_k", "oversample": 9}},
        422,
        "filter.oversample",
    ),
    ("/generate", {"model": 3}, 422, "model"),
    ("/generate", {}, 422, "model"),
    ("/generate_conditional", {"model": "@cgan", "class_label": 10}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": -1}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": "ten"}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": 1.5}, 422, "class_label"),
    ("/generate_conditional", {"model": "@dcgan", "class_label": 1}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan"}, 422, "class_label"),
    ("/style_mix", {"model": "@dcgan", "row_seeds": [1], "col_seeds": [2]}, 422, "model"),
    (
        "/style_mix",
        {"model": "@stylegan", "row_seeds": [1], "col_seeds": [2], "col_styles": [99]},
        422,
        "col_styles",
    ),
    (
        "/style_mix",
        {"model": "@stylegan", "row_seeds": [1], "col_seeds": [2], "col_styles": "tiny"},
        422,
        "col_styles",
    ),
    (
        "/style_mix",
        {"model": "@stylegan", "row_seeds": list(range(20)), "col_seeds": list(range(20))},
        422,
        "row_seeds",
    ),
    ("/style_mix", {"model": "@stylegan", "row_seeds": [], "col_seeds": [2]}, 422, "row_seeds"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2], "space": "w"}, 422, "space"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1]}, 422, "seeds"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2], "steps": 1000}, 422, "steps"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2, 3]}, 422, "seeds"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2], "loop": True}, 422, "loop"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2], "format": "gif"}, 422, "format"),
    ("/interpolate", {**ANIM, "seeds": [1]}, 422, "seeds"),
    ("/interpolate", {**ANIM, "frames": 0}, 422, "frames"),
    ("/interpolate", {**ANIM, "frames": 200}, 422, "frames"),  # 401 frames > max_frames
    ("/interpolate", {**ANIM, "fps": 0}, 422, "fps"),
    ("/interpolate", {**ANIM, "fps": 51}, 422, "fps"),
    ("/interpolate", {**ANIM, "format": "jpeg"}, 422, "format"),
    ("/interpolate", {**ANIM, "steps": 4}, 422, "steps"),
    ("/interpolate", {**ANIM, "space": "w"}, 422, "space"),
    ("/interpolate", {**ANIM, "scale": 99}, 422, "scale"),
]


@pytest.mark.parametrize("path, body, status, field", BAD)
def test_bad_requests_get_4xx_naming_the_field(client, names, path, body, status, field):
    if isinstance(body.get("model"), str) and body["model"].startswith("@"):
        body = {**body, "model": names[body["model"][1:]]}
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()
    ErrorBody.model_validate(err)
    assert err["error"] and (err["field"] == field or err["field"].startswith(field + "[")), err


def test_malformed_json_and_huge_bodies(client, names):
    r = client.post(
        "/generate", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"
    assert r.json()["field"] == "body"
    r = client.post("/generate", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post(
        "/generate", content=b" " * 1_000_001, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["field"] == "body"
    # ...and the server carries on
    r = client.post("/generate", json={"model": names["dcgan"]})
    assert r.status_code == 200


def test_probes_and_metrics(client, names):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    client.post("/generate", json={"model": names["cgan"], "n": 2})
    text = client.get("/metrics").text
    assert f'ganforge_images_generated_total{{endpoint="generate",model="{names["cgan"]}"}}' in text
    assert "ganforge_engine_batch_size_bucket" in text
    assert "bentoml_service_request_total" in text


def test_api_key_guards_everything_but_the_probes(bundle_dirs, names):
    with in_process(serving_env([bundle_dirs["dcgan"]], GAN_API_KEY="k3y")) as c:
        assert c.get("/livez").status_code == 200
        assert c.get("/readyz").status_code == 200
        body = {"model": names["dcgan"]}
        assert c.post("/generate", json=body).status_code == 401
        assert c.get("/models").status_code == 401
        assert c.get("/metrics").status_code == 401
        bad = c.post("/generate", json=body, headers={"Authorization": "Bearer wrong"})
        assert bad.status_code == 401 and bad.json()["field"] == "Authorization"
        ok = c.post("/generate", json=body, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200


def test_configurable_limits(bundle_dirs, names):
    env = serving_env([bundle_dirs["dcgan"]], GAN_MAX_N="4", GAN_MAX_BODY_BYTES="200")
    with in_process(env) as c:
        r = c.post("/generate", json={"model": names["dcgan"], "n": 5})
        assert r.status_code == 422 and "at most 4" in r.json()["error"]
        assert (
            c.post("/generate", json={"model": names["dcgan"], "seeds": [1] * 200}).status_code
            == 413
        )
        assert c.get("/models").json()["limits"]["max_n"] == 4


def test_openapi_and_quiet_logs_for_client_mistakes(client, names, caplog):
    spec = client.get("/docs.json")
    assert spec.status_code == 200
    assert {"/generate", "/generate_conditional", "/style_mix", "/interpolate", "/models"} <= set(
        spec.json()["paths"]
    )
    caplog.clear()
    assert client.post("/generate", json={"model": names["dcgan"], "n": "x"}).status_code == 422
    assert not [r for r in caplog.records if r.levelno >= 40 and r.exc_info]


def test_public_endpoints_refuse_pickled_bodies(client, names):
    import pickle

    body = pickle.dumps({"model": names["dcgan"]})
    r = client.post(
        "/generate", content=body, headers={"content-type": "application/vnd.bentoml+pickle"}
    )
    assert r.status_code == 415


# -- the API contract: binary images, content types, engine errors, the OpenAPI document ----------
@pytest.mark.parametrize("fmt, pil", [("png", "PNG"), ("webp", "WEBP"), ("jpeg", "JPEG")])
def test_binary_image_and_grid_in_each_format(client, names, bundle_dirs, fmt, pil):
    body = {"model": names["dcgan"], "seed": 5, "output": "image", "format": fmt, "scale": 3}
    r = client.post("/generate", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == f"image/{fmt}"
    img = Image.open(io.BytesIO(r.content))
    res = load(bundle_dirs["dcgan"], require_gate=False).resolution
    assert img.format == pil and img.size == (3 * res, 3 * res)
    if fmt == "png":  # lossless: exactly the seed's pixels, each repeated 3x3 (nearest)
        want = to_uint8(sampling.generate(load(bundle_dirs["dcgan"], require_gate=False), [5]))
        want = np.repeat(np.repeat(want[0, ..., 0], 3, axis=0), 3, axis=1)
        np.testing.assert_array_equal(np.asarray(img), want)
    r = client.post(
        "/generate",
        json={"model": names["dcgan"], "n": 4, "output": "grid", "format": fmt, "scale": 2},
    )
    assert r.status_code == 200 and r.headers["content-type"] == f"image/{fmt}"
    grid = Image.open(io.BytesIO(r.content))
    assert grid.size[0] == 2 * (2 * (res + 2) + 2)  # 2x2 cells with 2-px padding, scaled 2x
    r = client.post("/generate", json={"model": names["dcgan"], "format": fmt, "quality": 50})
    assert r.status_code == 200 and r.json()["media_type"] == f"image/{fmt}"


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"format": "gif"}, "format"),
        ({"quality": 0}, "quality"),
        ({"quality": 101}, "quality"),
        ({"output": "grid", "scale": 9}, "scale"),  # GAN_MAX_SCALE default 8
        ({"output": "grid", "scale": 0}, "scale"),
        ({"scale": 2}, "scale"),  # scale applies to binary output only
        ({"output": "image", "n": 2}, "output"),  # one image only
    ],
)
def test_bad_image_options_are_422_naming_the_field(client, names, extra, field):
    r = client.post("/generate", json={"model": names["dcgan"], **extra})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field and r.json()["error"]


def test_style_mix_grid_over_the_limit_is_422(client, names):
    seeds = list(range(16))
    r = client.post(
        "/style_mix",
        json={"model": names["stylegan"], "row_seeds": seeds, "col_seeds": seeds, "output": "grid"},
    )
    assert r.status_code == 422 and r.json()["field"] == "row_seeds"
    assert "at most 256" in r.json()["error"]


@pytest.mark.parametrize(
    "content_type, status",
    [
        ("multipart/form-data", 415),  # no boundary: BentoML's own handlers answered 500
        ("multipart/form-data; boundary=x", 415),
        ("application/x-www-form-urlencoded", 415),
        ("text/plain", 415),
        ("nonsense", 400),
        ("/json", 400),
    ],
)
def test_unsupported_or_malformed_content_type(client, names, content_type, status):
    for path in ("/generate", "/generate_conditional", "/style_mix", "/interpolate"):
        r = client.post(path, content=b'{"model": "x"}', headers={"content-type": content_type})
        assert r.status_code == status, (path, r.text)
        assert r.json()["field"] == "Content-Type"
    ok = client.post(
        "/generate",
        content=b'{"model": "%s"}' % names["dcgan"].encode(),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200


def test_engine_failure_is_503_logged_once_and_the_server_keeps_serving(
    client, names, caplog, monkeypatch
):
    from serving.app import bound

    svc = bound()
    batcher = svc.engine._render[names["dcgan"]]
    real = batcher.run

    def broken(*args):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected failure")

    caplog.set_level(logging.ERROR, logger="ganforge.serving")
    monkeypatch.setattr(batcher, "run", broken)
    r = client.post("/generate", json={"model": names["dcgan"], "n": 3})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    ErrorBody.model_validate(r.json())
    assert len([x for x in caplog.records if "injected failure" in x.message]) == 1
    monkeypatch.setattr(batcher, "run", real)
    assert client.post("/generate", json={"model": names["dcgan"]}).status_code == 200


def test_openapi_declares_response_models_images_and_errors(client):
    spec = client.get("/docs.json").json()
    assert spec["openapi"].startswith("3.1")
    for path in ("/generate", "/generate_conditional", "/style_mix", "/interpolate"):
        op = spec["paths"][path]["post"]
        ok = op["responses"]["200"]["content"]
        assert ok["application/json"]["schema"]["$ref"].endswith("/ImagesResponse")
        assert {"image/png", "image/webp", "image/jpeg"} <= set(ok)
        assert {"400", "401", "404", "413", "415", "422", "503"} <= set(op["responses"])
        assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "/ErrorBody"
        )
    assert "get" in spec["paths"]["/models"]
    image = spec["components"]["schemas"]["ImageOut"]["properties"]
    assert {"seed", "class", "style", "score", "data"} <= set(image)
    assert "FilterReport" in spec["components"]["schemas"]


def test_models_and_its_documented_schema_have_the_same_fields(client):
    served = client.get("/models").json()["models"]
    documented = client.get("/docs.json").json()["components"]["schemas"]["ModelOut"]
    assert "latent_code" in documented["properties"]
    for model in served:
        assert set(model) == set(documented["properties"]), model["name"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("POST", "/models", "GET"), ("GET", "/generate", "POST"), ("PUT", "/style_mix", "POST")],
)
def test_a_method_a_route_does_not_take_is_405_in_the_error_shape(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    ErrorBody.model_validate(body)
    assert body["field"] == "method"
    assert method in body["error"] and path in body["error"] and allowed in body["error"]
    assert allowed in r.headers["allow"]


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/models/x")])
def test_a_path_nobody_serves_is_404_in_the_error_shape(client, method, path):
    r = client.request(method, path)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    body = r.json()
    ErrorBody.model_validate(body)
    assert body["field"] == "path" and repr(path) in body["error"] and "/generate" in body["error"]
    r = client.post("/generate", json={"model": "missing"})  # a JSON 404 passes unchanged
    assert r.status_code == 404 and "missing" in r.json()["error"] and r.json()["field"] == "model"
