"""gpupool's ServiceMonitors and PrometheusRule validate against prometheus-operator's CRD schemas
(fixtures/prometheus-operator, with their source and licence), strictly: unknown fields fail, as
they do with `kubectl apply --validate=strict` on a cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.manifests import OVERLAYS, copy_tree, render_overlay

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "prometheus-operator"
SCHEMAS = {"ServiceMonitor": "servicemonitor-v1.json", "PrometheusRule": "prometheusrule-v1.json"}


def _strict(schema: object) -> object:
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_strict(json.loads((FIXTURES / SCHEMAS[kind]).read_text())))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tree = copy_tree(tmp_path_factory.mktemp("kube"))
    return {overlay: render_overlay(overlay, tree) for overlay in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_objects_match_the_crd_schemas(overlay: str, rendered: dict) -> None:
    objects = [d for d in rendered[overlay] if d["kind"] in SCHEMAS]
    assert sorted(d["kind"] for d in objects) == ["PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    for obj in objects:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        errors = [e.message for e in validator(obj["kind"]).iter_errors(obj)]
        assert errors == [], f"{obj['kind']} {obj['metadata']['name']}: {errors}"


def test_the_schemas_catch_a_misspelt_or_mistyped_field(rendered: dict) -> None:
    monitor = next(d for d in rendered["quickstart"] if d["kind"] == "ServiceMonitor")
    typo = copy.deepcopy(monitor)
    typo["spec"]["endpoints"][0]["metricRelabelling"] = []  # British spelling: not a field
    assert not validator("ServiceMonitor").is_valid(typo)
    bad_interval = copy.deepcopy(monitor)
    bad_interval["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert not validator("ServiceMonitor").is_valid(bad_interval)
    rule = next(d for d in rendered["quickstart"] if d["kind"] == "PrometheusRule")
    no_expr = copy.deepcopy(rule)
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    assert not validator("PrometheusRule").is_valid(no_expr)
