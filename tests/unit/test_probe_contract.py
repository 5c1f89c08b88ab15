"""Each probe file's declared maps exist in the C with the declared layout (no kernel)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from profiler.errors import ProbeLoadError
from profiler.bpf.probes import FAMILIES
from profiler.bpf.contracts import (
    MAP_KINDS,
    PROBES_DIR,
    SHARED_HEADER,
    TYPE_SIZES,
    check_loaded,
    family_path,
    parse_declarations,
)

_BCC_MACRO_KIND = {"BPF_HASH": "hash", "BPF_ARRAY": "array", "BPF_PERCPU_ARRAY": "percpu_array",
                   "BPF_PERCPU_HASH": "percpu_hash"}
_DEFINITION = re.compile(r"^(BPF_\w+)\((\w+),\s*([^,]+?),\s*([^,)]+?)\s*(?:,|\))", re.M)


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


def test_mirror_sizes_are_8_byte_multiples_where_structs_hold_u64() -> None:
    for name in ("fntax_counters", "fntax_proc", "fntax_task", "fntax_cpu", "fntax_sys_val"):
        assert TYPE_SIZES[name] % 8 == 0, name


def test_bad_declaration_names_file_and_map(tmp_path: Path) -> None:
    bad = tmp_path / "bogus.bpf.c"
    bad.write_text("/* fntax:map things ringbuf u32 u64 */\n")
    with pytest.raises(ProbeLoadError, match=r"bogus.bpf.c: map things: unknown kind"):
        parse_declarations(bad)


def test_check_loaded_reports_size_mismatch() -> None:
    decl = parse_declarations(family_path("syscalls"))[0]
    with pytest.raises(ProbeLoadError, match=decl.name):
        check_loaded(decl, MAP_KINDS[decl.kind], decl.key_size, decl.value_size + 8)
    check_loaded(decl, MAP_KINDS[decl.kind], decl.key_size, decl.value_size)
