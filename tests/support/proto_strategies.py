"""Hypothesis strategies for any protobuf request, built by walking its
Descriptor, biased to the values that break servers: empty, very long,
unicode, control characters and NUL in strings; negative and extreme
numbers; unknown enum values; unknown FieldMask paths; and, mixed in, the
valid values a test names (`Pool`), so that some requests succeed and
change what the next ones meet.

`requests(descriptor, pool)` draws one request message of that type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 4
"""Nested messages deeper than this are left empty."""

EDGE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\n",
    "web\n",
    "\t\r\x1b[31m\x7f",
    "\u00e9",
    "\u4e2d\u6587",
    "\U0001f600",
    "\u202e\u200b",
    "..",
    "../../etc/passwd",
    "*",
    "%s%n",
    "'; DROP TABLE vms; --",
    "x" * 65,
    "y" * 300,
    "z" * 5000,
    "w" * 100_000,
)

UNKNOWN_MASK_PATHS = ("", "nope", "spec.", ".", "spec.nope", "name.x", "*", "spec.boot.x.y", "id")

_INT_RANGES = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}


@dataclass(frozen=True)
class Pool:
    """Valid values to mix in: strings (names, ids, paths that exist),
    numbers (sizes a VM may have) and whole messages (a VM's spec that
    starts), each drawn in place of a generated one of its type."""

    strings: tuple[str, ...] = ()
    numbers: tuple[int, ...] = (1, 2, 64, 128)
    messages: tuple[Message, ...] = ()

    def valid(self, descriptor: Descriptor) -> list[Message]:
        return [m for m in self.messages if m.DESCRIPTOR.full_name == descriptor.full_name]


def requests(descriptor: Descriptor, pool: Pool) -> st.SearchStrategy[Message]:
    """A strategy for messages of descriptor's type."""
    return _message(descriptor, pool, 0, _mask_paths(descriptor))


def _message(
    descriptor: Descriptor, pool: Pool, depth: int, paths: tuple[str, ...]
) -> st.SearchStrategy[Message]:
    cls = message_factory.GetMessageClass(descriptor)
    if descriptor.full_name == "google.protobuf.FieldMask":
        known = st.sampled_from(paths) if paths else st.nothing()
        path = st.one_of(known, st.sampled_from(UNKNOWN_MASK_PATHS), st.text(max_size=12))
        return st.lists(path, max_size=4).map(lambda p: _mask(cls, p))
    if depth > MAX_DEPTH:
        return st.just(cls())
    optional = {f.name: _field(f, pool, depth, paths) for f in descriptor.fields}
    built = st.fixed_dictionaries({}, optional=optional).map(lambda v: _build(cls, descriptor, v))
    valid = pool.valid(descriptor)
    return st.one_of(built, st.sampled_from(valid)) if valid else built


def _mask(cls: Callable[[], Message], paths: list[str]) -> Message:
    mask = cls()
    getattr(mask, "paths").extend(paths)  # noqa: B009 (a FieldMask, typed as any Message)
    return mask


def _build(cls: Callable[[], Message], descriptor: Descriptor, values: dict[str, Any]) -> Message:
    built = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(built, name)
        if _is_map(field):
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            target.extend(value)
        elif field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(built, name, value)
    return built


def _field(
    field: FieldDescriptor, pool: Pool, depth: int, paths: tuple[str, ...]
) -> st.SearchStrategy[Any]:
    if _is_map(field):
        entry = _of(field)
        key = _scalar(entry.fields_by_name["key"], pool, depth, paths)
        value = _scalar(entry.fields_by_name["value"], pool, depth, paths)
        many = st.integers(0, 300).map(lambda n: {f"k{i}": "v" for i in range(n)})
        return st.one_of(st.dictionaries(key, value, max_size=3), many)
    one = _scalar(field, pool, depth, paths)
    if field.is_repeated:
        return st.one_of(st.lists(one, max_size=3), one.map(lambda v: [v] * 200))
    return one


def _scalar(
    field: FieldDescriptor, pool: Pool, depth: int, paths: tuple[str, ...]
) -> st.SearchStrategy[Any]:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message(_of(field), pool, depth + 1, paths)
    if kind == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.binary(max_size=32), st.just(b"\x00" * 70_000))
        return _strings(pool)
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        numbers = [v.number for v in field.enum_type.values]
        return st.sampled_from([*numbers, -1, max(numbers) + 1, 2**31 - 1])
    if kind in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.CPPTYPE_FLOAT else 64)
    low, high = _INT_RANGES[kind]
    edges = sorted({v for v in (low, high, -1, 0, 1, 2**31 - 1, 2**32, 2**53) if low <= v <= high})
    valid = [n for n in pool.numbers if low <= n <= high]
    return st.one_of(st.sampled_from(edges), st.sampled_from(valid), st.integers(low, high))


def _strings(pool: Pool) -> st.SearchStrategy[str]:
    choices = [st.sampled_from(EDGE_STRINGS), st.text(max_size=24)]
    if pool.strings:
        valid = st.sampled_from(pool.strings)
        choices += [valid, valid, valid.map(lambda s: s + "\x00"), valid.map(str.upper)]
    return st.one_of(choices)


def _is_map(field: FieldDescriptor) -> bool:
    return (
        field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
        and field.is_repeated
        and _of(field).GetOptions().map_entry
    )


def _of(field: FieldDescriptor) -> Descriptor:
    """The message type of a message field."""
    assert field.message_type is not None, field.full_name
    return field.message_type


def _mask_paths(descriptor: Descriptor) -> tuple[str, ...]:
    """The dotted paths of the fields of the request's message fields (the
    resource an update_mask names), two levels deep."""
    found: list[str] = []
    for field in descriptor.fields:
        if field.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE or _is_map(field):
            continue
        for inner in _of(field).fields:
            found.append(inner.name)
            if inner.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE and not _is_map(inner):
                found += [f"{inner.name}.{leaf.name}" for leaf in _of(inner).fields]
    return tuple(sorted(set(found)))
