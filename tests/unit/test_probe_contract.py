"""Each probe file's declared maps exist in the C with the declared layout (no kernel).

The layouts come from probes/fntax.h alone; the checks that run at load are
exercised here against ctypes classes built the way bcc builds them.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path
from typing import Any

import pytest

from profiler.bpf.contracts import (
    MAP_KINDS,
    PROBES_DIR,
    SHARED_HEADER,
    Header,
    check_figures,
    check_loaded,
    check_struct,
    decompressor_ids,
    event_types,
    family_path,
    load_header,
    map_error_names,
    parse_declarations,
    parse_header,
)
from profiler.bpf.loader import FAMILIES
from profiler.errors import ProbeLoadError
from profiler.figures import FIGURES

_BCC_MACRO_KIND = {"BPF_HASH": "hash", "BPF_ARRAY": "array", "BPF_PERCPU_ARRAY": "percpu_array",
                   "BPF_PERCPU_HASH": "percpu_hash"}
_DEFINITION = re.compile(r"^(BPF_\w+)\((\w+),\s*([^,]+?),\s*([^,)]+?)\s*(?:,|\))", re.M)
_CTYPES = {"u8": ctypes.c_uint8, "u16": ctypes.c_uint16, "u32": ctypes.c_uint32, "u64": ctypes.c_uint64,
           "char": ctypes.c_char, "int": ctypes.c_int}


def ctype_of(header: Header, type_name: str, swap: tuple[str, str] | None = None) -> Any:
    """A ctypes class for a header type, as bcc generates it (optionally with two members swapped)."""
    if type_name in _CTYPES:
        return _CTYPES[type_name]
    fields = []
    for member in header.structs[type_name]:
        ctype = ctype_of(header, member.type_name)
        fields.append((member.name, ctype * member.count if member.count > 1 else ctype))
    if swap:
        names = [f[0] for f in fields]
        i, j = names.index(swap[0]), names.index(swap[1])
        fields[i], fields[j] = fields[j], fields[i]
    return type(type_name, (ctypes.Structure,), {"_fields_": fields})


def _definitions() -> dict[str, tuple[str, str, str]]:
    """map name -> (kind, key C type, value C type) from every probe source."""
    found = {}
    for path in [PROBES_DIR / SHARED_HEADER, *(family_path(f) for f in FAMILIES)]:
        for macro, name, key, value in _DEFINITION.findall(path.read_text()):
            if macro in _BCC_MACRO_KIND:
                # BPF_ARRAY(name, value, size): the key is an int index.
                if macro.endswith("ARRAY"):
                    key, value = "u32", key
                found[name] = (_BCC_MACRO_KIND[macro], key, value)
    return found


def _bare(c_type: str) -> str:
    return c_type.replace("struct ", "").strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_maps_match_their_definitions(family: str) -> None:
    definitions = _definitions()
    decls = parse_declarations(family_path(family))
    for decl in decls:
        assert decl.name in definitions, f"{decl.file}: {decl.name} declared but never defined"
        kind, key, value = definitions[decl.name]
        assert decl.kind == kind, decl
        assert decl.key_type == _bare(key), decl
        assert decl.value_type == _bare(value), decl


def test_every_family_declares_maps() -> None:
    for family in FAMILIES:
        assert parse_declarations(family_path(family)), f"{family}.bpf.c declares no maps"


def test_struct_sizes_are_8_byte_multiples_where_structs_hold_u64() -> None:
    header = load_header()
    for name in ("fntax_counters", "fntax_proc", "fntax_task", "fntax_cpu", "fntax_sys_val"):
        assert header.size(name) % 8 == 0, name
        assert header.size(name) == ctypes.sizeof(ctype_of(header, name)), name


def test_bad_declaration_names_file_and_map(tmp_path: Path) -> None:
    bad = tmp_path / "bogus.bpf.c"
    bad.write_text("/* fntax:map things ringbuf u32 u64 */\n")
    with pytest.raises(ProbeLoadError, match=r"bogus.bpf.c: map things: unknown kind"):
        parse_declarations(bad)


def test_check_loaded_reports_size_mismatch() -> None:
    header = load_header()
    decl = parse_declarations(family_path("syscalls"))[0]
    key, value = ctype_of(header, decl.key_type), ctype_of(header, decl.value_type)
    too_big = type("big", (ctypes.Structure,), {"_fields_": [("v", value), ("pad", ctypes.c_uint64)]})
    with pytest.raises(ProbeLoadError, match=decl.name):
        check_loaded(header, decl, MAP_KINDS[decl.kind], key, too_big)
    check_loaded(header, decl, MAP_KINDS[decl.kind], key, value)


def test_every_declared_map_passes_against_the_header() -> None:
    header = load_header()
    for family in FAMILIES:
        for decl in parse_declarations(family_path(family)):
            check_loaded(header, decl, MAP_KINDS[decl.kind], ctype_of(header, decl.key_type),
                         ctype_of(header, decl.value_type))


def test_swapped_u64_members_fail_naming_file_struct_and_member() -> None:
    header = load_header()
    procs = next(d for d in parse_declarations(family_path("sched")) if d.name == "procs")
    swapped_counters = ctype_of(header, "fntax_counters", swap=("oncpu_ns", "runqueue_ns"))
    proc = type("fntax_proc", (ctypes.Structure,), {"_fields_": [
        ("c", swapped_counters), ("workload", ctypes.c_uint32), ("exited", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16)]})
    assert ctypes.sizeof(proc) == header.size("fntax_proc")  # the old size-only check passed this
    with pytest.raises(ProbeLoadError, match=r"sched.bpf.c: map procs: struct fntax_counters \(.*fntax.h\): "
                                             r"member 5 is runqueue_ns in the loaded map, oncpu_ns in the header"):
        check_loaded(header, procs, MAP_KINDS["hash"], ctypes.c_uint32, proc)


def test_narrowed_member_fails() -> None:
    header = load_header()
    narrow = type("fntax_sys_key", (ctypes.Structure,), {"_fields_": [("tgid", ctypes.c_uint32),
                                                                      ("nr", ctypes.c_uint16)]})
    with pytest.raises(ProbeLoadError, match="member nr is 2 bytes loaded, 4 in the header"):
        check_struct(header, "fntax_sys_key", narrow, "syscalls.bpf.c: map proc_syscalls")


def test_figure_table_matches_the_counters_struct() -> None:
    header = load_header()
    check_figures(header)
    assert [m.name for m in header.structs["fntax_counters"]] == [f.field for f in FIGURES]


def test_figure_table_mismatch_names_the_member() -> None:
    text = (PROBES_DIR / SHARED_HEADER).read_text().replace("u64 oncpu_ns;", "u64 oncpu_time_ns;")
    with pytest.raises(ProbeLoadError, match="struct fntax_counters: member 5 is oncpu_time_ns, "
                                             "profiler/figures.py declares oncpu_ns there"):
        check_figures(parse_header(text, "fntax.h"))


def test_enums_come_from_the_header() -> None:
    header = load_header()
    assert map_error_names(header) == {0: "tasks", 1: "procs", 2: "proc_syscalls", 3: "decomp_active", 4: "decomp",
                                       5: "proc_kvm"}
    assert event_types(header) == {"fork": 1, "exec": 2, "exit": 3}
    ids, first_extra, last = decompressor_ids(header)
    assert ids["liblzma"] == 2 and ids["libz"] == 0 and first_extra == 5 and last == 12
