"""ParameterStoreProvider: SSM parameters (and Secrets Manager references) on ``/parameters``."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import attrs

from cachelayer import (
    TEXT,
    BadRequestError,
    CachelayerError,
    Item,
    JsonClient,
    NotFoundError,
    ProviderContext,
    Value,
)
from cachelayer.providers._named import (
    Declarations,
    fetch_or_error,
    run_batches,
    target_of,
)
from cachelayer.providers.ssm.config import ParametersConfig

__all__ = ["ParameterStoreProvider"]

REFERENCE_PREFIX = "/aws/reference/secretsmanager/"
NOT_FOUND_CODES = ("ParameterNotFound", "ParameterVersionNotFound")
BATCH_SIZE = 10  # GetParameters accepts at most 10 names
_VERSION = re.compile(r"^[1-9][0-9]{0,18}$")
_BOOLS = {"true": True, "false": False}


@attrs.frozen
class ParameterTarget:
    """Where and how to read one item: region (None: default), SSM name selector, decryption."""

    region: Optional[str]
    selector: str
    decrypt: bool


@attrs.frozen
class ParameterStoreProvider:
    """Serves SSM Parameter Store parameters: ``GET /parameters?name=<name>``.

    Query parameters: ``version`` or ``label`` (not both) and ``withDecryption`` (default true).
    Names under ``/aws/reference/secretsmanager/`` read Secrets Manager through SSM and are
    always decrypted. Undeclared names are served too, from the default region.
    ``SSM_PARAMETER_STORE_TTL`` (AWS's extension's variable) sets the section's TTL.
    """

    name: ClassVar[str] = "parameters"
    route: ClassVar[str] = "parameters"
    services: ClassVar[Tuple[str, ...]] = ("ssm",)
    config_schema: ClassVar[Any] = ParametersConfig
    query_parameters: ClassVar[Tuple[str, ...]] = ("version", "label", "withDecryption")
    ttl_environment_variable: ClassVar[Optional[str]] = "SSM_PARAMETER_STORE_TTL"

    _context: ProviderContext
    _declarations: Declarations = attrs.Factory(Declarations)

    @classmethod
    def from_config(
        cls, config: Optional[ParametersConfig], context: ProviderContext
    ) -> ParameterStoreProvider:
        """Index the declared names with their region and TTL (item > group > section)."""
        return cls(
            context, Declarations.from_config(config, section="parameters", noun="parameter")
        )

    def declared(self) -> Sequence[Item]:
        """Every declared name, with its default variant (latest version, decrypted)."""
        return [self.resolve(pname, {}) for pname in self._declarations.names]

    def resolve(self, name: str, params: Mapping[str, str]) -> Item:
        """Turn ``name`` plus ``version``/``label``/``withDecryption`` into an Item."""
        version, label = params.get("version"), params.get("label")
        if version is not None and label is not None:
            raise BadRequestError("give either 'version' or 'label', not both")
        variant: List[Tuple[str, str]] = []
        selector = name
        if version is not None:
            if not _VERSION.match(version):
                raise BadRequestError(f"'version' must be a positive integer, got {version!r}")
            variant.append(("version", version))
            selector = f"{name}:{version}"
        if label is not None:
            if not label or len(label) > 100 or ":" in label:
                raise BadRequestError(
                    f"'label' must be a parameter label of 1 to 100 characters without ':', "
                    f"got {label!r}"
                )
            variant.append(("label", label))
            selector = f"{name}:{label}"
        raw_decrypt = params.get("withDecryption", "true")
        decrypt = _BOOLS.get(raw_decrypt.lower())
        if decrypt is None:
            raise BadRequestError(f"'withDecryption' must be true or false, got {raw_decrypt!r}")
        if not decrypt:
            if name.startswith(REFERENCE_PREFIX):
                raise BadRequestError(
                    f"names under {REFERENCE_PREFIX} read Secrets Manager and are always "
                    "decrypted; drop withDecryption=false"
                )
            variant.append(("withDecryption", "false"))
        decl = self._declarations.get(name)
        return Item(
            route=self.route,
            name=name,
            variant=tuple(sorted(variant)),
            ttl=decl.ttl,
            target=ParameterTarget(decl.region, selector, decrypt),
        )

    def fetch(self, item: Item) -> Value:
        """GetParameter for one item."""
        target = self._target(item)
        client = self._client(target.region)
        response = client.call(
            "GetParameter",
            {"Name": target.selector, "WithDecryption": target.decrypt},
            not_found=NOT_FOUND_CODES,
            what=f"parameter {item.name!r}",
        )
        return _value(response.get("Parameter") or {})

    def fetch_many(self, items: Sequence[Item]) -> Dict[Item, Union[Value, CachelayerError]]:
        """GetParameters by 10, per region and decryption flag; references one by one."""
        results: Dict[Item, Union[Value, CachelayerError]] = {}
        batches: Dict[Tuple[Optional[str], bool], List[Item]] = {}
        for item in items:
            target = self._target(item)
            if item.name.startswith(REFERENCE_PREFIX):
                # A missing secret behind a reference may fail a whole GetParameters call
                # (moto does this); one call each keeps the other items' results.
                results[item] = self._fetch_or_error(item)
                continue
            region = target.region or self._default_region()
            batches.setdefault((region, target.decrypt), []).append(item)
        calls: List[Tuple[Optional[str], bool, Sequence[Item]]] = []
        for (region, decrypt), batch in batches.items():
            for round_ in _rounds(batch):
                for start in range(0, len(round_), BATCH_SIZE):
                    calls.append((region, decrypt, round_[start : start + BATCH_SIZE]))
        results.update(run_batches(lambda call: self._get_parameters(*call), calls))
        return results

    def _get_parameters(
        self, region: Optional[str], decrypt: bool, chunk: Sequence[Item]
    ) -> Dict[Item, Union[Value, CachelayerError]]:
        """One GetParameters call for items with distinct names (see ``_rounds``)."""
        try:
            client = self._client(region)
            response = client.call(
                "GetParameters",
                {
                    "Names": [self._target(item).selector for item in chunk],
                    "WithDecryption": decrypt,
                },
                what=f"{len(chunk)} parameters",
            )
        except CachelayerError as exc:
            return {item: exc for item in chunk}
        # Match answers by Name (or ARN) alone: names are unique in the chunk, and the
        # Selector field is not always returned (moto omits it).
        found: Dict[str, Mapping[str, Any]] = {}
        for parameter in response.get("Parameters", []):
            for key in (parameter.get("Name"), parameter.get("ARN")):
                if key:
                    found[key] = parameter
        invalid = set(response.get("InvalidParameters", []))
        results: Dict[Item, Union[Value, CachelayerError]] = {}
        for item in chunk:
            parameter = found.get(item.name)
            if parameter is not None and _answers(item, parameter):
                results[item] = _value(parameter)
            elif self._target(item).selector in invalid:
                results[item] = NotFoundError(
                    f"ssm GetParameters: parameter {item.name!r} not found (InvalidParameters)"
                )
            else:
                # Neither returned as asked nor reported invalid: ask for it alone.
                results[item] = self._fetch_or_error(item)
        return results

    def _fetch_or_error(self, item: Item) -> Union[Value, CachelayerError]:
        return fetch_or_error(self.fetch, item)

    def _target(self, item: Item) -> ParameterTarget:
        return target_of(item, ParameterTarget, self.resolve)

    def _default_region(self) -> Optional[str]:
        return self._context.default_region

    def _client(self, region: Optional[str]) -> JsonClient:
        client: JsonClient = self._context.json_client("ssm", region)
        return client


def _rounds(items: Sequence[Item]) -> List[List[Item]]:
    """Split ``items`` so no round holds two items of one name (e.g. latest and version 1)."""
    rounds: List[List[Item]] = []
    seen: Dict[str, int] = {}
    for item in items:
        index = seen.get(item.name, 0)
        seen[item.name] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(item)
    return rounds


def _answers(item: Item, parameter: Mapping[str, Any]) -> bool:
    """Whether ``parameter`` is the version ``item`` asked for, as far as the answer tells."""
    variant = dict(item.variant)
    selector = parameter.get("Selector")
    if "version" in variant:
        return str(parameter.get("Version")) == variant["version"]
    if "label" in variant:
        return selector is None or selector == f":{variant['label']}"
    return not selector


def _value(parameter: Mapping[str, Any]) -> Value:
    return Value(
        body=str(parameter.get("Value", "")).encode("utf-8"),
        content_type=TEXT,
        # The value is the body: kept once, not again in the metadata.
        metadata={k: v for k, v in parameter.items() if k != "Value"},
    )
