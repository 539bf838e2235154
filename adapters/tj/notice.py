"""Single notices: a payload as a JSON object (or one CSV row) whose keys are Tajik or Russian labels.

JSON keeps the canonical nesting and values; only the keys are words. In CSV a nested field is a
dotted path of labels («Корманд.Санаи таваллуд») and a list item is numbered from 1
(«Замимаҳо.1.SHA-256»); cells are text, so they are typed from the model before validation.
"""

from __future__ import annotations

import json
import types
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel

from adapters.base import MINISTRY_TYPES, AdapterError
from adapters.tj.formula import restored
from adapters.tj.labels import FIELD_OF_LABEL, TYPE_LABEL, TYPE_LABELS, Language, label, normal
from broker.core.catalogue import CATALOGUE, Payload, parse_payload, payload_class, payload_to_json
from broker.core.errors import Reason, ValidationError

PATH_SEPARATOR = "."
_TRUE = frozenset({"true", "ҳа", "да"})
_FALSE = frozenset({"false", "не", "нет"})


def notice_to_json(payload: Payload, language: Language) -> dict[str, object]:
    body = _localize(payload_to_json(payload), language)
    assert isinstance(body, dict)  # a payload dumps to an object
    return {TYPE_LABEL[language]: payload.MESSAGE_TYPE, **body}


def notice_to_row(payload: Payload, language: Language) -> dict[str, str]:
    """The notice as one CSV row: dotted label paths to text."""
    return dict(_flatten(notice_to_json(payload, language), prefix=""))


def notice_from_json(document: dict[str, object], *, filename: str, line: int) -> Payload:
    message_type, fields = _split_type(document, filename=filename, line=line)
    canonical = _canonical(fields, filename=filename, line=line)
    return _validate(message_type, canonical, filename=filename, line=line)


def notice_from_row(row: dict[str, str], *, filename: str, line: int) -> Payload:
    """One CSV row of notices; an empty cell is an absent field."""
    nested: dict[str, object] = {}
    for path, text in row.items():
        if text.strip():
            _put(nested, path.split(PATH_SEPARATOR), restored(text))  # as rendered: see formula.py
    message_type, fields = _split_type(_as_lists(nested), filename=filename, line=line)
    canonical = _canonical(fields, filename=filename, line=line)
    assert isinstance(canonical, dict)
    cls = payload_class(message_type, latest_version(message_type))
    return _validate(message_type, _typed(cls, canonical), filename=filename, line=line)


def is_notice_header(keys: list[str]) -> bool:
    return any(normal(key) in TYPE_LABELS for key in keys)


def latest_version(message_type: str) -> int:
    versions = [version for (known, version) in CATALOGUE if known == message_type]
    return max(versions, default=1)


def _split_type(document: dict[str, object], *, filename: str, line: int) -> tuple[str, dict[str, object]]:
    type_keys = [key for key in document if normal(key) in TYPE_LABELS]
    if len(type_keys) != 1 or not isinstance(document[type_keys[0]], str):
        wanted = " or ".join(f"«{name}»" for name in TYPE_LABEL.values())
        raise AdapterError(
            Reason.ADAPTER_INVALID,
            f"a notice names its message type once, under {wanted}",
            filename=filename,
            line=line,
        )
    message_type = str(document[type_keys[0]])
    if message_type not in MINISTRY_TYPES:
        known = ", ".join(sorted(MINISTRY_TYPES))
        raise AdapterError(
            Reason.SCHEMA_UNKNOWN_TYPE,
            f"no message type {message_type!r} a ministry sends ({known})",
            filename=filename,
            line=line,
        )
    return message_type, {key: value for key, value in document.items() if key != type_keys[0]}


def _validate(message_type: str, canonical: object, *, filename: str, line: int) -> Payload:
    body = json.dumps(canonical, ensure_ascii=False).encode("utf-8")
    try:
        return parse_payload(message_type, latest_version(message_type), body)
    except ValidationError as error:
        raise AdapterError.wrap(error, filename=filename, line=line) from None


def _localize(value: object, language: Language) -> object:
    if isinstance(value, dict):
        # An absent field (None) is left out, as a person filling the form would leave it out.
        return {label(k, language): _localize(v, language) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_localize(item, language) for item in value]
    return value


def _canonical(value: object, *, filename: str, line: int) -> object:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            field = FIELD_OF_LABEL.get(normal(key))
            if field is None:
                raise AdapterError(
                    Reason.ADAPTER_INVALID, f"unknown label «{key}»", filename=filename, line=line
                )
            if field in out:
                raise AdapterError(
                    Reason.ADAPTER_INVALID, f"label «{key}» repeated", filename=filename, line=line
                )
            out[field] = _canonical(item, filename=filename, line=line)
        return out
    if isinstance(value, list):
        return [_canonical(item, filename=filename, line=line) for item in value]
    return value


def _flatten(value: object, *, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(str(index), item) for index, item in enumerate(value, start=1)]
    elif value is None:
        return [(prefix, "")]  # an empty cell is an absent field
    elif isinstance(value, bool):
        return [(prefix, "true" if value else "false")]
    else:
        return [(prefix, str(value))]
    out: list[tuple[str, str]] = []
    for key, item in items:
        out += _flatten(item, prefix=f"{prefix}{PATH_SEPARATOR}{key}" if prefix else key)
    return out


def _put(tree: dict[str, object], path: list[str], text: str) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part.strip(), {})
        if not isinstance(child, dict):
            child = node[part.strip()] = {}
        node = child
    node[path[-1].strip()] = text


def _as_lists(tree: dict[str, object]) -> dict[str, object]:
    """Numbered keys (1, 2, ...) become lists, in their order."""

    def convert(value: object) -> object:
        if not isinstance(value, dict):
            return value
        if value and all(key.isdigit() for key in value):
            return [convert(value[key]) for key in sorted(value, key=int)]
        return {key: convert(item) for key, item in value.items()}

    converted = convert(tree)
    assert isinstance(converted, dict)
    return converted


def _typed(cls: type[BaseModel], data: dict[str, object]) -> dict[str, object]:
    """CSV cells are text: turn those whose field is a number, a flag or a list into JSON types."""
    out: dict[str, object] = {}
    for key, value in data.items():
        field = cls.model_fields.get(key)
        out[key] = _typed_value(field.annotation, value) if field else value
    return out


def _typed_value(annotation: object, value: object) -> object:
    annotation = _unwrap(annotation)
    if get_origin(annotation) is tuple and isinstance(value, list):
        item_type = get_args(annotation)[0]
        return [_typed_value(item_type, item) for item in value]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        return _typed(annotation, value)
    if not isinstance(value, str):
        return value
    if annotation is bool:
        word = normal(value)
        return True if word in _TRUE else False if word in _FALSE else value
    if annotation is int:
        try:
            return int(value.strip())
        except ValueError:
            return value  # the model reports the wrong type, with its path
    return value


def _unwrap(annotation: object) -> object:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            present = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(present) != 1:
                return annotation
            annotation = present[0]
        else:
            return annotation
