"""A spec's resources become one scheduler Request, stored as JSON and read back unchanged."""

from __future__ import annotations

import pytest

from controlplane.core.requests import request_from_json, request_from_resources, request_to_json
from controlplane.core.resources import Constraints, Request
from workloads.specs import parse_job_spec


@pytest.mark.parametrize(("resources", "expected"), [
    ({"gpu": 0.25}, Request(cpu_milli=1000, memory_mib=1024, gpu_milli=250)),
    ({"gpu": 2, "gpu_memory_mib": 5}, Request(cpu_milli=1000, memory_mib=1024, gpus=2)),
    ({"gpu": 0, "gpu_memory_mib": 4096}, Request(cpu_milli=1000, memory_mib=1024, gpu_milli=1,
                                                  gpu_memory_mib=4096)),
    ({"gpu": 1, "nodes": 3, "models": ["H100-80GB"], "labels": {"b": "2", "a": "1"}, "vendor": "nvidia",
      "min_gpu_memory_mib": 40000, "cpu_milli": 500, "memory_mib": 64},
     Request(cpu_milli=500, memory_mib=64, gpus=1, gang=3, constraints=Constraints(
         vendor="nvidia", models=("H100-80GB",), min_memory_mib=40000, labels=(("a", "1"), ("b", "2"))))),
])
def test_resources_to_request_and_back(resources: dict, expected: Request) -> None:
    spec = parse_job_spec({"name": "j", "command": ["true"], "resources": resources})
    req = request_from_resources(spec.model_dump(mode="json")["resources"])
    assert req == expected
    assert request_from_json(request_to_json(req)) == req
