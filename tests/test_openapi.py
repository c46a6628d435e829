"""The OpenAPI document: valid, in step with the README, served, and true of the live server."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any, Dict, Iterator, Set, Tuple

import boto3
import pytest

from cachelayer.providers.secrets.compat import SECRETS_PATH
from cachelayer.providers.ssm.compat import PARAMETERS_PATH
from cachelayer.server.operations import openapi_bytes
from cachelayer.testing.live import TOKEN_HEADER, Live, live_server

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT: Dict[str, Any] = json.loads(openapi_bytes())
METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}
ERROR_STATUSES = {"400", "401", "403", "404", "405", "413", "414", "431", "500"}
UPSTREAM_STATUSES = {"502", "504"}


def documented_operations() -> Set[Tuple[str, str]]:
    return {(m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item if m in METHODS}


def readme_operations() -> Set[Tuple[str, str]]:
    """``(METHOD, path)`` of each row of the README's "## Routes" table, whose first column
    reads like `` `GET /parameters?name=` `` (the query part is ignored)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Routes\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "README.md has no '## Routes' section"
    rows = set()
    for line in match.group(1).splitlines():
        cell = re.match(r"^\|\s*`([A-Z]+) (/[^`?\s]*)(?:\?[^`]*)?`\s*\|", line)
        if cell:
            rows.add((cell.group(1), cell.group(2)))
    assert rows, "the README's Routes table has no `METHOD /path` rows"
    return rows


class TestDocument:
    def test_is_a_valid_openapi_31_document(self) -> None:
        """openapi-spec-validator accepts the document as OpenAPI 3.1."""
        from openapi_spec_validator import validate

        assert DOCUMENT["openapi"].startswith("3.1")
        validate(DOCUMENT)

    def test_readme_routes_and_document_list_the_same_operations(self) -> None:
        """Every route the README documents is in the document, and vice versa."""
        assert readme_operations() == documented_operations()

    def test_covers_the_whole_surface(self) -> None:
        """Native, plugin, compat and operation routes are all documented."""
        assert documented_operations() >= {
            ("GET", "/parameters"),
            ("GET", "/secrets"),
            ("GET", "/dynamodb"),
            ("GET", "/{route}"),
            ("GET", PARAMETERS_PATH),
            ("GET", SECRETS_PATH),
            ("GET", "/-/health"),
            ("GET", "/-/stats"),
            ("POST", "/-/invalidate"),
            ("GET", "/-/openapi.json"),
        }

    def test_every_operation_documents_every_error_status_with_the_error_body(self) -> None:
        """Each operation lists the error statuses, each a JSON {error, message}."""
        error = DOCUMENT["components"]["schemas"]["Error"]
        assert error["required"] == ["error", "message"]
        responses = DOCUMENT["components"]["responses"]
        for path, item in DOCUMENT["paths"].items():
            for method, op in item.items():
                statuses = set(op["responses"])
                assert statuses >= ERROR_STATUSES, (method, path, ERROR_STATUSES - statuses)
                reads_upstream = not path.startswith("/-/")
                assert (statuses >= UPSTREAM_STATUSES) == reads_upstream, (method, path)
                for status in statuses - {"200"}:
                    name = op["responses"][status]["$ref"].rsplit("/", 1)[1]
                    schema = responses[name]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}

    def test_value_routes_document_cache_headers_and_the_token_scheme(self) -> None:
        """200s of value routes carry X-Cache, Age, Cache-Control; the token is an apiKey header."""
        scheme = DOCUMENT["components"]["securitySchemes"]["sessionToken"]
        assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": TOKEN_HEADER}
        assert DOCUMENT["security"] == [{"sessionToken": []}]
        for path, item in DOCUMENT["paths"].items():
            if not path.startswith("/-/"):
                assert set(item["get"]["responses"]["200"]["headers"]) == {
                    "X-Cache",
                    "Age",
                    "Cache-Control",
                }


@pytest.fixture()
def seeded(aws: str, tmp_path: Path) -> Iterator[Live]:
    """A live server over moto holding one parameter and one secret."""
    boto3.client("ssm").put_parameter(Name="/doc/param", Value="p", Type="String")
    boto3.client("secretsmanager").create_secret(Name="doc-secret", SecretString="s")
    with live_server(aws, tmp_path) as running:
        yield running


class TestServedDocument:
    def test_served_at_openapi_json(self, seeded: Live) -> None:
        """GET /-/openapi.json answers the packaged document as JSON."""
        status, headers, body = seeded.request("/-/openapi.json")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        assert json.loads(body) == DOCUMENT


def _operation(schema: Any, method: str, path: str) -> Any:
    return schema.find_operation_by_path(method, path)


