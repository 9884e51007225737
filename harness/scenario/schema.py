"""The JSON schema of a scenario file (validated with jsonschema; errors get line and column).

Why a schema and not ad-hoc checks: it is the format's documentation in one place, and every
problem is found in one pass. Operation arguments are validated separately, against the schema
each operation registers (harness.scenario.registry), because the set of operations grows as
capabilities land.
"""
from __future__ import annotations

ID_PATTERN = r"^[a-z0-9_-]+/[0-9]{3}(-[A-Za-z0-9-]+)?$"
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"

TRANSPORTS = ["tcp", "udp", "nbt", "quic", "smbdirect"]

SCALAR = {"type": ["string", "number", "boolean", "null"]}

#: Keys every step accepts besides the operation's own arguments.
COMMON_STEP_KEYS = {
    "as": {"type": "string", "pattern": NAME_PATTERN},
    "background": {"type": "boolean"},
    "timeout": {"type": "number", "exclusiveMinimum": 0},
    "expect": {
        "type": "object", "additionalProperties": False,
        "properties": {
            "outcome": {"enum": ["success", "error", "any"]},
            "errno": {"type": "string", "pattern": r"^E[A-Z0-9]+$"},
            "ntstatus": {"type": "string", "pattern": r"^STATUS_[A-Z0-9_]+$"},
        },
    },
}

STEP = {"type": "object", "minProperties": 1, "maxProperties": 1,
        "additionalProperties": {"anyOf": [{"type": "object"}, {"type": "null"}, {"type": "array"}]}}

#: `when: {NAME: value or [values]}` on an expectation: it applies only to the cells whose matrix label
#: (or, for a name that is not an axis, section variable / `vars:` value) is one of the values.
#: A list of such mappings: any one of them (or).
_WHEN_ONE = {"type": "object", "minProperties": 1, "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_.-]*$"},
             "additionalProperties": {"anyOf": [SCALAR, {"type": "array", "minItems": 1, "items": SCALAR}]}}
WHEN = {"anyOf": [_WHEN_ONE, {"type": "array", "minItems": 1, "items": _WHEN_ONE}]}

EXPECT_KINDS = ["exit", "sha256", "file.sha256", "value", "pcap"]

EXPECT_ITEM = {
    "type": "object", "minProperties": 1, "maxProperties": 2,
    "anyOf": [{"required": [k]} for k in EXPECT_KINDS],
    "not": {"anyOf": [{"required": [a, b]} for i, a in enumerate(EXPECT_KINDS) for b in EXPECT_KINDS[i + 1:]]},
    "properties": {
        "when": WHEN,
        "exit": {"type": "object", "additionalProperties": False, "required": ["proc"],
                 "properties": {"proc": {"type": "string"}, "status": {"type": "integer"},
                                "timeout": {"type": "number", "exclusiveMinimum": 0}}},
        "sha256": {"type": "object", "additionalProperties": False, "required": ["of", "equals"],
                   "properties": {"of": {"type": "string"}, "equals": {"type": "string"}}},
        "file.sha256": {"type": "object", "additionalProperties": False, "required": ["path", "equals"],
                        "properties": {"path": {"type": "string"}, "equals": {"type": "string"}}},
        "value": {"type": "object", "additionalProperties": False, "required": ["of"],
                  "properties": {"of": {"type": "string"}, "eq": {}, "ne": {}, "min": {"type": "number"},
                                 "max": {"type": "number"}}},
        "pcap": {"anyOf": [{"type": "array"},
                           {"type": "object", "additionalProperties": False, "required": ["file"],
                            "properties": {"file": {"type": "string"}}}]},
    },
    "additionalProperties": False,
}

SCENARIO = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "description", "groups", "steps"],
    "properties": {
        "id": {"type": "string", "pattern": ID_PATTERN},
        "description": {"type": "string", "minLength": 1},
        "groups": {"type": "array", "minItems": 1, "uniqueItems": True,
                   "items": {"type": "string", "pattern": NAME_PATTERN}},
        "requires": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "transports": {"type": "array", "items": {"type": "string"}},
                "programs": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "modules": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "pkg_config": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "paths": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["setting", "default"],
                    "properties": {"setting": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                                   "default": {"type": "string", "minLength": 1}}}},
                "sections": {"type": "array", "items": {"type": "string", "pattern": NAME_PATTERN}},
            },
        },
        "timeout": {"type": "number", "exclusiveMinimum": 0},
        "step_timeout": {"type": "number", "exclusiveMinimum": 0},
        "vars": {"type": "object", "additionalProperties": {}},
        "matrix": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"anyOf": [
                {"type": "array", "minItems": 1, "items": SCALAR},
                {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME_PATTERN}},
            ]},
        },
        "exclude": {"type": "array", "items": {
            "type": "object", "minProperties": 1,
            "additionalProperties": {"anyOf": [SCALAR, {"type": "array", "items": SCALAR}]}}},
        "steps": {"type": "array", "minItems": 1, "items": STEP},
        "expect": {"type": "array", "items": EXPECT_ITEM},
    },
}
