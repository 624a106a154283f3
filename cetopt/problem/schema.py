"""JSON Schema (draft 2020-12) of the ``cetopt.problem/1`` format, for editors and other languages.

cetopt's own loader (:mod:`cetopt.problem.io`) validates more than the schema can say (unique names,
tie groups that share bits, matrix shapes) and names the offending field; tests check both agree on the
shipped problems.
"""

from __future__ import annotations

from typing import Any

_number = {"type": "number"}
_positive = {"type": "number", "exclusiveMinimum": 0}
_bits = {"type": "integer", "minimum": 1, "maximum": 64}

PROBLEM_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "cetopt.problem/1",
    "title": "cetopt allocation problem",
    "type": "object",
    "required": ["format", "name", "layers"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": "cetopt.problem/1"},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "minimize": {"enum": ["loss", "size"], "default": "loss"},
        "activation_bits": {**_bits, "default": 8},
        "budget": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "avg_bits": _positive, "size_bits": _positive, "size_bytes": _positive, "ratio": _positive,
                "bops": _positive, "max_loss": _number,
            },
        },
        "layers": {"oneOf": [{
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "params", "choices"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "params": {"type": "integer", "minimum": 1},
                    "macs": {"type": "integer", "minimum": 0},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2,
                              "maxItems": 2},
                    "min_bits": _bits, "max_bits": _bits, "fixed_bits": _bits,
                    "choices": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["bits", "loss"],
                            "additionalProperties": False,
                            "properties": {
                                "bits": _bits,
                                "loss": _number,
                                "size_bits": {"type": "number", "minimum": 0},
                                "bops": {"type": "number", "minimum": 0},
                                "rank": {"type": "integer", "minimum": 1},
                                "terms": {"type": "integer", "minimum": 1, "maximum": 64},
                                "loss_stderr": {"type": "number", "minimum": 0},
                            },
                        },
                    },
                },
            },
        }, {
            "description": "the column form (cetopt.problem.columns): one entry per layer in every column",
            "type": "object",
            "required": ["name", "params", "bits", "loss"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
                "params": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                "macs": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "bits": {"type": "array", "items": {"type": "array", "minItems": 1, "items": _bits}},
                "loss": {"type": "array", "items": {"type": "array", "minItems": 1, "items": _number}},
            },
        }]},
        "ties": {"type": "array", "items": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
        "interactions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["layers", "loss"],
                "additionalProperties": False,
                "properties": {
                    "layers": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                    "loss": {"type": "array", "minItems": 1, "items": {"type": "array", "items": _number}},
                },
            },
        },
        "edges": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["from", "to"],
                "additionalProperties": False,
                "properties": {
                    "from": {"type": "string"}, "to": {"type": "string"},
                    "kind": {"enum": ["feeds", "shares_input", "adds_with"], "default": "feeds"},
                },
            },
        },
        "metadata": {"type": "object"},
    },
}
