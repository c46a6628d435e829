"""AWS-native paths belong to the providers that declare ``aws_compat``; the server only dispatches."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

import pytest

import cachelayer
from cachelayer.compat import AwsCompatRoute, CompatRead, CompatRequest, required
from cachelayer.core.router import Router
from cachelayer.errors import PluginError
from cachelayer.plugins import make_plugin_manager
from cachelayer.server.compat import CompatRoutes
from cachelayer.testing.live import live_server

NOTES_PATH = "/notesservice/get"


def _note_request(params: Mapping[str, str]) -> CompatRequest:
    return CompatRequest([CompatRead(required(params, "noteId", NOTES_PATH))])


def _note_document(value: cachelayer.Value) -> Dict[str, Any]:
    return {"Note": {"Text": value.body.decode(), "Fetches": value.metadata["fetches"]}}


NOTES_ROUTE = AwsCompatRoute(
    path=NOTES_PATH, query=("noteId",), to_request=_note_request, render=_note_document
)


class _InMemory:
    """A provider that answers every name with ``<route>:<name>``; ``FETCHES`` counts its
    fetches per route (the core builds the instances, so the count lives on the class)."""

    name: ClassVar[str] = ""
    route: ClassVar[str] = ""
    services: ClassVar[Tuple[str, ...]] = ()
    config_schema: ClassVar[Any] = None
    query_parameters: ClassVar[Tuple[str, ...]] = ()
    ttl_environment_variable: ClassVar[Optional[str]] = None
    FETCHES: ClassVar[Dict[str, int]] = {}

    @classmethod
    def from_config(cls, config: Any, context: Any) -> _InMemory:
        return cls()

    def declared(self) -> Sequence[cachelayer.Item]:
        return []

    def resolve(self, name: str, params: Mapping[str, str]) -> cachelayer.Item:
        return cachelayer.Item(route=self.route, name=name)

    def fetch(self, item: cachelayer.Item) -> cachelayer.Value:
        fetches = self.FETCHES[self.route] = self.FETCHES.get(self.route, 0) + 1
        return cachelayer.Value(f"{self.route}:{item.name}".encode(), metadata={"fetches": fetches})


class ReplacementParameters(_InMemory):
    """Serves ``/parameters`` in place of the built-in SSM provider, with no AWS-native path."""

    name = route = "parameters"


class Notes(_InMemory):
    """A third party's provider with an AWS-native path of its own."""

    name = route = "notes"
    aws_compat: ClassVar[AwsCompatRoute] = NOTES_ROUTE


def _plugin(*providers: Any) -> Any:
    class Plugin:
        @cachelayer.hookimpl
        def cachelayer_providers(self) -> List[Any]:
            return list(providers)

    pm = make_plugin_manager()
    pm.register(Plugin(), name="test-providers")
    return pm


def _error(reply: Tuple[int, Any, bytes]) -> Dict[str, Any]:
    doc: Dict[str, Any] = json.loads(reply[2])
    return doc


class TestReplacementProvider:
    def test_native_path_of_a_replaced_provider_is_a_clear_404_not_nulls(
        self, aws: str, tmp_path: Path
    ) -> None:
        """With the built-in parameters provider replaced by one without aws_compat, SSM's
        native path answers 404 naming the native paths still served, never a null document."""
        pm = _plugin(ReplacementParameters)
        env = {"CACHE_EXTENSION_DISABLE_PLUGINS": "parameters"}
        with live_server(aws, tmp_path, extra_env=env, pm=pm) as live:
            status, _, body = live.request("/parameters?name=a")
            assert (status, body) == (200, b"parameters:a")
            reply = live.request("/systemsmanager/parameters/get?name=a")
            assert reply[0] == 404
            doc = _error(reply)
            assert doc["error"] == "UnknownRoute"
            assert "AWS-compatible paths: /secretsmanager/get" in doc["message"]
            assert "Parameter" not in doc
            assert "/systemsmanager/parameters/get" not in live.server.compat.paths


class TestThirdPartyNativePath:
    def test_a_declared_native_path_is_read_through_the_cache_and_rendered(
        self, aws: str, tmp_path: Path
    ) -> None:
        """Any provider's aws_compat is served: its query is checked, the read goes through the
        cache (miss, then hit without a fetch) and the provider renders the JSON."""
        Notes.FETCHES.pop("notes", None)
        with live_server(aws, tmp_path, pm=_plugin(Notes)) as live:
            first = live.get(f"{NOTES_PATH}?noteId=n1")
            second = live.get(f"{NOTES_PATH}?noteId=n1")
            assert first.status == second.status == 200
            assert first.headers["content-type"] == "application/json"
            assert (first.x_cache, second.x_cache) == ("miss", "hit")
            assert second.json() == {"Note": {"Text": "notes:n1", "Fetches": 1}}
            assert Notes.FETCHES["notes"] == 1
            assert live.get("/notes?name=n1").text == "notes:n1"  # the same cache entry
            assert Notes.FETCHES["notes"] == 1
            bad = live.get(f"{NOTES_PATH}?noteId=n1&extra=1")
            assert bad.status == 400
            assert "unknown query parameter(s) 'extra'" in bad.json()["message"]
            assert "allowed: noteId" in bad.json()["message"]
            missing = live.get(NOTES_PATH)
            assert missing.status == 400 and "missing query parameter 'noteId'" in missing.text
            post = live.request(f"{NOTES_PATH}?noteId=n1", method="POST", data=b"")
            assert post[0] == 405


class _Other(_InMemory):
    name = route = "other"
    aws_compat: ClassVar[Optional[AwsCompatRoute]] = NOTES_ROUTE


class TestDeclarations:
    def _routes(self, *providers: Any) -> CompatRoutes:
        app: Any = types.SimpleNamespace(router=Router({p.route: p for p in providers}))
        return CompatRoutes.of(app)

    def test_only_providers_declaring_aws_compat_get_a_native_path(self) -> None:
        """The table holds the declared paths and nothing for providers without one."""
        assert self._routes(Notes(), ReplacementParameters()).paths == (NOTES_PATH,)

    def test_two_providers_declaring_one_path_is_a_plugin_error(self) -> None:
        """Two providers declaring the same native path are refused, naming both routes."""
        with pytest.raises(PluginError, match=r"/notes and /other both declare"):
            self._routes(Notes(), _Other())

    def test_aws_compat_must_be_the_record(self) -> None:
        """A provider whose aws_compat is not an AwsCompatRoute is a PluginError naming it."""

        class Wrong(_InMemory):
            name = route = "wrong"
            aws_compat = {"path": "/x"}

        with pytest.raises(PluginError, match="'wrong': aws_compat must be a cachelayer"):
            self._routes(Wrong())

    @pytest.mark.parametrize("path", ["notes/get", "/-/notes", "/notes?x=1"])
    def test_a_native_path_is_a_plain_path_outside_the_operations(self, path: str) -> None:
        """The record refuses a path without a leading '/', under /-/, or with a query."""
        with pytest.raises(ValueError, match="must be a URL path"):
            AwsCompatRoute(path=path, query=(), to_request=_note_request, render=_note_document)

    def test_the_built_ins_declare_their_native_paths(self) -> None:
        """SSM's and Secrets Manager's providers declare AWS's two native paths."""
        from cachelayer.providers.secrets import SecretsManagerProvider
        from cachelayer.providers.ssm import ParameterStoreProvider

        assert ParameterStoreProvider.aws_compat.path == "/systemsmanager/parameters/get"
        assert SecretsManagerProvider.aws_compat.path == "/secretsmanager/get"
