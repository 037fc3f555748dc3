"""The CRDs in crds/ are generated from recplane/api and stay structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from recplane.api import KINDS, crd

ROOT = Path(__file__).resolve().parents[2]


def test_crds_dir_is_up_to_date_with_the_models() -> None:
    stale = crd.stale(ROOT / "crds")
    assert not stale, f"crds/ is stale ({stale}); run `recplane crds generate`"


def test_a_changed_model_makes_the_check_fail(tmp_path: Path) -> None:
    crd.write(tmp_path)
    target = tmp_path / "recplane.io_trainjobs.yaml"
    target.write_text(target.read_text().replace("maxRestarts", "maxRetries"))
    (tmp_path / "recplane.io_extra.yaml").write_text("{}")
    assert crd.stale(tmp_path) == ["recplane.io_extra.yaml", "recplane.io_trainjobs.yaml"]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.get("properties", {}).items():
            out.extend(_walk(value, f"{path}.{key}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_schema_node_is_structural(kind: str) -> None:
    schema = crd.crd(KINDS[kind])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        assert not {"anyOf", "oneOf", "allOf", "$ref", "title"} & node.keys(), f"{path} is not structural"
        assert node.get("additionalProperties") is not False, f"{path} uses additionalProperties: false"
        if "default" in node:
            assert node["default"] is not None, f"{path} defaults to null"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_names_short_names_category_and_status(kind: str) -> None:
    k = KINDS[kind]
    doc = yaml.safe_load((ROOT / "crds" / f"recplane.io_{k.plural}.yaml").read_text())
    names = doc["spec"]["names"]
    assert names["shortNames"] == [k.short]
    assert "recplane" in names["categories"]
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:2] == ["Phase", "Ready"] and columns[-1] == "Age"


def test_cross_field_rules_are_in_the_schema() -> None:
    text = crd.render(KINDS["ModelDeployment"])
    assert "x-kubernetes-validations" in text
    assert "canary.weight needs canary.version" in text
    assert "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" in text
