"""The API fuzz tier: schemathesis over each adapter's OpenAPI document, against the running
stack, bounded in time: no 5xx, every status, content type, header and body as documented.
The inbox's long poll is left out (a generated `wait=60` holds a request a minute); its
parameters are checked by tests/unit/test_edge_http.py and the inbox integration tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.stack import Stack

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance"


@pytest.mark.parametrize(("kind", "slug"), [("dac", "dac-31"), ("crt", "crt-31-muret")])
async def test_the_api_fuzz_finds_no_5xx_and_no_nonconforming_response(stack: Stack, kind: str, slug: str) -> None:
    await stack.ready()
    st = Path(sys.executable).with_name("schemathesis")
    out = subprocess.run(  # noqa: ASYNC221 - the fuzzer is the test; nothing else runs meanwhile
        [str(st), "run", f"{stack.url(kind)}/openapi.json", "-H", f"Authorization: Bearer dev-{slug}",
         "--checks", CHECKS, "--max-time", "25", "--max-examples", "20", "--seed", "20261125",
         "--request-timeout", "20", "--generation-database", "none", "--exclude-path", "/v1/inbox"],
        capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert "generated" in out.stdout  # it did run cases
