"""Tiny KVM guests that the tests build themselves: no network, no toolchain.

Two images, both hand-assembled here (the opcodes are spelled out beside each
instruction; tests/unit/test_guests.py cross-checks them with objdump when
binutils is installed):

* a 512-byte **boot sector** (`build_boot_sector`): SeaBIOS loads it at
  0:7C00 in real mode. It optionally halts through `halt_ticks` BIOS timer
  ticks (`sti; hlt` until the BIOS tick counter at 0:046C moves, 18.2 Hz, so
  about 55 ms each: a guest that is idle, not working), then makes exactly
  `writes` one-byte `out` writes to `port`, optionally spinning `spin`
  iterations of a register loop between writes (no exits, a steady rate), and
  leaves through QEMU's `isa-debug-exit` device: one `out` of `exit_value`
  to `exit_port`, which makes QEMU exit with status `(exit_value << 1) | 1`.

* a **PVH ELF** (`build_pvh_elf`) for `qemu-system-x86_64 -M microvm -kernel
  guest.elf`: an ELF64 whose PT_NOTE carries XEN_ELFNOTE_PHYS32_ENTRY (type
  18, name "Xen"), the 32-bit entry point QEMU's PVH loader jumps to (flat
  protected mode, paging off). Same writes, spin and exit; no halt phase (no
  BIOS timer to wake it).

Port-I/O writes the guest makes besides its `writes`: exactly one, the exit
write to `exit_port`. The firmware (SeaBIOS, qboot) makes its own port I/O
before the guest runs, so a host sees at least `writes + 1` PIO exits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

ISA_DEBUG_EXIT_PORT = 0xF4
DEFAULT_PORT = 0x80          # the POST diagnostic port: no device behind it in QEMU
DEFAULT_EXIT_VALUE = 0x21    # QEMU exits with (0x21 << 1) | 1 = 67
WRITE_VALUE = 0x55

BOOT_SECTOR_SIZE = 512
BOOT_SIGNATURE = b"\x55\xaa"
BIOS_TICKS_ADDRESS = 0x046C  # BIOS data area: timer ticks since midnight (word)

PVH_LOAD_ADDRESS = 0x100000  # 1 MiB, where Linux's PVH entry lives too
XEN_ELFNOTE_PHYS32_ENTRY = 18
EM_X86_64 = 62


def qemu_exit_status(exit_value: int) -> int:
    """The status QEMU exits with after the guest writes exit_value to isa-debug-exit."""
    return ((exit_value << 1) | 1) & 0xFF


@dataclass(frozen=True)
class GuestSpec:
    """What a built guest will do, for tests that check the host's view of it."""

    writes: int
    port: int
    exit_port: int
    exit_value: int
    spin: int = 0
    halt_ticks: int = 0

    @property
    def exit_status(self) -> int:
        return qemu_exit_status(self.exit_value)

    @property
    def pio_writes(self) -> int:
        """Every port write the guest code makes (its writes plus the exit write)."""
        return self.writes + 1


class _Asm:
    """Just enough of an assembler: raw bytes, labels, and rel8 branches."""

    def __init__(self) -> None:
        self._items: list[bytes | tuple[str, str] | tuple[str, int, str]] = []

    def emit(self, code: bytes) -> None:
        self._items.append(code)

    def label(self, name: str) -> None:
        self._items.append(("label", name))

    def branch8(self, opcode: int, target: str) -> None:
        """A 2-byte short jump (EB) or conditional jump (7x) to a label."""
        self._items.append(("branch", opcode, target))

    def assemble(self) -> bytes:
        labels: dict[str, int] = {}
        offset = 0
        for item in self._items:
            if isinstance(item, bytes):
                offset += len(item)
            elif item[0] == "label":
                labels[str(item[1])] = offset
            else:
                offset += 2
        out = bytearray()
        for item in self._items:
            if isinstance(item, bytes):
                out += item
            elif len(item) == 3:
                _, opcode, target = item
                rel = labels[str(target)] - (len(out) + 2)
                if not -128 <= rel <= 127:
                    raise ValueError(f"branch to {target} out of rel8 range ({rel})")
                out += bytes([int(opcode), rel & 0xFF])
        return bytes(out)


JZ, JNZ, JE, JMP = 0x74, 0x75, 0x74, 0xEB


