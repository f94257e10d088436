"""The documentation: Swagger UI served by the API itself (nothing from a CDN), `/` pointing at
it, and an OpenAPI document that says what the API really answers — the 422 envelope with
details, enums, headers, the bearer scheme — with examples that validate and succeed."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.helpers import unique

SCHEMAS = "#/components/schemas/"


@pytest.fixture(scope="module")
async def spec(api_client: httpx.AsyncClient) -> dict[str, Any]:
    response = await api_client.get("/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def validates(spec: dict[str, Any], schema: dict[str, Any], instance: Any) -> list[str]:
    """The errors of `instance` against `schema`, `$ref`s resolved in the document."""
    validator = jsonschema_rs.Draft202012Validator({**schema, "components": spec["components"]})
    return [error.message for error in validator.iter_errors(instance)]


class TestOpenApiErrors:
    async def test_no_fastapi_default_422(self, spec: dict[str, Any]) -> None:
        schemas = spec["components"]["schemas"]
        assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
        assert "HTTPValidationError" not in str(spec)

    async def test_every_operation_documents_the_real_422(self, spec: dict[str, Any]) -> None:
        for name, operation in operations(spec):
            content = operation["responses"]["422"]["content"]["application/json"]
            assert content["schema"] == {"$ref": SCHEMAS + "ValidationErrorEnvelope"}, name
        envelope = spec["components"]["schemas"]["ValidationErrorEnvelope"]
        assert set(envelope["required"]) == {"status", "error", "details"}
        detail = spec["components"]["schemas"]["ErrorDetail"]
        assert set(detail["required"]) == {"field", "message"}

    async def test_other_errors_document_the_domain_envelope(self, spec: dict[str, Any]) -> None:
        for name, operation in operations(spec):
            for status, response in operation["responses"].items():
                if status.startswith("4") and status != "422":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": SCHEMAS + "ErrorEnvelope"}, (name, status)

    async def test_a_real_422_matches_its_schema(
        self, api_client: httpx.AsyncClient, spec: dict[str, Any]
    ) -> None:
        response = await api_client.post("/v1/transfers", json={"amount": "0"})
        assert response.status_code == 422
        schema = {"$ref": SCHEMAS + "ValidationErrorEnvelope"}
        assert validates(spec, schema, response.json()) == []


class TestOpenApiTeaches:
    async def test_transfer_states_and_key_scopes_are_enums(self, spec: dict[str, Any]) -> None:
        schemas = spec["components"]["schemas"]
        assert schemas["TransferState"]["enum"] == ["pending", "completed", "failed"]
        assert schemas["TransferRead"]["properties"]["state"]["$ref"] == SCHEMAS + "TransferState"
        assert set(schemas["Scope"]["enum"]) == {"read", "write"}
        listing = spec["paths"]["/v1/transfers"]["get"]
        state = next(p for p in listing["parameters"] if p["name"] == "state")
        assert {"$ref": SCHEMAS + "TransferState"} in state["schema"]["anyOf"]

    async def test_headers_are_documented_where_they_occur(self, spec: dict[str, Any]) -> None:
        for name, operation in operations(spec):
            for status, response in operation["responses"].items():
                headers = response.get("headers", {})
                assert "X-Request-ID" in headers, (name, status)
                if status == "401":
                    assert "WWW-Authenticate" in headers, name
                if status in ("429", "503"):
                    assert "Retry-After" in headers, (name, status)
        submit = spec["paths"]["/v1/transfers"]["post"]["responses"]
        for status in ("200", "202"):
            documented = set(submit[status]["headers"])
            assert {"Location", "Idempotent-Replayed", "Preference-Applied"} <= documented

    async def test_the_bearer_key_is_the_security_scheme(self, spec: dict[str, Any]) -> None:
        schemes = spec["components"]["securitySchemes"]
        assert schemes == {
            "HTTPBearer": {
                "type": "http",
                "scheme": "bearer",
                "description": schemes["HTTPBearer"]["description"],
            }
        }
        for name, operation in operations(spec):
            if not name.endswith(("/health", "/ready")):
                assert operation["security"] == [{"HTTPBearer": []}], name

    async def test_examples_validate_against_their_schemas(self, spec: dict[str, Any]) -> None:
        checked = 0
        for name, schema in spec["components"]["schemas"].items():
            for example in schema.get("examples", []):
                assert validates(spec, {"$ref": SCHEMAS + name}, example) == [], (name, example)
                checked += 1
        for name, operation in operations(spec):
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            assert body.get("examples"), name  # "Try it out" starts from a working body
            for example in body["examples"].values():
                assert validates(spec, body["schema"], example["value"]) == [], name
                checked += 1
        assert checked >= 15

    async def test_the_examples_succeed_as_written(
        self, api_client: httpx.AsyncClient, spec: dict[str, Any]
    ) -> None:
        """What "Try it out" sends, in the README's order: merchants, alice's BTC, a transfer,
        a batch, a key. A second run finds alice and bob already there (409 is fine)."""

        def example(path: str) -> Any:
            body = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            return [item["value"] for item in body["examples"].values()]

        for merchant in example("/v1/merchants"):
            created = await api_client.post("/v1/merchants", json=merchant)
            assert created.status_code in (200, 409), created.json()
        alice = (await api_client.get("/v1/merchants/alice")).json()["result"]
        [balance] = example("/v1/merchants/balance")
        opened = await api_client.post(
            "/v1/merchants/balance",
            json={**balance, "merchant_id": alice["id"], "initial_amount": "1000"},
        )
        assert opened.status_code in (200, 409), opened.json()

        [transfer] = example("/v1/transfers")
        assert (transfer["from_merchant"], transfer["to_merchant"]) == ("alice", "bob")
        assert transfer["currency"] == "BTC"
        response = await api_client.post(
            "/v1/transfers", json=transfer, headers={"Idempotency-Key": unique("docs")}
        )
        assert response.status_code == 202, response.json()
        assert response.headers["location"] == f"/v1/transfers/{response.json()['result']['id']}"
        schema = {"$ref": SCHEMAS + "Envelope_TransferRead_"}
        assert validates(spec, schema, response.json()) == []

        [batch] = example("/v1/batches")
        response = await api_client.post("/v1/batches", json=batch)
        assert response.status_code == 202
        assert response.json()["result"]["refused"] == 0

        [key] = example("/v1/api-keys")
        response = await api_client.post("/v1/api-keys", json={**key, "name": unique("docs")})
        assert response.status_code == 200, response.json()


class _Assets(HTMLParser):
    """The URLs a page loads: `src` of scripts and images, `href` of stylesheets and icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag in ("script", "img") else found.get("href")
        if url and tag in ("script", "img", "link"):
            self.urls.append(url)


