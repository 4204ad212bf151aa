"""BentoML model store: import a passing bundle, list it, load it back by tag; refuse others."""

import json
import shutil

import numpy as np
import pytest

from export import store
from gancore import bundle as bundle_mod
from gancore import sampling
from gancore.errors import BundleError


def test_store_round_trip(gated_bundle, bentoml_home):
    src = gated_bundle("cgan")
    tag = store.push(src)
    assert tag.startswith("cgan:")
    listed = {m["tag"]: m for m in store.list_bundles()}
    assert listed[tag]["labels"] == {
        "kind": "cgan",
        "dataset": "digits",
        "gate": "passed",
        "resolution": "16",
    }
    assert listed[tag]["metadata"]["threshold"] == 1e9
    path = store.bundle_path(tag)
    assert str(path).startswith(str(bentoml_home))
    b = bundle_mod.load(path)  # gate required: still valid after the copy
    a = bundle_mod.load(src)
    assert np.array_equal(sampling.generate(a, [1, 2]), sampling.generate(b, [1, 2]))
    assert store.bundle_path(tag.split(":")[0]) == path  # name alone = latest


def test_store_refuses_failed_missing_or_stale_gate(gated_bundle, tiny_bundles, tmp_path):
    with pytest.raises(BundleError, match="gate failed"):
        store.push(gated_bundle("dcgan", passing=False))
    with pytest.raises(BundleError, match="no gate.json"):
        store.push(tiny_bundles["dcgan"])
    # A gate written for another manifest does not count.
    stale = tmp_path / "stale"
    shutil.copytree(gated_bundle("dcgan"), stale)
    m = json.loads((stale / "manifest.json").read_text())
    m["name"] = "renamed"
    (stale / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="different manifest"):
        store.push(stale)
    with pytest.raises(BundleError, match="no model"):
        store.bundle_path("does-not-exist:latest")
