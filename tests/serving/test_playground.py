"""The playground page (GET /playground) in a real headless Chromium against a real
``bentoml serve`` with an API key: the page asks for the key, lists the models, generates, follows
the truncation slider, filters, renders a style-mixing grid and an interpolation strip, and shows
the server's own error message beside the field it names. Every image the page shows is checked
byte for byte against what the API returns for the same request."""

from __future__ import annotations

import base64
import os
import re
import shutil

import httpx
import pytest

from tests.serving.conftest import REPO, in_process, real_server, serving_env

KEY = "playground-key-42"
AUTH = {"Authorization": f"Bearer {KEY}"}
WAIT_S = 30


def _browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    missing = [n for n, p in (("chromium", chromium), ("chromium-driver", driver)) if not p]
    if os.geteuid() == 0 and shutil.which("apt-get"):  # installable: `make test` does it
        pytest.fail(
            f"{' and '.join(missing)} not installed: `make browser` (part of `make test`) installs "
            "them with apt-get"
        )
    pytest.skip(
        f"{' and '.join(missing)} not installed and apt-get needs root here: "
        "install Debian's chromium and chromium-driver to run the browser test"
    )


def test_page_files_are_served_open_and_reference_only_this_server(bundle_dirs):
    """In-process: the page's three files, open without the key the API needs, and nothing in
    them that would load from elsewhere (no URL with a scheme or host: it works offline)."""
    static = REPO / "serving" / "static"
    with in_process(serving_env(bundle_dirs.values(), GAN_API_KEY=KEY)) as c:
        for path, name, media in (
            ("/playground", "playground.html", "text/html"),
            ("/playground/playground.js", "playground.js", "text/javascript"),
            ("/playground/playground.css", "playground.css", "text/css"),
        ):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
            assert r.content == (static / name).read_bytes()
            assert "default-src 'none'" in r.headers["content-security-policy"]
            refs = re.findall(r"""(?:src|href)=["']([^"']*)|url\(([^)]*)\)""", r.text)
            for ref in (x for group in refs for x in group if x):
                assert ref.startswith(("/", "data:")), (path, ref)
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", r.text), path
        assert c.get("/models").status_code == 401
        assert c.post("/generate", json={}).status_code == 401


@pytest.fixture(scope="module")
def server(bundle_dirs):
    with real_server(serving_env(bundle_dirs.values(), GAN_API_KEY=KEY)) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    chromium, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1100", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def api(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers=AUTH, timeout=60)


def shown(browser) -> list[dict]:
    """What the page shows: per image its data attributes, caption and decoded bytes."""
    cards = browser.execute_script(
        """return Array.from(document.querySelectorAll('#images figure.card')).map(f => ({
            seed: f.dataset.seed, score: f.dataset.score, cls: f.dataset.class,
            source: f.dataset.source || null, src: f.querySelector('img').src,
            href: f.querySelector('a.download').href,
            file: f.querySelector('a.download').getAttribute('download'),
            caption: f.querySelector('figcaption').innerText}))"""
    )
    for c in cards:
        head, _, data = c["src"].partition(",")
        assert head == "data:image/png;base64" and c["href"] == c["src"]
        c["bytes"] = base64.b64decode(data)
    return cards


def api_bytes(answer: dict) -> list[bytes]:
    return [base64.b64decode(i["data"]) for i in answer["images"]]


def wait_for(browser, script: str, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script(script), what)


def run_and_wait(browser, tab: str, count: int) -> list[dict]:
    """Submit ``tab``'s form and wait until its answer (``count`` images) is shown."""
    browser.execute_script("document.getElementById('images').replaceChildren()")
    browser.find_element("css selector", f"#tab-{tab} button.go").click()
    wait_for(
        browser,
        f"return document.querySelectorAll('#images figure.card').length === {count} "
        "&& !document.body.classList.contains('busy')",
        f"{count} images on the {tab} tab",
    )
    return shown(browser)


def fill(browser, element_id: str, text: str) -> None:
    el = browser.find_element("id", element_id)
    el.clear()
    el.send_keys(text)


def choose_model(browser, name: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "model")).select_by_value(name)


def tab(browser, name: str) -> None:
    browser.find_element("css selector", f'.tabs [data-tab="{name}"]').click()


def error_beside(browser, form: str, field: str) -> str:
    return wait_for(
        browser,
        f"""const el = document.querySelector('#{form} .err[data-field="{field}"]');
            return el && el.textContent""",
        f"an error beside {field}",
    )


