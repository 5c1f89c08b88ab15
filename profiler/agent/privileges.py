"""Least privilege: once its probes are loaded, the agent keeps only the capabilities it still uses.

Loading needs CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (and more); running
does not. Reading, batch-reading and deleting map entries, polling the perf
buffer and detaching at exit all work on file descriptors the agent already
holds, so they need no capability on this kernel (bpf(2) checks capabilities
when a map or program is created, not when an fd is used). What stays is
/proc: `/proc/PID/environ` of a process that is not the agent's (another
user's, or root's with capabilities the agent no longer holds) needs
CAP_SYS_PTRACE (ptrace read access) and, for another user's, CAP_DAC_READ_SEARCH
(the file is mode 0400, owned by that user). Without them the environment reads
as empty and `env` rules stop matching processes named only from /proc.

Turning BPF run-time statistics on (BPF_ENABLE_STATS) needs CAP_SYS_ADMIN: the
agent's periodic sampling stops when it is not kept, and the probe costs measured
at load stay in use (see README).

Capabilities are per thread: `drop` must run before the agent starts a
thread (threads inherit the creating thread's set), and it checks that no
other thread of the process still holds a capability it dropped.

Like ebpf_exporter's --capabilities.keep, the process keeps its user id; it
drops its effective, permitted, inheritable and ambient sets to the kept ones,
the bounding set too when it holds CAP_SETPCAP, and sets no_new_privs so
nothing it runs later regains one.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from typing import Callable

from profiler.errors import FntaxError, InputError

# linux/capability.h, in bit order.
CAPABILITIES: tuple[str, ...] = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
)
BIT: dict[str, int] = {name: bit for bit, name in enumerate(CAPABILITIES)}

# What the running agent needs (found on kernel 6.18, tests/integration/test_least_privilege.py):
# other processes' /proc/PID/environ: ptrace read access (sys_ptrace; root's processes too, once
# the agent holds fewer capabilities than they do) and, for another user's, the file's mode 0400
# (dac_read_search, the narrower of the two DAC overrides: read only).
DEFAULT_KEEP: tuple[str, ...] = ("dac_read_search", "sys_ptrace")
# Kept only if asked for: BPF_ENABLE_STATS needs it (the agent's sampled probe statistics).
STATS_CAPABILITY = "sys_admin"

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4


class PrivilegeError(FntaxError):
    """The kernel refused to lower the agent's capabilities."""

    exit_code = 71  # EX_OSERR


def parse_keep(text: str) -> frozenset[str] | None:
    """`--keep-capabilities`: comma-separated names (cap_ prefix and case optional),
    "none" for an empty set, or "all" (None: drop nothing)."""
    words = [word.strip().lower() for word in text.split(",") if word.strip()]
    if words == ["all"]:
        return None
    if words == ["none"]:
        return frozenset()
    if not words:
        raise InputError("--keep-capabilities: empty (name capabilities, or say none or all)")
    names = set()
    for word in words:
        name = word.removeprefix("cap_")
        if name not in BIT:
            if word in ("all", "none"):
                raise InputError(f"--keep-capabilities {text}: {word} cannot be combined with names")
            raise InputError(f"--keep-capabilities {text}: unknown capability {word!r} "
                             f"(names as in capabilities(7), e.g. sys_ptrace; or all, or none)")
        names.add(name)
    return frozenset(names)


