"""The probes' contract with user space, read from the C side.

`probes/fntax.h` is the one source of every layout and shared constant: this
module parses its structs, enums and #defines (no kernel, no bcc, so unit
tests run it too) and checks them against

* what bcc generated for each loaded map (`table.Leaf._fields_`): member
  names, order and widths, nested structs included;
* the figure table (`profiler.figures.FIGURES`): one u64 member of
  `struct fntax_counters` per figure, in the same order;
* the maps each probe family declares in its leading comment
  (`fntax:map NAME KIND KEY VALUE`).

A mismatch raises ProbeLoadError naming the file, the struct and the member.
"""

from __future__ import annotations

import ctypes
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from profiler.errors import ProbeLoadError
from profiler.figures import FIGURES

PROBES_DIR = Path(__file__).resolve().parent.parent.parent / "probes"
SHARED_HEADER = "fntax.h"
COUNTERS_STRUCT = "fntax_counters"

# Kernel map type numbers (include/uapi/linux/bpf.h).
MAP_KINDS: dict[str, int] = {"hash": 1, "array": 2, "percpu_hash": 5, "percpu_array": 6}
_SCALARS: dict[str, int] = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s32": 4, "s64": 8, "char": 1, "int": 4}


@dataclass(frozen=True)
class Member:
    name: str
    type_name: str  # a scalar (u32) or a struct name (fntax_counters)
    count: int  # array length; 1 for a plain member