@pytest.mark.slow
def test_playground_in_a_real_browser(server, browser, names, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    page = httpx.get(f"{server.url}/playground")  # open without the key: the page holds no data
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "'self'" in page.headers["content-security-policy"]
    assert httpx.get(f"{server.url}/models").status_code == 401  # the API itself is not open

    browser.get(f"{server.url}/playground")
    # 1. the server needs a key: the page asks for it, with the server's 401 message beside it
    key_error = error_beside(browser, "connect", "Authorization")
    assert "API key" in key_error and key_error.startswith("401: ")
    fill(browser, "api-key", KEY)
    browser.find_element("id", "use-key").click()
    wait_for(browser, "return !document.getElementById('app').hidden", "the app after the key")
    assert browser.execute_script(
        "return [location.href, localStorage.length, sessionStorage.length, document.cookie, "
        "document.getElementById('api-key').value]"
    ) == [f"{server.url}/playground", 0, 0, "", ""]  # the key is nowhere but in memory
    options = [
        o.get_attribute("value") for o in Select(browser.find_element("id", "model")).options
    ]
    assert sorted(options) == sorted(names.values())

    # 2. the model panel: kind, resolution, gate verdict, provider
    choose_model(browser, names["dcgan"])
    info = browser.find_element("id", "model-info").text
    assert "DCGAN" in info and "CPUExecutionProvider" in info
    models = httpx.get(f"{server.url}/models", headers=AUTH).json()["models"]
    dcgan = next(m for m in models if m["name"] == names["dcgan"])
    assert (
        f"{dcgan['resolution']}×{dcgan['resolution']}" in info and dcgan["gate"]["verdict"] in info
    )

    # 3. generate a seed range: the same bytes, seeds and scores as the API's answer
    fill(browser, "seed", "5")
    fill(browser, "n", "4")
    cards = run_and_wait(browser, "generate", 4)
    answer = api(server, "/generate", {"model": names["dcgan"], "seed": 5, "n": 4}).json()
    assert [c["bytes"] for c in cards] == api_bytes(answer)
    assert [c["seed"] for c in cards] == ["5", "6", "7", "8"]
    assert [float(c["score"]) for c in cards] == [i["score"] for i in answer["images"]]
    assert cards[0]["caption"].splitlines()[0] == "seed 5" and "D " in cards[0]["caption"]
    assert cards[0]["file"] == f"{names['dcgan']}-seed5.png"
    one = httpx.post(  # the binary endpoint gives the same PNG for the same seed
        f"{server.url}/generate",
        json={"model": names["dcgan"], "seed": 5, "output": "image"},
        headers=AUTH,
    )
    assert one.content == cards[0]["bytes"]

    # 4. moving the truncation slider (keyboard, 6 steps of 0.05) regenerates at the new psi
    slider = browser.find_element("id", "truncation")
    slider.send_keys(*[Keys.ARROW_LEFT] * 6)
    wait_for(
        browser,
        "const b = document.getElementById('images'); return b.dataset.truncation === '0.7' "
        "&& b.querySelectorAll('figure.card').length === 4 && !document.body.classList.contains('busy')",
        "images at truncation 0.7",
    )
    assert browser.find_element("id", "truncation-value").text == "0.70"
    truncated = shown(browser)
    answer = api(
        server, "/generate", {"model": names["dcgan"], "seed": 5, "n": 4, "truncation": 0.7}
    ).json()
    assert [c["bytes"] for c in truncated] == api_bytes(answer)
    assert [c["bytes"] for c in truncated] != [c["bytes"] for c in cards]

    # 5. quality filter with oversampling: the acceptance rate is shown
    Select(browser.find_element("id", "filter-method")).select_by_value("top_k")
    fill(browser, "oversample", "4")
    cards = run_and_wait(browser, "generate", 4)
    body = {"model": names["dcgan"], "seed": 5, "n": 4, "truncation": 0.7}
    body["filter"] = {"method": "top_k", "oversample": 4}
    answer = api(server, "/generate", body).json()
    assert [c["bytes"] for c in cards] == api_bytes(answer)
    assert answer["filter"]["acceptance_rate"] == 0.25
    assert (
        "top_k filter: 4 of 16 kept, acceptance rate 25.0%"
        in browser.find_element("id", "report").text
    )
    Select(browser.find_element("id", "filter-method")).select_by_value("none")

    # 6. a server error is shown beside the field it names, in the server's words
    fill(browser, "n", "1000")
    browser.find_element("css selector", "#tab-generate button.go").click()
    shown_error = error_beside(browser, "tab-generate", "n")
    bad = api(
        server, "/generate", {"model": names["dcgan"], "seed": 5, "n": 1000, "truncation": 0.7}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "n"
    assert shown_error == f"422: {bad.json()['error']}"
    browser.find_element("css selector", "input[name=seed-mode][value=list]").click()
    fill(browser, "seeds", "3, x")
    browser.find_element("css selector", "#tab-generate button.go").click()
    assert "seeds[1]" in error_beside(browser, "tab-generate", "seeds")  # field seeds[1] -> seeds
    fill(browser, "seeds", str(2**63 - 1))  # the largest seed, past JavaScript's safe integers
    (card,) = run_and_wait(browser, "generate", 1)
    answer = api(
        server, "/generate", {"model": names["dcgan"], "seeds": [2**63 - 1], "truncation": 0.7}
    )
    assert card["seed"] == str(2**63 - 1) and [card["bytes"]] == api_bytes(answer.json())
    browser.find_element("css selector", "input[name=seed-mode][value=range]").click()
    fill(browser, "n", "2")

    # 7. a conditional model: the class picker, each image's class
    choose_model(browser, names["cgan"])
    browser.find_element("css selector", '#classes input[value="1"]').click()
    cards = run_and_wait(browser, "generate", 2)
    cgan = next(m for m in models if m["name"] == names["cgan"])
    answer = api(
        server,
        "/generate_conditional",
        {"model": names["cgan"], "seed": 5, "n": 2, "truncation": 0.7, "class_label": 1},
    ).json()
    assert [c["bytes"] for c in cards] == api_bytes(answer)
    assert [c["cls"] for c in cards] == ["1", "1"]
    name = cgan["classes"][1]
    assert ("class 1" if name == "1" else f"class 1 · {name}") in cards[0]["caption"].splitlines()

    # 8. the style-mixing grid of a StyleGAN-lite model: row seeds x column seeds, coarse layers
    choose_model(browser, names["stylegan"])
    tab(browser, "style_mix")
    fill(browser, "row-seeds", "1, 2")
    fill(browser, "col-seeds", "3-5")
    Select(browser.find_element("id", "col-styles")).select_by_value("coarse")
    cells = run_and_wait(browser, "style_mix", 3 + 2 * 4)  # 3 column images, 2 rows of 1 + 3
    answer = api(
        server,
        "/style_mix",
        {
            "model": names["stylegan"],
            "row_seeds": [1, 2],
            "col_seeds": [3, 4, 5],
            "col_styles": "coarse",
            "truncation": 0.7,
        },  # fmt: skip
    ).json()
    assert [c["bytes"] for c in cells] == api_bytes(answer)
    assert [c["source"] for c in cells] == ["col"] * 3 + (["row"] + ["mix"] * 3) * 2
    assert cells[4]["caption"].splitlines()[0] == "row 1 × col 3"
    shot = tmp_path / "playground-style-mix.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a layer range the model does not have: the server's message beside the styles field
    Select(browser.find_element("id", "col-styles")).select_by_value("custom")
    fill(browser, "col-layers", "0-99")
    browser.find_element("css selector", "#tab-style_mix button.go").click()
    assert "outside" in error_beside(browser, "tab-style_mix", "col_styles")

    # 9. the interpolation strip between two seeds in w
    tab(browser, "interpolate")
    fill(browser, "from-seed", "1")
    fill(browser, "to-seed", "9")
    fill(browser, "steps", "5")
    browser.find_element("id", "space-w").click()
    strip = run_and_wait(browser, "interpolate", 5)
    answer = api(
        server,
        "/interpolate",
        {"model": names["stylegan"], "seeds": [1, 9], "steps": 5, "space": "w", "truncation": 0.7},
    ).json()
    assert [c["bytes"] for c in strip] == api_bytes(answer)
    assert strip[0]["caption"].splitlines()[0] == "1→9 t=0.00"
    browser.save_screenshot(str(tmp_path / "playground-interpolation.png"))

    # 10. the latent walk: one looping animation, shown and offered for download
    browser.execute_script("document.getElementById('images').replaceChildren()")
    fill(browser, "walk-seeds", "1,5,9")
    fill(browser, "frames", "3")
    fill(browser, "walk-scale", "2")
    browser.find_element("css selector", "#tab-interpolate button[data-walk]").click()
    walk = wait_for(
        browser,
        "const f = document.querySelector('#images figure.animation');"
        "return f && !document.body.classList.contains('busy') && {src: f.querySelector('img').src,"
        "href: f.querySelector('a.download').href,"
        "file: f.querySelector('a.download').getAttribute('download')}",
        "the walk's animation",
    )
    head, _, data = walk["src"].partition(",")
    assert head == "data:image/gif;base64" and walk["href"] == walk["src"]
    assert walk["file"] == f"{names['stylegan']}-walk-1-5-9.gif"
    body = {"model": names["stylegan"], "seeds": [1, 5, 9], "output": "animation", "format": "gif",
            "frames": 3, "fps": 12, "loop": True, "scale": 2, "space": "w", "truncation": 0.7}  # fmt: skip
    assert base64.b64decode(data) == api(server, "/interpolate", body).content
    fill(browser, "frames", "0")
    browser.find_element("css selector", "#tab-interpolate button[data-walk]").click()
    assert "greater than or equal to 1" in error_beside(browser, "walk", "frames")

    # offline by construction: every resource the page loaded came from this server
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources and all(r.startswith(server.url) for r in resources), resources
    # and nothing went wrong in it: no script error, no blocked resource (the 4xx answers the
    # page was shown above are the only failed loads)
    severe = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all(re.search(r"status of 4(01|22) ", m) for m in severe), severe
