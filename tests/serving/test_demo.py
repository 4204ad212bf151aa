"""The demo's server helper: example commands for every served model."""

from __future__ import annotations

from serving.demo import curl_examples, main


def test_curl_examples_cover_each_models_endpoints(bundle_dirs, names):
    text = curl_examples(list(bundle_dirs.values()), "http://127.0.0.1:3000", api_key="k")
    assert "Authorization: Bearer k" in text
    for name in names.values():
        assert f'"model": "{name}"' in text
    assert text.count("/style_mix") == 1 and text.count("/generate_conditional") == 1
    assert "/interpolate" in text and "/models" in text and '"method": "drs"' in text


def test_demo_cli_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "not a bundle" in capsys.readouterr().err