class TestSwaggerUiOffline:
    """The docs open with no API key and load nothing from another host."""

    async def test_docs_and_every_asset_are_served_here(
        self, api_client: httpx.AsyncClient
    ) -> None:
        anonymous = {"Authorization": ""}
        page = await api_client.get("/docs", headers=anonymous)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert page.headers["x-request-id"]
        assert re.findall(r"(?:https?:)?//[\w.-]+", page.text) == []  # no other host at all
        parser = _Assets()
        parser.feed(page.text)
        assert len(parser.urls) >= 3  # the stylesheet, the icon, the bundle
        for url in [*parser.urls, "/openapi.json"]:
            assert url.startswith("/") and not url.startswith("//"), url
            asset = await api_client.get(url, headers=anonymous)
            assert asset.status_code == 200, url
            assert asset.content, url
        bundle = next(url for url in parser.urls if url.endswith("swagger-ui-bundle.js"))
        assert "SwaggerUIBundle" in (await api_client.get(bundle, headers=anonymous)).text
        assert "url: '/openapi.json'" in page.text
        assert '"validatorUrl": null' in page.text  # no badge fetched from validator.swagger.io

    async def test_root_points_to_the_docs(self, api_client: httpx.AsyncClient) -> None:
        response = await api_client.get("/", headers={"Authorization": ""})
        assert response.status_code in (302, 307)
        assert response.headers["location"] == "/docs"

    async def test_only_the_docs_are_open(self, api_client: httpx.AsyncClient) -> None:
        anonymous = {"Authorization": ""}
        for path in ("/docs/assets/redoc.standalone.js", "/docs/assets/nothing", "/v1/transfers"):
            response = await api_client.get(path, headers=anonymous)
            assert response.status_code == 401, path
        response = await api_client.get(f"/v1/transfers/{uuid.uuid4()}", headers=anonymous)
        assert response.headers["www-authenticate"] == "Bearer"
