"""Guest image builders and the QEMU command line (pure bytes checks, no root, no KVM).

The builders hand-assemble their code. Two checks that do not trust the
builder's own comments: a tiny interpreter of the instruction subset they emit
(it runs the code and counts the port writes and the exit value), and, when
binutils is installed, objdump's disassembly of the same bytes.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from profiler.system import guest_image as build  # noqa: E402
from profiler.system.guest_image import (  # noqa: E402
    BIOS_TICKS_ADDRESS, ISA_DEBUG_EXIT_PORT, PVH_LOAD_ADDRESS, XEN_ELFNOTE_PHYS32_ENTRY,
    build_boot_sector, build_pvh_elf, boot_sector_bytes, boot_sector_code, pvh_code, pvh_elf_bytes,
    qemu_exit_status,
)
from profiler.system.guest_vm import qemu_command  # noqa: E402


def execute(code: bytes, bits: int, max_steps: int = 10_000_000) -> tuple[list[tuple[int, int]], int]:
    """Run the builders' instruction subset; return (port writes, halts).

    Stops at the first write to the isa-debug-exit port (QEMU exits there).
    Every `hlt` advances the BIOS tick counter by one (the timer woke it).
    """
    regs = {"ecx": 0, "ebx": 0, "edx": 0, "eax": 0}
    memory = {BIOS_TICKS_ADDRESS: 0}
    writes: list[tuple[int, int]] = []
    halts = 0
    zf = False
    ip = 0
    for _ in range(max_steps):
        op32 = bits == 32
        b = code[ip]
        if b == 0x66:
            op32 = not op32
            ip += 1
            b = code[ip]
        if b in (0xFA, 0xFB):                     # cli / sti
            ip += 1
        elif b == 0x31 and code[ip + 1] == 0xC0:  # xor ax, ax
            regs["eax"] = 0
            ip += 2
        elif b == 0x8E and code[ip + 1] == 0xD8:  # mov ds, ax
            ip += 2
        elif b in (0xB9, 0xBB) and op32:          # mov ecx/ebx, imm32
            regs["ecx" if b == 0xB9 else "ebx"] = struct.unpack_from("<I", code, ip + 1)[0]
            ip += 5
        elif b == 0xBA:                           # mov dx, imm16
            regs["edx"] = struct.unpack_from("<H", code, ip + 1)[0]
            ip += 3
        elif b == 0xB0:                           # mov al, imm8
            regs["eax"] = (regs["eax"] & ~0xFF) | code[ip + 1]
            ip += 2
        elif b == 0xEE:                           # out dx, al
            writes.append((regs["edx"] & 0xFFFF, regs["eax"] & 0xFF))
            ip += 1
            if regs["edx"] == ISA_DEBUG_EXIT_PORT:
                return writes, halts
        elif b in (0x49, 0x4B) and op32:          # dec ecx / ebx
            name = "ecx" if b == 0x49 else "ebx"
            regs[name] = (regs[name] - 1) & 0xFFFFFFFF
            zf = regs[name] == 0
            ip += 1
        elif b in (0x74, 0x75, 0xEB):             # je/jz, jnz, jmp rel8
            rel = struct.unpack_from("<b", code, ip + 1)[0]
            taken = b == 0xEB or (b == 0x74) == zf
            ip += 2 + (rel if taken else 0)
        elif b == 0xF4:                           # hlt: the next timer tick
            halts += 1
            memory[BIOS_TICKS_ADDRESS] += 1
            ip += 1
        elif b == 0xA1:                           # mov ax, [moffs16]
            regs["eax"] = memory[struct.unpack_from("<H", code, ip + 1)[0]]
            ip += 3
        elif b == 0x3B and code[ip + 1] == 0x06:  # cmp ax, [disp16]
            zf = (regs["eax"] & 0xFFFF) == memory[struct.unpack_from("<H", code, ip + 2)[0]]
            ip += 4
        else:
            raise AssertionError(f"unexpected opcode {b:#x} at {ip}")
    raise AssertionError("guest did not reach its exit")


@pytest.mark.parametrize("writes", [0, 1, 7, 1000])
@pytest.mark.parametrize("spin", [0, 3])
def test_boot_sector_makes_exactly_n_writes_then_exits(writes: int, spin: int) -> None:
    image = boot_sector_bytes(writes, 0x80, spin=spin, exit_value=0x21)
    assert len(image) == 512 and image[510:] == b"\x55\xaa"
    done, halts = execute(image, bits=16)
    assert done[:-1] == [(0x80, build.WRITE_VALUE)] * writes
    assert done[-1] == (ISA_DEBUG_EXIT_PORT, 0x21)
    assert halts == 0


def test_boot_sector_halts_through_the_ticks_asked() -> None:
    done, halts = execute(boot_sector_bytes(5, 0x80, halt_ticks=4), bits=16)
    assert halts == 4
    assert len(done) == 6


@pytest.mark.parametrize("writes", [0, 1, 5000])
def test_pvh_code_makes_exactly_n_writes_then_exits(writes: int) -> None:
    done, _ = execute(pvh_code(writes, 0x2F0, spin=2, exit_value=3), bits=32)
    assert done == [(0x2F0, build.WRITE_VALUE)] * writes + [(ISA_DEBUG_EXIT_PORT, 3)]


def test_exit_status_follows_isa_debug_exit() -> None:
    assert qemu_exit_status(0x21) == 67
    assert qemu_exit_status(0) == 1
    spec = build.GuestSpec(10, 0x80, 0xF4, 0x21)
    assert spec.exit_status == 67 and spec.pio_writes == 11


def test_build_functions_write_files(tmp_path: Path) -> None:
    spec = build_boot_sector(tmp_path / "bs.img", 12, 0x80)
    assert (tmp_path / "bs.img").read_bytes() == boot_sector_bytes(12, 0x80)
    assert spec.writes == 12 and spec.port == 0x80
    spec = build_pvh_elf(tmp_path / "g.elf", 12, 0x80, spin=5)
    assert (tmp_path / "g.elf").read_bytes() == pvh_elf_bytes(12, 0x80, spin=5)
    assert spec.spin == 5


def test_pvh_elf_layout() -> None:
    image = pvh_elf_bytes(100, 0x80)
    assert image[:4] == b"\x7fELF" and image[4] == 2 and image[5] == 1       # ELF64, little endian
    e_type, e_machine, _, e_entry, e_phoff = struct.unpack_from("<HHIQQ", image, 16)
    e_phentsize, e_phnum = struct.unpack_from("<HH", image, 54)
    assert (e_type, e_machine) == (2, 62)
    phdrs = [struct.unpack_from("<IIQQQQQQ", image, e_phoff + i * e_phentsize) for i in range(e_phnum)]
    loads = [p for p in phdrs if p[0] == 1]
    notes = [p for p in phdrs if p[0] == 4]
    assert len(loads) == 1 and len(notes) == 1
    _, _, offset, vaddr, paddr, filesz, memsz, _ = loads[0]
    assert (offset, vaddr, paddr, filesz, memsz) == (0, PVH_LOAD_ADDRESS, PVH_LOAD_ADDRESS, len(image), len(image))
    note_off, note_size, note_align = notes[0][2], notes[0][5], notes[0][7]
    namesz, descsz, ntype = struct.unpack_from("<III", image, note_off)
    name = image[note_off + 12:note_off + 12 + namesz]
    desc_off = note_off + 12 + ((namesz + note_align - 1) // note_align) * note_align
    (entry,) = struct.unpack_from("<I", image, desc_off)
    assert (name, descsz, ntype) == (b"Xen\0", 4, XEN_ELFNOTE_PHYS32_ENTRY)
    assert desc_off + descsz <= note_off + note_size
    assert entry == e_entry
    code = image[entry - PVH_LOAD_ADDRESS:]
    assert code == pvh_code(100, 0x80)


@pytest.mark.parametrize("bad", [
    dict(writes=-1), dict(writes=2**32), dict(port=0x10000), dict(port=ISA_DEBUG_EXIT_PORT),
    dict(exit_value=128), dict(spin=-1),
])
def test_builders_refuse_bad_parameters(bad: dict[str, int]) -> None:
    args = {"writes": 1, "port": 0x80, **bad}
    writes, port = args.pop("writes"), args.pop("port")
    with pytest.raises(ValueError):
        boot_sector_code(writes, port, **args)
    with pytest.raises(ValueError):
        pvh_code(writes, port, **args)


@pytest.mark.skipif(shutil.which("objdump") is None, reason="binutils (objdump) is not installed")
def test_objdump_agrees_with_the_boot_sector(tmp_path: Path) -> None:
    path = tmp_path / "bs.img"
    path.write_bytes(boot_sector_code(9, 0x80, spin=2, halt_ticks=3))
    out = subprocess.run(["objdump", "-D", "-b", "binary", "-mi8086", str(path)],
                         capture_output=True, text=True, check=True).stdout
    mnemonics = [line.split("\t")[2].split()[0] for line in out.splitlines() if line.count("\t") >= 2]
    assert mnemonics == ["cli", "xor", "mov", "mov", "sti", "mov", "hlt", "cmp", "je", "dec", "jne", "cli",
                         "mov", "mov", "mov", "out", "mov", "dec", "jne", "dec", "jne", "mov", "mov", "out",
                         "hlt", "jmp"]
    assert "mov    $0x9,%ecx" in out and "mov    $0x80,%dx" in out and "mov    $0xf4,%dx" in out


@pytest.mark.skipif(shutil.which("objdump") is None, reason="binutils (objdump) is not installed")
def test_objdump_agrees_with_the_pvh_code(tmp_path: Path) -> None:
    path = tmp_path / "pvh.bin"
    path.write_bytes(pvh_code(9, 0x80))
    out = subprocess.run(["objdump", "-D", "-b", "binary", "-mi386", str(path)],
                         capture_output=True, text=True, check=True).stdout
    mnemonics = [line.split("\t")[2].split()[0] for line in out.splitlines() if line.count("\t") >= 2]
    assert mnemonics == ["cli", "mov", "mov", "mov", "out", "dec", "jne", "mov", "mov", "out", "hlt", "jmp"]
    assert "mov    $0x9,%ecx" in out


@pytest.mark.skipif(shutil.which("readelf") is None, reason="binutils (readelf) is not installed")
def test_readelf_finds_the_pvh_note(tmp_path: Path) -> None:
    path = tmp_path / "g.elf"
    build_pvh_elf(path, 3)
    out = subprocess.run(["readelf", "-n", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    assert "Xen" in out and "0x00000012" in out
    assert "Entry point 0x1000d0" in out


def test_qemu_command_lines() -> None:
    bios = qemu_command("/tmp/bs.img", "vm-a", "bios")
    assert bios[bios.index("-name") + 1] == "vm-a"
    for flag in ("-enable-kvm", "-nodefaults", "-no-reboot"):
        assert flag in bios
    assert bios[bios.index("-display") + 1] == "none" and bios[bios.index("-serial") + 1] == "none"
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in bios
    assert "file=/tmp/bs.img,format=raw,if=ide,index=0,media=disk" in bios
    micro = qemu_command("/tmp/g.elf", "vm-b", "microvm")
    assert micro[micro.index("-M") + 1] == "microvm" and micro[micro.index("-kernel") + 1] == "/tmp/g.elf"
    with pytest.raises(ValueError):
        qemu_command("/tmp/g.elf", "a,b", "microvm")
    with pytest.raises(ValueError):
        qemu_command("/tmp/g.elf", "a", "firecracker")


# ---- VM naming (tests/guests/vm_naming.py) on real-shaped /proc fixture trees ----

from profiler.attribution.vm import (  # noqa: E402
    FIRECRACKER_DEFAULT_ID, MONITORS, IdSource, Monitor, ProcessFacts, identify_vm, read_process_facts, vcpu_index,
)

FIXTURES = ROOT / "tests" / "fixtures" / "vm"


def _identify(case: str, pid: int):  # type: ignore[no-untyped-def]
    return identify_vm(read_process_facts(FIXTURES / case / "proc", pid))


def test_fixture_reader_reads_argv_cgroup_and_threads() -> None:
    facts = read_process_facts(FIXTURES / "firecracker" / "proc", 4242)
    assert facts.comm == "firecracker"
    assert facts.cmdline[:5] == ("/usr/local/bin/firecracker", "--api-sock", "/run/fc/fn-alpha.sock", "--id", "fn-alpha")
    assert facts.cgroup_lines == ("0::/system.slice/fc-agent.service",)
    assert facts.thread_comms == ("firecracker", "fc_api", "fc_vcpu 0", "fc_vcpu 1")


def test_firecracker_by_its_id_with_vcpu_threads() -> None:
    vm = _identify("firecracker", 4242)
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.jailed) == (Monitor.FIRECRACKER, "fn-alpha", IdSource.ARG_ID, False)
    assert vm.vcpus == (0, 1)


def test_jailer_v1_cgroup_names_the_vm() -> None:
    vm = _identify("jailer-v1", 5100)
    assert vm is not None
    assert vm.monitor is Monitor.FIRECRACKER and vm.jailed
    assert (vm.vm_id, vm.id_source) == ("551e7604-e35c-42b3-b825-416853441234", IdSource.JAILER_CGROUP)
    assert vm.vcpus == (0,)


def test_the_jailer_before_exec_is_named_by_its_own_id() -> None:
    vm = _identify("jailer-v1", 5200)
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.jailed) == (
        Monitor.FIRECRACKER, "fn-beta", IdSource.JAILER_ARG, True)   # not firecracker's --id after "--"


def test_jailer_v2_with_a_cgroup_under_a_custom_parent() -> None:
    vm = _identify("jailer-v2", 6100)
    assert vm is not None
    assert (vm.vm_id, vm.id_source, vm.jailed) == ("fn-gamma", IdSource.JAILER_CGROUP, True)
    assert vm.vcpus == (0, 1, 2)


def test_jailer_v2_without_cgroup_falls_back_to_the_id() -> None:
    vm = _identify("jailer-v2", 6200)
    assert vm is not None
    assert (vm.vm_id, vm.id_source, vm.jailed) == ("fn-delta", IdSource.ARG_ID, True)


def test_qemu_name_forms_machine_and_vcpu_threads() -> None:
    vm = _identify("qemu", 7100)
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.machine) == (Monitor.QEMU, "fn-qemu-1", IdSource.QEMU_NAME, "microvm")
    assert vm.vcpus == (0, 1)
    vm = _identify("qemu", 7200)
    assert vm is not None
    assert (vm.vm_id, vm.machine, vm.vcpus) == ("fn-qemu-2", "q35", ())   # no debug-threads: unnamed vCPUs


def test_cloud_hypervisor_by_api_socket_name() -> None:
    vm = _identify("cloud-hypervisor", 8100)
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.vcpus) == (
        Monitor.CLOUD_HYPERVISOR, "fn-ch-7", IdSource.API_SOCKET, (0, 1))
    vm = _identify("cloud-hypervisor", 8200)
    assert vm is not None and vm.vm_id == "fn-ch-8"          # path=... form


def test_crosvm_by_control_socket() -> None:
    vm = _identify("crosvm", 9100)
    assert vm is not None
    assert (vm.monitor, vm.vm_id, vm.id_source, vm.vcpus) == (Monitor.CROSVM, "fn-cv-3", IdSource.CONTROL_SOCKET, (0, 1))


@pytest.mark.parametrize("pid", [300, 301, 302])
def test_processes_that_only_mention_a_monitor_are_not_vms(pid: int) -> None:
    assert _identify("host", pid) is None


@pytest.mark.parametrize("argv, expected", [
    (["qemu-system-x86_64", "-name", "foo"], "foo"),
    (["qemu-system-x86_64", "-name", "guest=foo,debug-threads=on"], "foo"),
    (["qemu-system-x86_64", "-name", "foo,process=bar"], "foo"),
    (["qemu-system-x86_64", "--name", "debug-threads=on,guest=late"], "late"),
    (["qemu-system-x86_64", "-name", "a,,b"], "a,b"),
    (["qemu-system-aarch64", "-name=eq"], "eq"),
    (["qemu-kvm", "-name", "rhel"], "rhel"),
    (["qemu-system-x86_64", "-enable-kvm"], None),
])
def test_qemu_name_syntax(argv: list[str], expected: str | None) -> None:
    vm = identify_vm(ProcessFacts("qemu-system-x86", tuple(argv)))
    assert vm is not None and vm.monitor is Monitor.QEMU
    assert vm.vm_id == expected
    assert vm.id_source is (IdSource.QEMU_NAME if expected else IdSource.NONE)


def test_firecracker_without_id_and_without_argv() -> None:
    vm = identify_vm(ProcessFacts("firecracker", ("firecracker", "--api-sock", "/tmp/fc.sock")))
    assert vm is not None and (vm.vm_id, vm.id_source) == (FIRECRACKER_DEFAULT_ID, IdSource.DEFAULT)
    vm = identify_vm(ProcessFacts("firecracker", ("firecracker", "--id=eqform")))
    assert vm is not None and vm.vm_id == "eqform"
    # A zombie or unreadable cmdline: the comm still recognises it; a jailer
    # cgroup under the default parent still names it.
    vm = identify_vm(ProcessFacts("firecracker", (), ("0::/firecracker/fn-zombie",)))
    assert vm is not None and (vm.vm_id, vm.id_source) == ("fn-zombie", IdSource.JAILER_CGROUP)


def test_a_qemu_renamed_by_process_option_is_found_by_argv0() -> None:
    vm = identify_vm(ProcessFacts("fn-renamed", ("/usr/bin/qemu-system-x86_64", "-name", "x,process=fn-renamed")))
    assert vm is not None and vm.monitor is Monitor.QEMU and vm.vm_id == "x"


def test_table_is_ordered_and_vcpu_names() -> None:
    assert [row.monitor for row in MONITORS][:2] == [Monitor.FIRECRACKER, Monitor.FIRECRACKER]
    assert vcpu_index(Monitor.FIRECRACKER, "fc_vcpu 12") == 12
    assert vcpu_index(Monitor.FIRECRACKER, "fc_api") is None
    assert vcpu_index(Monitor.QEMU, "CPU 3/KVM") == 3
    assert vcpu_index(Monitor.CLOUD_HYPERVISOR, "vcpu7") == 7
    assert vcpu_index(Monitor.CROSVM, "crosvm_vcpu1") == 1


KVM_EXIT_FORMAT = Path("/sys/kernel/tracing/events/kvm/kvm_exit/format")


def test_kvm_slot_names() -> None:
    from profiler.bpf.contracts import load_header
    from profiler.bpf.kvm_names import (
        PORT_BUCKETS, VMX_EXIT_REASONS, exit_reason_name, split_slot, userspace_exit_name,
    )
    assert exit_reason_name(30) == "io_instruction" and exit_reason_name(12) == "hlt"
    assert exit_reason_name(95) == "other" and exit_reason_name(5) == "other"
    assert userspace_exit_name(2) == "io" and userspace_exit_name(47) == "error"
    assert userspace_exit_name(45) == "other"
    assert len(VMX_EXIT_REASONS) == len(set(VMX_EXIT_REASONS.values()))
    header = load_header()
    uexit, port = header.define("FNTAX_KVM_UEXIT_BASE"), header.define("FNTAX_KVM_PORT_BASE")
    assert uexit == header.define("FNTAX_KVM_EXIT_SLOTS")
    assert port == uexit + header.define("FNTAX_KVM_UEXIT_SLOTS")
    assert header.define("FNTAX_KVM_SLOTS") == port + len(PORT_BUCKETS) == port + header.define("FNTAX_KVM_PORT_BUCKETS")
    assert split_slot(30) == (0, "io_instruction")
    assert split_slot(uexit + 2) == (1, "io") and split_slot(port + 1) == (2, "post")
    bucket_enum = header.enums.get("fntax_kvm_port_bucket")
    assert bucket_enum is None  # declared in kvm.bpf.c, checked below
    from profiler.bpf.contracts import family_path, parse_header
    names = parse_header(family_path("kvm").read_text(), "kvm.bpf.c").enum("fntax_kvm_port_bucket")
    assert [n.removeprefix("FNTAX_PORT_").lower() for n, _ in sorted(names.items(), key=lambda kv: kv[1])] \
        == list(PORT_BUCKETS)


@pytest.mark.skipif(not (KVM_EXIT_FORMAT.exists() and os.access(KVM_EXIT_FORMAT, os.R_OK)),
                    reason="kvm_exit tracepoint format not readable (needs root and tracefs)")
def test_vmx_names_match_the_running_kernel() -> None:
    import re

    from profiler.bpf.kvm_names import VMX_EXIT_REASONS
    fmt = KVM_EXIT_FORMAT.read_text()
    vmx_part = fmt[fmt.index("__print_symbolic(REC->exit_reason & 0xffff"):fmt.index(": __print_symbolic(REC->exit_reason,")]
    assert {int(n): name.lower() for n, name in re.findall(r'\{ (\d+), "(\w+)" \}', vmx_part)} == VMX_EXIT_REASONS