@dataclass(frozen=True)
class Header:
    """What probes/fntax.h (and the family files) declare."""

    file: str
    structs: Mapping[str, tuple[Member, ...]]
    enums: Mapping[str, Mapping[str, int]]
    defines: Mapping[str, int]

    def size_align(self, type_name: str) -> tuple[int, int]:
        if type_name in _SCALARS:
            return _SCALARS[type_name], _SCALARS[type_name]
        if type_name not in self.structs:
            raise ProbeLoadError(f"{self.file}: unknown type {type_name!r}")
        offset, align = 0, 1
        for member in self.structs[type_name]:
            size, member_align = self.size_align(member.type_name)
            offset = -(-offset // member_align) * member_align + size * member.count
            align = max(align, member_align)
        return -(-offset // align) * align, align

    def size(self, type_name: str) -> int:
        return self.size_align(type_name)[0]

    def enum(self, name: str) -> Mapping[str, int]:
        if name not in self.enums:
            raise ProbeLoadError(f"{self.file}: enum {name} is missing")
        return self.enums[name]

    def define(self, name: str) -> int:
        if name not in self.defines:
            raise ProbeLoadError(f"{self.file}: #define {name} is missing")
        return self.defines[name]


_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_STRUCT = re.compile(r"struct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_ENUM = re.compile(r"enum\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\(?-?(?:0x[0-9a-fA-F]+|\d+)u?\)?)\s*$", re.M)
_MEMBER = re.compile(r"^(?:struct\s+)?(\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?$")


def _int(text: str) -> int:
    return int(text.strip("()").rstrip("uU"), 0)


def parse_header(text: str, file: str = SHARED_HEADER) -> Header:
    """Structs, enums and numeric #defines of a probe header (our own C subset)."""
    code = _COMMENT.sub(" ", text)
    defines = {name: _int(value) for name, value in _DEFINE.findall(code)}
    enums: dict[str, dict[str, int]] = {}
    for name, body in _ENUM.findall(code):
        values: dict[str, int] = {}
        following = 0
        for item in filter(None, (part.strip() for part in body.split(","))):
            key, _, value = (part.strip() for part in item.partition("="))
            following = _int(value) if value else following
            values[key] = following
            following += 1
        enums[name] = values
    structs: dict[str, tuple[Member, ...]] = {}
    for name, body in _STRUCT.findall(code):
        members = []
        for decl in filter(None, (part.strip() for part in body.split(";"))):
            match = _MEMBER.match(" ".join(decl.split()))
            if not match:
                raise ProbeLoadError(f"{file}: struct {name}: cannot read member {decl!r}")
            type_name, member, length = match.groups()
            count = 1 if length is None else (int(length) if length.isdigit() else defines.get(length, -1))
            if count < 0:
                raise ProbeLoadError(f"{file}: struct {name}: member {member}: unknown length {length}")
            members.append(Member(member, type_name, count))
        structs[name] = tuple(members)
    return Header(file, structs, enums, defines)


@functools.lru_cache(maxsize=4)
def load_header(probes_dir: Path = PROBES_DIR) -> Header:
    path = probes_dir / SHARED_HEADER
    try:
        return parse_header(path.read_text(), str(path))
    except OSError as err:
        raise ProbeLoadError(f"{path}: cannot read: {err.strerror}") from err


def check_figures(header: Header) -> None:
    """The figure table and struct fntax_counters: same members, same order, all u64."""
    members = header.structs.get(COUNTERS_STRUCT)
    if members is None:
        raise ProbeLoadError(f"{header.file}: struct {COUNTERS_STRUCT} is missing")
    for index in range(max(len(members), len(FIGURES))):
        member = members[index] if index < len(members) else None
        figure = FIGURES[index] if index < len(FIGURES) else None
        where = f"{header.file}: struct {COUNTERS_STRUCT}: member {index}"
        if member is None:
            raise ProbeLoadError(f"{where}: profiler/figures.py declares {figure.field if figure else '?'} "
                                 "but the struct has no such member")
        if figure is None or member.name != figure.field:
            raise ProbeLoadError(f"{where} is {member.name}, profiler/figures.py declares "
                                 f"{figure.field if figure else 'nothing'} there")
        if member.type_name != "u64" or member.count != 1:
            raise ProbeLoadError(f"{where}: {member.name} must be a single u64 (it is {member.type_name})")


def check_struct(header: Header, struct: str, ctype: Any, where: str) -> None:
    """Compare a parsed struct with the ctypes class bcc generated for it."""
    fields: Sequence[tuple[Any, ...]] = getattr(ctype, "_fields_", ())
    members = header.structs[struct]
    prefix = f"{where}: struct {struct} ({header.file})"
    if len(fields) != len(members):
        names = [f[0] for f in fields]
        raise ProbeLoadError(f"{prefix}: the loaded map has members {names}, "
                             f"the header {[m.name for m in members]}")
    for index, (member, field) in enumerate(zip(members, fields)):
        name, field_type = field[0], field[1]
        if name != member.name:
            raise ProbeLoadError(f"{prefix}: member {index} is {name} in the loaded map, {member.name} in the header")
        width = header.size(member.type_name) * member.count
        if ctypes.sizeof(field_type) != width:
            raise ProbeLoadError(f"{prefix}: member {member.name} is {ctypes.sizeof(field_type)} bytes loaded, "
                                 f"{width} in the header")
        if member.type_name in header.structs:
            inner = getattr(field_type, "_type_", field_type) if member.count > 1 else field_type
            check_struct(header, member.type_name, inner, where)


# `fntax:map?` declares a map compiled only under some -D flag (absent otherwise).
_DECL = re.compile(r"fntax:map(\??)\s+(\w+)\s+(\w+)\s+(\w+)\s+(\w+)")


@dataclass(frozen=True)
class MapDecl:
    """One declared map: where it was declared and what it must look like."""

    file: str
    name: str
    kind: str
    key_type: str
    value_type: str
    optional: bool = False


def parse_declarations(path: Path, header: Header | None = None) -> list[MapDecl]:
    """Read the `fntax:map` lines of one probe file, validating kinds and types."""
    decls = []
    for match in _DECL.finditer(path.read_text()):
        optional, name, kind, key, value = match.groups()
        if kind not in MAP_KINDS:
            raise ProbeLoadError(f"{path.name}: map {name}: unknown kind {kind!r}")
        for type_name in (key, value):
            if type_name in _SCALARS:
                continue
            header = header or load_header(path.parent)
            if type_name not in header.structs:
                raise ProbeLoadError(f"{path.name}: map {name}: unknown type {type_name!r}")
        decls.append(MapDecl(path.name, name, kind, key, value, optional == "?"))
    return decls


def family_path(family: str, probes_dir: Path = PROBES_DIR) -> Path:
    return probes_dir / f"{family}.bpf.c"


def check_loaded(header: Header, decl: MapDecl, map_type: int, key_type: Any, value_type: Any) -> None:
    """Compare one declaration with the loaded map: kind, then key and value layouts."""
    where = f"{decl.file}: map {decl.name}"
    if map_type != MAP_KINDS[decl.kind]:
        raise ProbeLoadError(f"{where}: declared {decl.kind}, loaded map type {map_type}")
    for role, declared, loaded in (("key", decl.key_type, key_type), ("value", decl.value_type, value_type)):
        size = header.size(declared)
        if ctypes.sizeof(loaded) != size:
            raise ProbeLoadError(f"{where}: {role} is {ctypes.sizeof(loaded)} bytes, declared {declared} ({size})")
        if declared in header.structs:
            check_struct(header, declared, loaded, where)


def enum_names(header: Header, enum: str, prefix: str, bounds: Sequence[str] = ()) -> dict[int, str]:
    """value -> lower-case name of an enum's members (FNTAX_ERR_PROCS -> procs), bounds left out."""
    return {value: name.removeprefix(prefix).lower()
            for name, value in header.enum(enum).items() if name.removeprefix(prefix) not in bounds}


def map_error_names(header: Header | None = None) -> dict[int, str]:
    """Slots of the errors map (enum fntax_map_error): slot -> map name."""
    return enum_names(header or load_header(), "fntax_map_error", "FNTAX_ERR_", ("SLOTS",))


def event_types(header: Header | None = None) -> dict[str, int]:
    """fork/exec/exit -> the event type number (enum fntax_event_type)."""
    return {name: value for value, name in
            enum_names(header or load_header(), "fntax_event_type", "FNTAX_EV_").items()}


def decompressor_ids(header: Header | None = None) -> tuple[dict[str, int], int, int]:
    """(library label -> id, first extra id, last id) from enum fntax_decomp_lib."""
    named = enum_names(header or load_header(), "fntax_decomp_lib", "FNTAX_LIB_", ("EXTRA", "LAST"))
    values = (header or load_header()).enum("fntax_decomp_lib")
    return ({f"lib{name}": value for value, name in named.items()},
            values["FNTAX_LIB_EXTRA"], values["FNTAX_LIB_LAST"])