def _check(writes: int, port: int, exit_port: int, exit_value: int, spin: int) -> None:
    if not 0 <= writes < 2**32:
        raise ValueError(f"writes must fit in 32 bits, got {writes}")
    if not 0 <= spin < 2**32:
        raise ValueError(f"spin must fit in 32 bits, got {spin}")
    for name, value in (("port", port), ("exit_port", exit_port)):
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{name} must be a 16-bit I/O port, got {value:#x}")
    if port == exit_port:
        raise ValueError(f"port {port:#x} is the exit port: the first write would end the guest")
    if not 0 <= exit_value <= 0x7F:
        raise ValueError(f"exit_value must be 0..127 (QEMU exits with (v<<1)|1), got {exit_value}")


def boot_sector_code(writes: int, port: int = DEFAULT_PORT, *, spin: int = 0, halt_ticks: int = 0,
                     exit_port: int = ISA_DEBUG_EXIT_PORT, exit_value: int = DEFAULT_EXIT_VALUE) -> bytes:
    """The real-mode (16-bit) code of the boot sector, before padding and signature."""
    _check(writes, port, exit_port, exit_value, spin)
    if not 0 <= halt_ticks < 2**32:
        raise ValueError(f"halt_ticks must fit in 32 bits, got {halt_ticks}")
    a = _Asm()
    a.emit(b"\xfa")                                     # cli
    a.emit(b"\x31\xc0")                                 # xor ax, ax
    a.emit(b"\x8e\xd8")                                 # mov ds, ax
    if halt_ticks:
        a.emit(b"\x66\xb9" + struct.pack("<I", halt_ticks))   # mov ecx, halt_ticks
        a.emit(b"\xfb")                                 # sti (BIOS IRQ0 handler counts ticks)
        a.label("tick")
        a.emit(b"\xa1" + struct.pack("<H", BIOS_TICKS_ADDRESS))   # mov ax, [0x46c]
        a.label("idle")
        a.emit(b"\xf4")                                 # hlt (until the next interrupt)
        a.emit(b"\x3b\x06" + struct.pack("<H", BIOS_TICKS_ADDRESS))   # cmp ax, [0x46c]
        a.branch8(JE, "idle")                           # woken by something else: halt again
        a.emit(b"\x66\x49")                             # dec ecx
        a.branch8(JNZ, "tick")
        a.emit(b"\xfa")                                 # cli
    if writes:
        a.emit(b"\x66\xb9" + struct.pack("<I", writes))   # mov ecx, writes
        a.emit(b"\xba" + struct.pack("<H", port))       # mov dx, port
        a.emit(bytes([0xB0, WRITE_VALUE]))              # mov al, 0x55
        a.label("write")
        a.emit(b"\xee")                                 # out dx, al
        if spin:
            a.emit(b"\x66\xbb" + struct.pack("<I", spin))   # mov ebx, spin
            a.label("spin")
            a.emit(b"\x66\x4b")                         # dec ebx
            a.branch8(JNZ, "spin")
        a.emit(b"\x66\x49")                             # dec ecx
        a.branch8(JNZ, "write")
    a.emit(b"\xba" + struct.pack("<H", exit_port))      # mov dx, exit_port
    a.emit(bytes([0xB0, exit_value]))                   # mov al, exit_value
    a.emit(b"\xee")                                     # out dx, al: QEMU exits here
    a.label("hang")
    a.emit(b"\xf4")                                     # hlt (not reached with isa-debug-exit)
    a.branch8(JMP, "hang")
    return a.assemble()


def boot_sector_bytes(writes: int, port: int = DEFAULT_PORT, **options: int) -> bytes:
    """The 512-byte boot sector: code, zero padding, 0x55AA signature."""
    code = boot_sector_code(writes, port, **options)
    if len(code) > BOOT_SECTOR_SIZE - len(BOOT_SIGNATURE):
        raise ValueError(f"boot sector code is {len(code)} bytes, more than fits in 510")
    return code.ljust(BOOT_SECTOR_SIZE - len(BOOT_SIGNATURE), b"\0") + BOOT_SIGNATURE


def build_boot_sector(path: str | Path, writes: int, port: int = DEFAULT_PORT, *, spin: int = 0,
                      halt_ticks: int = 0, exit_port: int = ISA_DEBUG_EXIT_PORT,
                      exit_value: int = DEFAULT_EXIT_VALUE) -> GuestSpec:
    """Write the boot sector image (a raw 512-byte disk) to path; say what it does."""
    data = boot_sector_bytes(writes, port, spin=spin, halt_ticks=halt_ticks,
                             exit_port=exit_port, exit_value=exit_value)
    Path(path).write_bytes(data)
    return GuestSpec(writes, port, exit_port, exit_value, spin, halt_ticks)


def pvh_code(writes: int, port: int = DEFAULT_PORT, *, spin: int = 0,
             exit_port: int = ISA_DEBUG_EXIT_PORT, exit_value: int = DEFAULT_EXIT_VALUE) -> bytes:
    """The 32-bit protected-mode code at the PVH entry point."""
    _check(writes, port, exit_port, exit_value, spin)
    a = _Asm()
    a.emit(b"\xfa")                                     # cli
    if writes:
        a.emit(b"\xb9" + struct.pack("<I", writes))     # mov ecx, writes
        a.emit(b"\x66\xba" + struct.pack("<H", port))   # mov dx, port
        a.emit(bytes([0xB0, WRITE_VALUE]))              # mov al, 0x55
        a.label("write")
        a.emit(b"\xee")                                 # out dx, al
        if spin:
            a.emit(b"\xbb" + struct.pack("<I", spin))   # mov ebx, spin
            a.label("spin")
            a.emit(b"\x4b")                             # dec ebx
            a.branch8(JNZ, "spin")
        a.emit(b"\x49")                                 # dec ecx
        a.branch8(JNZ, "write")
    a.emit(b"\x66\xba" + struct.pack("<H", exit_port))  # mov dx, exit_port
    a.emit(bytes([0xB0, exit_value]))                   # mov al, exit_value
    a.emit(b"\xee")                                     # out dx, al: QEMU exits here
    a.label("hang")
    a.emit(b"\xf4")                                     # hlt
    a.branch8(JMP, "hang")
    return a.assemble()


# ELF64 layout: header, two program headers (PT_LOAD for everything, PT_NOTE
# for the PVH entry note), the note, then the code.
_EHDR_SIZE = 64
_PHDR_SIZE = 56
_PT_LOAD, _PT_NOTE = 1, 4
_PF_X, _PF_R = 1, 4
_NOTE_NAME = b"Xen\0"


def pvh_elf_bytes(writes: int, port: int = DEFAULT_PORT, **options: int) -> bytes:
    """An ELF64 (x86-64, ET_EXEC) loaded at 1 MiB with a PHYS32_ENTRY note."""
    code = pvh_code(writes, port, **options)
    note_offset = _EHDR_SIZE + 2 * _PHDR_SIZE
    note_size = 12 + len(_NOTE_NAME) + 4
    code_offset = (note_offset + note_size + 15) & ~15
    entry = PVH_LOAD_ADDRESS + code_offset
    file_size = code_offset + len(code)

    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8      # ELFCLASS64, LSB, version 1, SysV
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,                  # e_type: ET_EXEC
        EM_X86_64,          # e_machine
        1,                  # e_version
        entry,              # e_entry (the PVH note is what QEMU uses)
        _EHDR_SIZE,         # e_phoff
        0,                  # e_shoff: no sections
        0,                  # e_flags
        _EHDR_SIZE, _PHDR_SIZE, 2,   # e_ehsize, e_phentsize, e_phnum
        64, 0, 0,           # e_shentsize, e_shnum, e_shstrndx
    )
    load = struct.pack("<IIQQQQQQ", _PT_LOAD, _PF_R | _PF_X, 0, PVH_LOAD_ADDRESS, PVH_LOAD_ADDRESS,
                       file_size, file_size, 0x1000)
    note = struct.pack("<IIQQQQQQ", _PT_NOTE, _PF_R, note_offset, PVH_LOAD_ADDRESS + note_offset,
                       PVH_LOAD_ADDRESS + note_offset, note_size, note_size, 4)
    note_body = struct.pack("<III", len(_NOTE_NAME), 4, XEN_ELFNOTE_PHYS32_ENTRY) + _NOTE_NAME \
        + struct.pack("<I", entry)
    image = (ehdr + load + note + note_body).ljust(code_offset, b"\0") + code
    assert len(image) == file_size
    return image


def build_pvh_elf(path: str | Path, writes: int, port: int = DEFAULT_PORT, *, spin: int = 0,
                  exit_port: int = ISA_DEBUG_EXIT_PORT, exit_value: int = DEFAULT_EXIT_VALUE) -> GuestSpec:
    """Write the PVH ELF guest (for -M microvm -kernel) to path; say what it does."""
    Path(path).write_bytes(pvh_elf_bytes(writes, port, spin=spin, exit_port=exit_port,
                                         exit_value=exit_value))
    return GuestSpec(writes, port, exit_port, exit_value, spin, 0)
