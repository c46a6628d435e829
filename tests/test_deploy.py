"""The SAM template: cfn-lint clean, least-privilege IAM, and paths that match the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that keeps CloudFormation's short-form tags (!Ref, !Sub...) as {tag: value}."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {suffix: value}


_CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> Dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def _statements(template: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        docs: List[Any] = [props.get("PolicyDocument")] + [
            p for p in props.get("Policies", []) if isinstance(p, dict)
        ]
        for doc in docs:
            if isinstance(doc, dict) and "Statement" in doc:
                yield from doc["Statement"]


class TestTemplate:
    def test_cfn_lint_passes(self) -> None:
        """cfn-lint finds nothing in deploy/template.yaml."""
        exe = shutil.which("cfn-lint", path=os.path.dirname(sys.executable)) or shutil.which(
            "cfn-lint"
        )
        assert exe, "cfn-lint is a test dependency"
        proc = subprocess.run([exe, str(TEMPLATE)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_sample_resources_are_there(self, template: Dict[str, Any]) -> None:
        """Table (pKey/sKey), parameter, secret, layer and both functions are declared."""
        res = template["Resources"]
        table = res["DynamoDbTable"]["Properties"]
        assert table["TableName"] == "DynamoDbTable"
        assert table["KeySchema"] == [
            {"AttributeName": "pKey", "KeyType": "HASH"},
            {"AttributeName": "sKey", "KeyType": "RANGE"},
        ]
        assert res["Parameter1"]["Properties"]["Name"] == "CacheExtensions_Parameter1"
        assert res["SecretInfo"]["Properties"]["Name"] == "secret_info"
        assert res["CacheLayer"]["Type"] == "AWS::Serverless::LayerVersion"
        assert res["PythonFunction"]["Properties"]["Runtime"] == "python3.12"
        assert res["SampleItem"]["Properties"]["ServiceToken"] == {"GetAtt": "SeedFunction.Arn"}

    def test_x86_64_by_default_and_extension_env(self, template: Dict[str, Any]) -> None:
        """Functions default to x86_64, as the layer builder does, and fetch at init
        (CACHE_EXTENSION_INIT_STARTUP=true)."""
        assert template["Parameters"]["Architecture"]["Default"] == "x86_64"
        glob = template["Globals"]["Function"]
        assert glob["Architectures"] == [{"Ref": "Architecture"}]
        assert glob["Environment"]["Variables"]["CACHE_EXTENSION_INIT_STARTUP"] == "true"

    def test_iam_is_least_privilege(self, template: Dict[str, Any]) -> None:
        """No wildcard actions, no broad managed policies; '*' only for BatchGetSecretValue."""
        text = TEMPLATE.read_text()
        assert not re.search(r"FullAccess|ReadWrite|ReadOnlyAccess|AdministratorAccess", text)
        statements = list(_statements(template))
        assert statements
        for st in statements:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert all("*" not in a for a in actions), st
            if st["Resource"] == "*":
                assert actions == ["secretsmanager:BatchGetSecretValue"], st
        read = {
            a
            for st in statements
            for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
        }
        assert {
            "ssm:GetParameter",
            "secretsmanager:GetSecretValue",
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
        } <= read
        assert "kms:Decrypt" not in read

    def test_paths_point_into_the_repository(self, template: Dict[str, Any]) -> None:
        """CodeUri dirs hold code and config.yaml; the layer path is what the README builds."""
        res = template["Resources"]
        code = TEMPLATE.parent / res["PythonFunction"]["Properties"]["CodeUri"]
        assert (code / "app.py").is_file() and (code / "config.yaml").is_file()
        layer = res["CacheLayer"]["Properties"]["ContentUri"]
        readme = (TEMPLATE.parent / "README.md").read_text()
        assert f"-o {Path(layer).relative_to('..')}" in readme
        node = res["NodeFunction"]["Properties"]
        code = TEMPLATE.parent / node["CodeUri"]
        assert (code / "index.mjs").is_file() and (code / "config.yaml").is_file()
        standalone = res["NodeCacheLayer"]["Properties"]["ContentUri"]
        assert f"-o {Path(standalone).relative_to('..')}" in readme

    def test_node_function_is_a_plain_nodejs_function_with_the_standalone_layer(
        self, template: Dict[str, Any]
    ) -> None:
        """No container image: nodejs22.x with the layer built for nodejs22.x, which says so."""
        res = template["Resources"]
        node = res["NodeFunction"]["Properties"]
        assert node["Runtime"] == "nodejs22.x" and "PackageType" not in node
        assert "Metadata" not in res["NodeFunction"]
        assert node["Layers"] == [{"Ref": "NodeCacheLayer"}]
        layer = res["NodeCacheLayer"]["Properties"]
        assert layer["CompatibleRuntimes"] == ["nodejs22.x"]
        readme = (TEMPLATE.parent / "README.md").read_text()
        assert "--runtime nodejs22.x" in readme
        assert not (TEMPLATE.parent / "node-image").exists()