def mask_of(names: frozenset[str] | set[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << BIT[name]
    return mask


def names_of(mask: int) -> list[str]:
    """Capability names of the bits set in mask, in bit order (unknown bits as cap_N)."""
    found = []
    bit = 0
    while mask >> bit:
        if mask >> bit & 1:
            found.append(CAPABILITIES[bit] if bit < len(CAPABILITIES) else f"cap_{bit}")
        bit += 1
    return found


def describe(names: frozenset[str] | set[str] | list[str]) -> str:
    return ", ".join(sorted(names, key=lambda n: BIT.get(n, len(BIT)))) or "none"


@dataclass(frozen=True)
class CapabilitySets:
    effective: int
    permitted: int
    inheritable: int


@dataclass(frozen=True)
class Dropped:
    """What `drop` did."""

    kept: frozenset[str]  # held now (effective = permitted)
    not_held: frozenset[str]  # asked to keep, but the process did not hold them
    bounding_lowered: bool  # False without CAP_SETPCAP: the service manager's bounding set stays

    @property
    def bpf_stats(self) -> bool:
        """BPF run-time statistics can still be turned on."""
        return STATS_CAPABILITY in self.kept


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _oserror(what: str) -> PrivilegeError:
    code = ctypes.get_errno()
    return PrivilegeError(f"cannot lower capabilities: {what}: {os.strerror(code)}")


def get_sets(tid: int = 0) -> CapabilitySets:
    """A thread's capability sets (capget(2); 0: the calling thread)."""
    header = _Header(_LINUX_CAPABILITY_VERSION_3, tid)
    data = (_Data * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise _oserror(f"capget({tid})")

    def join(field: str) -> int:
        return int(getattr(data[0], field)) | int(getattr(data[1], field)) << 32

    return CapabilitySets(join("effective"), join("permitted"), join("inheritable"))


def _set_sets(sets: CapabilitySets) -> None:
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for half in (0, 1):
        shift = 32 * half
        data[half].effective = sets.effective >> shift & 0xFFFFFFFF
        data[half].permitted = sets.permitted >> shift & 0xFFFFFFFF
        data[half].inheritable = sets.inheritable >> shift & 0xFFFFFFFF
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise _oserror("capset")


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    return int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                           ctypes.c_ulong(0), ctypes.c_ulong(0)))


def _last_cap() -> int:
    """The highest capability this kernel knows (bits above it do not exist)."""
    bit = len(CAPABILITIES) - 1
    while _prctl(_PR_CAPBSET_READ, bit + 1) >= 0:
        bit += 1
    while bit > 0 and _prctl(_PR_CAPBSET_READ, bit) < 0:
        bit -= 1
    return bit


def _tasks() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/task")]


def drop(keep: frozenset[str] | None) -> Dropped | None:
    """Lower every capability set of the process to `keep` (None: drop nothing).

    Run from the process's only thread: capabilities are per thread."""
    if keep is None:
        return None
    before = get_sets()
    wanted = mask_of(keep)
    kept = before.permitted & wanted
    bounding_lowered = False
    if before.effective >> BIT["setpcap"] & 1:
        # PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set: first.
        for bit in range(_last_cap() + 1):
            if not wanted >> bit & 1 and _prctl(_PR_CAPBSET_READ, bit) == 1:
                if _prctl(_PR_CAPBSET_DROP, bit) != 0:
                    raise _oserror(f"PR_CAPBSET_DROP {names_of(1 << bit)[0]}")
        bounding_lowered = True
    # Ambient capabilities must be permitted and inheritable: clear them all
    # (they only matter for what the agent would execute).
    if _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL) != 0 and ctypes.get_errno() != 22:  # EINVAL: no ambient
        raise _oserror("PR_CAP_AMBIENT_CLEAR_ALL")
    _set_sets(CapabilitySets(effective=kept, permitted=kept, inheritable=before.inheritable & kept))
    if _prctl(_PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise _oserror("PR_SET_NO_NEW_PRIVS")
    after = get_sets()
    if after.permitted != kept or after.effective != kept:
        raise PrivilegeError(f"cannot lower capabilities: still holding {describe(names_of(after.permitted))}")
    me = threading.get_native_id()
    for tid in _tasks():
        if tid == me:
            continue
        try:
            other = get_sets(tid)
        except PrivilegeError:
            continue  # the thread has exited
        extra = other.permitted & ~kept
        if extra:
            raise PrivilegeError(f"cannot lower capabilities: thread {tid} started before the drop still holds "
                                 f"{describe(names_of(extra))}")
    return Dropped(kept=frozenset(names_of(kept)), not_held=frozenset(keep - set(names_of(kept))),
                   bounding_lowered=bounding_lowered)


def summary(dropped: Dropped | None) -> str:
    """One line of progress output."""
    if dropped is None:
        return "capabilities: all kept (--keep-capabilities all)"
    text = f"capabilities dropped after loading; kept: {describe(dropped.kept)}"
    if dropped.not_held:
        text += f" (not held, so not kept: {describe(dropped.not_held)})"
    if not dropped.bpf_stats:
        text += "; BPF run-time statistics stay off (turning them on needs sys_admin)"
    return text


def drop_after_load(keep: frozenset[str] | None, say: Callable[[str], None]) -> bool:
    """The agent's one call, once its probes are loaded and before it starts a thread:
    drop, say what was kept; True while BPF run-time statistics can still be turned on."""
    dropped = drop(keep)
    say(summary(dropped))
    return dropped is None or dropped.bpf_stats
