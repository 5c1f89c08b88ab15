"""Start the tiny guests of tests/guests/build.py under QEMU with KVM, headless.

`start_vm` returns the Popen of `qemu-system-x86_64 -name VM_ID ...`: the
caller owns the process (wait for it, or `stop_vm` it). The VM leaves through
`isa-debug-exit` (iobase 0xf4), so a guest that ran to its end makes QEMU
exit with `(exit_value << 1) | 1` (`GuestSpec.exit_status`); 0 or a signal
means it did not.

Two kinds:
* `bios`: the 512-byte boot sector as a raw IDE disk of the default `pc`
  machine, booted by SeaBIOS. The in-kernel PIT drops ticks it could not
  deliver (`kvm-pit.lost_tick_policy=discard`): otherwise ticks missed during
  the (slow, emulated on this host) firmware boot are re-injected in a burst
  and a `halt_ticks` guest halts far less than asked.
* `microvm`: the PVH ELF as `-kernel` of `-M microvm` (QEMU's Firecracker-style
  machine; qboot firmware; no PCI). It boots in tens of milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

from profiler.system.guest_image import ISA_DEBUG_EXIT_PORT

QEMU = "qemu-system-x86_64"
KINDS = ("bios", "microvm")


def qemu_path() -> str | None:
    return shutil.which(QEMU)


def why_no_vm() -> str | None:
    """Why a KVM guest cannot run here, or None when it can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing: no KVM on this host"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    if qemu_path() is None:
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    return None


def qemu_command(image: str | Path, vm_id: str, kind: str = "bios", *, memory_mb: int = 16,
                 exit_port: int = ISA_DEBUG_EXIT_PORT, extra: Sequence[str] = ()) -> list[str]:
    """The QEMU command line for a guest image (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if "," in vm_id or not vm_id:
        raise ValueError(f"vm_id must be non-empty without commas, got {vm_id!r}")
    command = [qemu_path() or QEMU, "-name", vm_id, "-enable-kvm", "-cpu", "host", "-m", str(memory_mb),
               "-display", "none", "-nodefaults", "-no-reboot", "-serial", "none", "-parallel", "none",
               "-monitor", "none"]
    if kind == "bios":
        command += ["-global", "kvm-pit.lost_tick_policy=discard",
                    "-drive", f"file={image},format=raw,if=ide,index=0,media=disk", "-boot", "c"]
    else:
        command += ["-M", "microvm", "-kernel", str(image)]
    command += ["-device", f"isa-debug-exit,iobase={exit_port:#x},iosize=0x04", *extra]
    return command


def start_vm(image: str | Path, vm_id: str, kind: str = "bios", *, memory_mb: int = 16,
             exit_port: int = ISA_DEBUG_EXIT_PORT, extra: Sequence[str] = (),
             stderr: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start QEMU on the guest; the caller waits for it or stops it."""
    return subprocess.Popen(qemu_command(image, vm_id, kind, memory_mb=memory_mb, exit_port=exit_port,
                                         extra=extra),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)


def stop_vm(proc: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """Terminate a VM this process started (by its Popen, never by name)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_vm(image: str | Path, vm_id: str, kind: str = "bios", *, timeout: float = 60.0,
           **options: object) -> tuple[int, float, str]:
    """Boot the guest to its end: (QEMU exit status, wall seconds, stderr text)."""
    started = time.monotonic()
    proc = start_vm(image, vm_id, kind, **options)  # type: ignore[arg-type]
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_vm(proc)
        raise
    return proc.returncode, time.monotonic() - started, (err or b"").decode(errors="replace")