class TestLiveServerMatchesDocument:
    def test_every_documented_status_answers_as_documented(self, seeded: Live) -> None:
        """Requests provoking each reachable status get responses valid against the document."""
        import requests
        import schemathesis

        schema = schemathesis.openapi.from_dict(DOCUMENT)
        good = {TOKEN_HEADER: seeded.env["AWS_SESSION_TOKEN"]}
        cases = [
            ("GET", "/parameters", {"name": "/doc/param"}, good, 200),
            ("GET", "/secrets", {"name": "doc-secret"}, good, 200),
            ("GET", PARAMETERS_PATH, {"name": "/doc/param"}, good, 200),
            ("GET", SECRETS_PATH, {"secretId": "doc-secret"}, good, 200),
            ("GET", "/-/health", {}, good, 200),
            ("GET", "/-/stats", {}, good, 200),
            ("POST", "/-/invalidate", {"route": "parameters"}, good, 200),
            ("GET", "/-/openapi.json", {}, good, 200),
            ("GET", "/parameters", {}, good, 400),
            ("GET", SECRETS_PATH, {}, good, 400),
            ("GET", "/parameters", {"name": "x"}, {}, 401),
            ("GET", "/parameters", {"name": "x"}, {TOKEN_HEADER: "nope"}, 403),
            ("GET", "/parameters", {"name": "x"}, {**good, "X-Forwarded-For": "10.0.0.1"}, 403),
            ("GET", "/parameters", {"name": "/no/such"}, good, 404),
            ("GET", PARAMETERS_PATH, {"name": "/no/such"}, good, 404),
            ("GET", "/-/stats", {"x": "1"}, good, 400),
        ]
        for method, path, params, headers, status in cases:
            response = requests.request(
                method, seeded.url + path, params=params, headers=headers, timeout=15
            )
            assert response.status_code == status, (method, path, params, response.text)
            _operation(schema, method, path).validate_response(response)
        # Statuses reached by breaking the HTTP rules rather than the API's.
        probes = [
            ("POST", "/parameters?name=x", {}, b"", 405),
            ("GET", "/-/invalidate", {}, b"", 405),
            ("GET", "/parameters?name=" + "x" * 9000, {}, b"", 414),
            ("GET", "/parameters?name=x", {"X-Big": "y" * 9000}, b"", 431),
            ("POST", "/-/invalidate", {}, b"z" * 9000, 413),
        ]
        for method, target, extra, body, status in probes:
            response = requests.request(
                method,
                seeded.url + target,
                headers={**good, **extra},
                data=body or None,
                timeout=15,
            )
            assert response.status_code == status, (method, target[:40], response.text[:200])
            assert set(response.json()) == {"error", "message"}
            path = target.split("?", 1)[0]
            # A 405 is documented on the path's one real operation.
            documented = sorted(m for m, p in documented_operations() if p == path)
            op_method = method if method in documented else documented[0]
            _operation(schema, op_method, path).validate_response(response)

    def test_upstream_failure_is_a_documented_502(
        self, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With AWS unreachable and nothing cached, a read is a 502 that matches the document."""
        import requests
        import schemathesis

        with socket.socket() as s:  # a port nobody listens on: connection refused, at once
            s.bind(("127.0.0.1", 0))
            dead = f"http://127.0.0.1:{s.getsockname()[1]}"
        monkeypatch.setenv("AWS_ENDPOINT_URL", dead)  # botocore reads the process environment too
        with live_server(aws, tmp_path, extra_env={"AWS_ENDPOINT_URL": dead}) as running:
            response = requests.get(
                running.url + "/parameters",
                params={"name": "x"},
                headers={TOKEN_HEADER: running.env["AWS_SESSION_TOKEN"]},
                timeout=30,
            )
        assert response.status_code == 502, response.text
        schema = schemathesis.openapi.from_dict(DOCUMENT)
        _operation(schema, "GET", "/parameters").validate_response(response)

    def test_generated_requests_get_documented_responses(self, seeded: Live) -> None:
        """Schemathesis-generated requests to every operation get responses conforming to the
        document (status, content type, headers, body schema) and never a 5xx."""
        import hypothesis
        import schemathesis
        from schemathesis.specs.openapi import checks

        schema = schemathesis.openapi.from_dict(DOCUMENT)
        selected = [
            checks.status_code_conformance,
            checks.content_type_conformance,
            checks.response_headers_conformance,
            checks.response_schema_conformance,
        ]
        headers = {TOKEN_HEADER: seeded.env["AWS_SESSION_TOKEN"]}
        seen: Set[Tuple[str, str, int]] = set()
        for result in schema.get_all_operations():
            operation = result.ok()

            @hypothesis.settings(
                max_examples=8,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
                phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            )
            @hypothesis.given(case=operation.as_strategy())
            def run(case: Any) -> None:
                response = case.call(base_url=seeded.url, headers=headers, timeout=10)
                assert response.status_code < 500, (case.path, case.query, response.text)
                case.validate_response(response, checks=selected)
                seen.add((case.method, case.path, response.status_code))

            run()
        assert {(m, p) for m, p, _ in seen} == documented_operations()
