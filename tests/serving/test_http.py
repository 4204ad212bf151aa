"""In-process HTTP tests: ``TestClient(GanService.to_asgi())``, real validation and middleware."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from export import sampling
from export.bundle import load
from export.images import to_uint8
from tests.serving.conftest import in_process, serving_env


def png_pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_models_lists_what_is_served(client, names):
    r = client.post("/models", json={})
    assert r.status_code == 200
    body = r.json()
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
    assert body["count"] == 3 and body["filter"]["method"] == "none"
    bundle = load(bundle_dirs["dcgan"], require_gate=False)
    want = to_uint8(sampling.generate(bundle, [40, 41, 42]))
    for img, pix in zip(body["images"], want):
        assert img["class"] is None and img["style"] is None and isinstance(img["score"], float)
        np.testing.assert_array_equal(png_pixels(img["png"]), pix[..., 0])
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
    ("/generate", {"model": "@dcgan", "n": 0}, 400, "n"),
    ("/generate", {"model": "@dcgan", "n": "3"}, 400, "n"),
    ("/generate", {"model": "@dcgan", "seed": -1}, 400, "seed"),
    ("/generate", {"model": "@dcgan", "seed": 1.5}, 400, "seed"),
    ("/generate", {"model": "@dcgan", "seeds": [1, -2]}, 400, "seeds"),
    ("/generate", {"model": "@dcgan", "seeds": list(range(65))}, 422, "seeds"),
    ("/generate", {"model": "@dcgan", "truncation": 1.5}, 422, "truncation"),
    ("/generate", {"model": "@dcgan", "truncation": "high"}, 400, "truncation"),
    ("/generate", {"model": "@stylegan", "truncation": 5}, 400, "truncation"),
    ("/generate", {"model": "@dcgan", "output": "zip"}, 400, "output"),
    ("/generate", {"model": "@dcgan", "filter": {"method": "best"}}, 400, "filter"),
    (
        "/generate",
        {"model": "@dcgan", "n": 64, "filter": {"method": "top_k", "oversample": 9}},
        422,
        "filter.oversample",
    ),
    ("/generate", {"model": 3}, 400, "model"),
    ("/generate", {}, 400, "model"),
    ("/generate_conditional", {"model": "@cgan", "class_label": 10}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": -1}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": "ten"}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan", "class_label": 1.5}, 400, "class_label"),
    ("/generate_conditional", {"model": "@dcgan", "class_label": 1}, 422, "class_label"),
    ("/generate_conditional", {"model": "@cgan"}, 400, "class_label"),
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
    ("/interpolate", {"model": "@dcgan", "seeds": [1]}, 400, "seeds"),
    ("/interpolate", {"model": "@dcgan", "seeds": [1, 2], "steps": 1000}, 422, "steps"),
]


@pytest.mark.parametrize("path, body, status, field", BAD)
def test_bad_requests_get_4xx_naming_the_field(client, names, path, body, status, field):
    if isinstance(body.get("model"), str) and body["model"].startswith("@"):
        body = {**body, "model": names[body["model"][1:]]}
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()
    if status == 400:  # BentoML's pydantic errors: {"error", "detail": [{"loc", "msg"}]}
        assert any(d["loc"][:1] == [field] for d in err["detail"]), err
    else:
        assert err["field"] == field and err["error"], err


def test_malformed_json_and_huge_bodies(client, names):
    r = client.post(
        "/generate", content=b'{"model": ', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["detail"][0]["type"] == "json_invalid"
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
        assert c.post("/models", json={}).status_code == 401
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
        assert c.post("/models", json={}).json()["limits"]["max_n"] == 4


def test_openapi_and_quiet_logs_for_client_mistakes(client, names, caplog):
    spec = client.get("/docs.json")
    assert spec.status_code == 200
    assert {"/generate", "/generate_conditional", "/style_mix", "/interpolate", "/models"} <= set(
        spec.json()["paths"]
    )
    caplog.clear()
    assert client.post("/generate", json={"model": names["dcgan"], "n": "x"}).status_code == 400
    assert not [r for r in caplog.records if r.levelno >= 40 and r.exc_info]


def test_public_endpoints_refuse_pickled_bodies(client, names):
    import pickle

    body = pickle.dumps({"model": names["dcgan"]})
    r = client.post(
        "/generate", content=body, headers={"content-type": "application/vnd.bentoml+pickle"}
    )
    assert r.status_code == 415
