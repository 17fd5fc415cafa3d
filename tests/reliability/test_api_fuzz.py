"""Property-based fuzzing of the whole OpenAPI document (schemathesis) against a real server
process on SQLite and on PostgreSQL: for every operation, bounded examples of valid input and of
input that breaks the schema; no answer is a 5xx and every answer conforms to the document.

``GPUPOOL_FUZZ_EXAMPLES`` (default 10) sets the valid examples per operation; half as many invalid
ones follow. Generation is derandomized, so a failure replays the same way.
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode, checks

from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

pytestmark = pytest.mark.timeout(900)
server = server_fixture()
EXAMPLES = int(os.environ.get("GPUPOOL_FUZZ_EXAMPLES", "10"))
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]


def _order(label: str) -> tuple[bool, str]:
    """Deletes last, so a fuzzed DELETE /tokens/{id} cannot revoke the tokens the others use."""
    return label.startswith("DELETE"), label


def _fuzz(operation, mode: GenerationMode, examples: int, base_url: str, headers: dict) -> list[str]:  # noqa: ANN001
    failures: list[str] = []
    # a long-poll waits up to ``wait`` seconds: fuzz everything else about it
    fixed = {"query": {"wait": 0}} if operation.path.endswith("/assignments") else {}

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    def run(case) -> None:  # noqa: ANN001
        try:
            case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS, timeout=30)
        except Exception as err:  # noqa: BLE001 - keep going: report every operation that fails
            failures.append(f"{operation.label} ({mode.value}): {str(err).strip()[:1500]}")

    try:
        run()
    except Unsatisfiable:  # nothing to get wrong: an operation without parameters or body
        assert mode is GenerationMode.NEGATIVE, operation.label
    return failures


def test_every_operation_answers_below_500_and_as_documented(server) -> None:  # noqa: ANN001
    agent = FakeAgent(server.url, server.bootstrap_token, "fuzz-agent", gpus=2)
    agent.register()
    tokens = {"agent": agent.token, "register": server.bootstrap_token}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = sorted((r.ok() for r in schema.get_all_operations()), key=lambda op: _order(op.label))
    assert len(operations) >= 29
    failures: list[str] = []
    started = time.monotonic()
    for op in operations:
        kind = "register" if op.path.endswith("/register") else "agent" if "/agent/" in op.path else None
        headers = {"Authorization": f"Bearer {tokens.get(kind, server.admin_token)}"}
        failures += _fuzz(op, GenerationMode.POSITIVE, EXAMPLES, server.url, headers)
        failures += _fuzz(op, GenerationMode.NEGATIVE, max(1, EXAMPLES // 2), server.url, headers)
    agent.close()
    print(f"fuzzed {len(operations)} operations in {time.monotonic() - started:.0f}s")
    assert not failures, "\n\n".join(failures[:20])
