"""How the marshmallow schemas become an OpenAPI document that other tools read the same way we do.

Members generate clients from `/openapi.json` (openapi-python-client, openapi-generator, gateways that
validate requests), so the document has to mean, to a JavaScript regex engine and a code generator,
exactly what the server enforces. apispec's defaults do not, in three places, and this module fixes
them in one spot rather than per field:

- **Patterns.** JSON Schema patterns are ECMAScript regexes. Python's `\\A…\\Z` are not anchors there
  (`\\A` is a literal `A`), and Python's `$` also matches before a trailing newline. `Pattern` documents
  `^(?:body)$` and checks the value in Python with `re.fullmatch(body)`, so both engines accept exactly
  the same strings (tests/unit/test_openapi_patterns.py runs both).
- **Nullable nested objects.** For OpenAPI 3.0 apispec writes `anyOf: [{type: object, nullable: true},
  {$ref}]`, which generators read as "any object", so the nested model is lost. The 3.0 idiom that
  generators understand is `allOf: [{$ref}]` with `nullable: true`.
- **One of several shapes.** Batch results are a success or a problem per item. `Variant` dumps each item
  with the schema its discriminator names, and documents `oneOf` with a `discriminator`, so a generated
  client gets one typed model per variant.
- **Enums.** `Choice` is a `OneOf` with a name: the document holds each closed set once, as a named
  component (`Category`, `Tier`, ...) that inputs and outputs both reference, so a generated client has
  one enum per set instead of one per field (and a nullable one stays the same enum, or None).
- **Batch request items** are loaded one by one (one bad item must not sink the others), so the schema
  holds them as plain objects; `LoadedLater` documents them as the schema each item is loaded with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import marshmallow as ma
from apispec.ext.marshmallow import MarshmallowPlugin, OpenAPIConverter
from marshmallow import ValidationError, validate


class Pattern(validate.Regexp):
    """A whole-string pattern that means the same in Python and in ECMAScript (JSON Schema).

    `regex` (what apispec documents) is `^(?:body)$`; the check is `fullmatch(body)`, because Python's `$`
    would also accept a trailing newline that ECMAScript's refuses. Keep `body` to syntax both engines
    read alike: ASCII character classes and counted repeats, no `\\d`, `\\w` or `\\s` (Unicode in Python).
    """

    def __init__(self, body: str, error: str) -> None:
        super().__init__(f"^(?:{body})$" if "|" in body else f"^{body}$", error=error)
        self.body = body
        self.full = re.compile(body)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self.full.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class Choice(validate.OneOf):
    """A closed set of strings, documented once as the component schema `name`."""

    def __init__(self, name: str, choices: tuple[str, ...], description: str | None = None) -> None:
        super().__init__(choices)
        self.name = name
        self.description = description


class LoadedLater(ma.fields.Dict):
    """An object the view validates itself with `schema` (batch items); documented as that schema."""

    def __init__(self, schema: type[ma.Schema] | ma.Schema, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.documented_as = schema


class DateTimeText(ma.fields.String):
    """An RFC 3339 date-time that the service already holds as text (lookup answers are replayed from the
    audit record as recorded). Dumped as is; documented as `format: date-time`."""


class Variant(ma.fields.Field):
    """One of several schemas, chosen by the value of a discriminator property each of them requires.

    Output only: the views build the items, so an unknown discriminator value is a bug, not bad input.
    """

    def __init__(self, discriminator: str, variants: Mapping[str, type[ma.Schema]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.variants = dict(variants)
        self._schemas = {value: schema() for value, schema in self.variants.items()}

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:  # noqa: ARG002 (marshmallow's signature)
        if value is None:
            return None
        return self._schemas[value[self.discriminator]].dump(value)


# Keywords that may sit beside a reference (OpenAPI 3.0 ignores siblings of a bare `$ref`, so a field with
# any of them becomes `allOf: [$ref]` plus these).
_BESIDE_REF = ("description", "default", "readOnly", "writeOnly", "deprecated", "example", "nullable")


class Converter(OpenAPIConverter):
    def field2property(self, field: ma.fields.Field) -> dict[str, Any]:
        if isinstance(field, LoadedLater):
            ref = self.resolve_nested_schema(field.documented_as)
            return {"allOf": [ref], **_beside(super().field2property(field))} if field.metadata else ref
        choice = next((v for v in field.validators if isinstance(v, Choice)), None)
        if choice is None:
            return dict(super().field2property(field))
        ref = self._enum(choice)
        beside = _beside(super().field2property(field))
        if field.allow_none and (self.openapi_version.major, self.openapi_version.minor) == (3, 0):
            beside["nullable"] = True
        return {"allOf": [ref], **beside} if beside else ref

    def _enum(self, choice: Choice) -> dict[str, str]:
        schemas = self.spec.components.schemas
        component: dict[str, Any] = {"type": "string", "enum": list(choice.choices)}
        if choice.description:
            component["description"] = choice.description
        if choice.name not in schemas:
            self.spec.components.schema(choice.name, component)
        elif schemas[choice.name] != component:
            raise ValueError(f"two different enums are named {choice.name}")
        return {"$ref": f"#/components/schemas/{choice.name}"}

    def init_attribute_functions(self) -> None:
        super().init_attribute_functions()
        self.attribute_functions.append(self.variant2properties)
        self.attribute_functions.append(self.datetime_text2properties)

    def field2nullable(self, field: ma.fields.Field, ret: dict[str, Any]) -> dict[str, Any]:
        if not field.allow_none or (self.openapi_version.major, self.openapi_version.minor) != (3, 0):
            return dict(super().field2nullable(field, ret))
        if "$ref" in ret:
            return {"allOf": [{"$ref": ret.pop("$ref")}], "nullable": True}
        return {"nullable": True}

    def variant2properties(self, field: ma.fields.Field, **_: Any) -> dict[str, Any]:
        if not isinstance(field, Variant):
            return {}
        refs = {value: self.resolve_nested_schema(schema) for value, schema in field.variants.items()}
        unique = list({ref["$ref"]: ref for ref in refs.values()}.values())
        return {
            "oneOf": unique,
            "discriminator": {
                "propertyName": field.discriminator,
                "mapping": {value: ref["$ref"] for value, ref in refs.items()},
            },
        }

    def datetime_text2properties(self, field: ma.fields.Field, **_: Any) -> dict[str, Any]:
        return {"format": "date-time"} if isinstance(field, DateTimeText) else {}


def _beside(ret: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in ret.items() if key in _BESIDE_REF}


class Plugin(MarshmallowPlugin):
    Converter = Converter
