/* KVM: VM exits by reason with their time, exits that reach the VM monitor
 * (userspace exits) by reason with their time, port I/O by bucket and MMIO,
 * halts kept apart from overhead, the guest's time inside KVM_RUN and vCPU
 * run-queue wait; per process of a tracked VM monitor.
 *
 * fntax:map tasks      hash          u32            fntax_task
 * fntax:map procs      hash          u32            fntax_proc
 * fntax:map cpu_state  percpu_array  u32            fntax_cpu
 * fntax:map proc_kvm   hash          fntax_kvm_key  fntax_sys_val
 * fntax:map cpu_kvm    percpu_array  u32            fntax_sys_val
 *
 * Signals, all tracepoint fields (formats in probes/KVM_NOTES.md):
 *   kvm:kvm_exit             exit_reason, isa, info1  (silent on nested/PVM hosts)
 *   kvm:kvm_entry            -                         (silent on nested/PVM hosts)
 *   kvm:kvm_userspace_exit   reason, errno             the exit reaches the VM monitor
 *   raw sys_enter            id == ioctl, request == KVM_RUN   the vCPU thread asks to re-enter
 *   raw sys_exit             (that ioctl's return)             KVM_RUN returned
 *   kvm:kvm_pio              rw, port
 *   kvm:kvm_mmio             type
 *   kvm:kvm_vcpu_wakeup      ns                        a halt ended (poll or wait)
 *
 * Hot path, as the other families: the per-CPU slot of fntax.h (cpu_state)
 * of the task on this CPU, and only for tracked tasks (cpu->workload). The
 * counters go into the slot's delta (struct fntax_counters) and fold into
 * procs with everything else; reasons and port buckets go into the per-CPU
 * cpu_kvm array (dirty slots listed) and fold into proc_kvm. A vCPU thread's
 * in-flight state is loaded into the slot at its first KVM event after a
 * switch-in (one tasks lookup) and parked back by the fold at switch-out
 * (fntax_kvm_park in fntax.h): no handlers of its own on sched events.
 *
 * Re-entry after a userspace exit: the thread's next kvm_entry when that
 * tracepoint has fired for the thread, else its next KVM_RUN ioctl; both are
 * counted so user space can say which one timed the figures.
 *
 * KVM_RUN is seen by the raw sys_enter / sys_exit programs the syscalls
 * family already runs for every syscall (fntax_kvm_ioctl_enter / _exit,
 * called from syscalls.bpf.c; programs of our own when that family is not
 * built), not by the syscalls:sys_*_ioctl tracepoints: enabling any
 * per-syscall tracepoint sends every syscall on the host through the
 * kernel's slow syscall-tracing path (issue 13). The request is the ioctl's
 * 2nd argument, read from its saved registers (FNTAX_IOCTL_REQUEST).
 *
 * Return value: FNTAX_KVM_PASS_TO_PERF=1 lets perf users (perf kvm stat)
 * see the kvm tracepoints too; the default 0 hides them from perf while
 * fntax runs, like every other family's tracepoints (see KVM_NOTES.md).
 */
#include "fntax.h"

#ifndef FNTAX_KVM_FOLD_EVERY
#define FNTAX_KVM_FOLD_EVERY 256
#endif
#ifndef FNTAX_KVM_PASS_TO_PERF
#define FNTAX_KVM_PASS_TO_PERF 0
#endif
#define FNTAX_KVM_RET (FNTAX_KVM_PASS_TO_PERF ? 1 : 0)

#if !FNTAX_KVM
#error "kvm.bpf.c needs -DFNTAX_KVM=1 (profiler/bpf/loader.py): the raw syscall programs carry its KVM_RUN hook"
#endif

/* _IO(KVMIO=0xAE, 0x80), the same on every architecture */
#define FNTAX_KVM_RUN 0xAE80
/* The ioctl's request (its 2nd argument) in the syscall's saved registers
 * (profiler/bpf/arch.py: the loader refuses other architectures). */
#if defined(FNTAX_ARCH_ARM64)
#define FNTAX_IOCTL_REQUEST(regs) ((regs)->regs[1])
#else
#define FNTAX_IOCTL_REQUEST(regs) ((regs)->si)
#endif
#define FNTAX_KVM_EXIT_OTHER (FNTAX_KVM_EXIT_SLOTS - 1)
#define FNTAX_KVM_ISA_VMX 1
#define FNTAX_KVM_ISA_SVM 2
#define FNTAX_VMX_HLT 12
#define FNTAX_KVM_UEXIT_OTHER 46
#define FNTAX_KVM_UEXIT_ERROR 47
#define FNTAX_KVM_EXIT_HLT 5

/* Port buckets (a small fixed set, never the port itself). */
enum fntax_kvm_port_bucket {
    FNTAX_PORT_OTHER = 0,
    FNTAX_PORT_POST = 1,        /* 0x80 */
    FNTAX_PORT_SERIAL = 2,      /* COM1-4: 0x3f8, 0x2f8, 0x3e8, 0x2e8 (+7) */
    FNTAX_PORT_PCI_CONFIG = 3,  /* 0xcf8-0xcff */
    FNTAX_PORT_FW_CFG = 4,      /* 0x510-0x51b */
    FNTAX_PORT_LEGACY = 5,      /* other ports below 0x100: PIC, PIT, keyboard, RTC, DMA, debug exit */
    FNTAX_PORT_ATA = 6,         /* 0x1f0-0x1f7, 0x170-0x177, 0x3f6, 0x376 */
    FNTAX_PORT_HIGH = 7,        /* 0x1000 and above: PCI I/O BARs, ACPI PM blocks */
};

static __always_inline u32 fntax_kvm_svm_slot(u32 code, u64 info1)
{
    if (code <= 0x1f)
        return 28;                        /* read/write crN -> CR_ACCESS */
    if (code <= 0x3f)
        return 29;                        /* read/write drN -> DR_ACCESS */
    if (code <= 0x5f || code == 0x61)
        return 0;                         /* exceptions, nmi -> EXCEPTION_NMI */
    switch (code) {
    case 0x060: return 1;                 /* intr -> EXTERNAL_INTERRUPT */
    case 0x063: return 3;                 /* init -> INIT_SIGNAL */
    case 0x064: return 7;                 /* vintr -> INTERRUPT_WINDOW */
    case 0x06e: return 16;                /* rdtsc */
    case 0x06f: return 15;                /* rdpmc */
    case 0x072: return 10;                /* cpuid */
    case 0x076: return 13;                /* invd */
    case 0x077: return 40;                /* pause -> PAUSE_INSTRUCTION */
    case 0x078: return FNTAX_VMX_HLT;     /* hlt */
    case 0x079: return 14;                /* invlpg */
    case 0x07b: return 30;                /* io -> IO_INSTRUCTION */
    case 0x07c: return info1 ? 32 : 31;   /* msr: info1 1 = write, 0 = read */
    case 0x07d: return 9;                 /* task_switch */
    case 0x07f: return 2;                 /* shutdown -> TRIPLE_FAULT */
    case 0x081: return 18;                /* vmmcall -> VMCALL */
    case 0x087: return 51;                /* rdtscp */
    case 0x089: return 54;                /* wbinvd */
    case 0x08a: return 39;                /* monitor */
    case 0x08b: return 36;                /* mwait */
    case 0x08d: return 55;                /* xsetbv */
    case 0x08f: return 32;                /* write_efer_trap -> MSR_WRITE */
    case 0x0a2: return 58;                /* invpcid */
    case 0x0a5: return 74;                /* buslock -> BUS_LOCK */
    case 0x0a6: return FNTAX_VMX_HLT;     /* idle-halt */
    case 0x400: return 48;                /* npf -> EPT_VIOLATION */
    case 0x401: return 44;                /* avic_incomplete_ipi -> APIC_ACCESS */
    case 0x402: return 44;                /* avic_unaccelerated_access -> APIC_ACCESS */
    }
    if (code >= 0x090 && code <= 0x09f)
        return 28;                        /* crN write traps -> CR_ACCESS */
    return FNTAX_KVM_EXIT_OTHER;
}

static __always_inline u32 fntax_kvm_exit_slot(u32 isa, u32 reason, u64 info1)
{
    if (isa == FNTAX_KVM_ISA_VMX) {
        u32 basic = reason & 0xffff;
        return basic < FNTAX_KVM_EXIT_OTHER ? basic : FNTAX_KVM_EXIT_OTHER;
    }
    if (isa == FNTAX_KVM_ISA_SVM)
        return fntax_kvm_svm_slot(reason, info1);
    return FNTAX_KVM_EXIT_OTHER;
}

static __always_inline u32 fntax_kvm_port_bucket(u32 port)
{
    if (port == 0x80)
        return FNTAX_PORT_POST;
    if ((port & ~7u) == 0x3f8 || (port & ~7u) == 0x2f8 || (port & ~7u) == 0x3e8 || (port & ~7u) == 0x2e8)
        return FNTAX_PORT_SERIAL;
    if ((port & ~7u) == 0xcf8)
        return FNTAX_PORT_PCI_CONFIG;
    if (port >= 0x510 && port <= 0x51b)
        return FNTAX_PORT_FW_CFG;
    if (port < 0x100)
        return FNTAX_PORT_LEGACY;
    if ((port & ~7u) == 0x1f0 || (port & ~7u) == 0x170 || port == 0x3f6 || port == 0x376)
        return FNTAX_PORT_ATA;
    if (port >= 0x1000)
        return FNTAX_PORT_HIGH;
    return FNTAX_PORT_OTHER;
}

/* The slot of a tracked thread with its KVM state loaded; NULL otherwise.
 * `vcpu`: the event is one only a vCPU thread makes (all but ioctl exits). */
static __always_inline struct fntax_cpu *fntax_kvm_load(u32 tid, u32 vcpu)
{
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    if (cpu->kvm_tid != tid || !(cpu->kvm_flags & FNTAX_KVM_F_LOADED)) {
        /* First KVM event of this thread since its switch-in (or since the
         * last fold): load what it parked. */
        struct fntax_task *t = tasks.lookup(&tid);
        cpu->kvm_tid = tid;
        cpu->kvm_events = 0;
        if (t) {
            cpu->kvm_exit_since_ns = t->kvm_exit_since_ns;
            cpu->kvm_ue_since_ns = t->kvm_ue_since_ns;
            cpu->kvm_run_since_ns = t->kvm_run_since_ns;
            cpu->kvm_exit_slot = t->kvm_exit_slot;
            cpu->kvm_ue_slot = t->kvm_ue_slot;
            cpu->kvm_flags = t->kvm_flags | FNTAX_KVM_F_LOADED;
        } else {
            cpu->kvm_exit_since_ns = 0;
            cpu->kvm_ue_since_ns = 0;
            cpu->kvm_run_since_ns = 0;
            cpu->kvm_flags = FNTAX_KVM_F_LOADED;
        }
    }
    if (vcpu)
        cpu->kvm_flags |= FNTAX_KVM_F_VCPU;
    return cpu;
}

static __always_inline struct fntax_cpu *fntax_kvm_slot(u32 tid)
{
    return fntax_kvm_load(tid, 1);
}

/* Count into a reason / bucket slot, listing it for the fold. */
static __always_inline void fntax_kvm_count(struct fntax_cpu *cpu, u32 slot, u64 count, u64 ns)
{
    if (slot >= FNTAX_KVM_SLOTS)
        return;
    struct fntax_sys_val *v = cpu_kvm.lookup(&slot);
    if (!v)
        return;
    if (v->count == 0 && v->ns == 0) {
        u32 n = cpu->kvm_ndirty;
        if (n < FNTAX_KVM_DIRTY_SLOTS) {
            cpu->kvm_dirty[n] = slot;
            cpu->kvm_ndirty = n + 1;
        } else {
            cpu->kvm_overflow = 1;
        }
    }
    v->count += count;
    v->ns += ns;
}

/* After each event: bound how stale procs can get for a vCPU thread that is
 * never switched out (the fold parks the state; the next event reloads it). */
static __always_inline void fntax_kvm_tick(struct fntax_cpu *cpu)
{
    if (++cpu->kvm_events >= FNTAX_KVM_FOLD_EVERY)
        fntax_fold(cpu, (u32)(bpf_get_current_pid_tgid() >> 32));
}

static __always_inline void fntax_kvm_close_userspace(struct fntax_cpu *cpu, u64 now)
{
    u64 spent = now > cpu->kvm_ue_since_ns ? now - cpu->kvm_ue_since_ns : 0;
    u32 slot = cpu->kvm_ue_slot;
    cpu->kvm_ue_since_ns = 0;
    if (slot >= FNTAX_KVM_UEXIT_SLOTS)
        return;
    fntax_kvm_count(cpu, FNTAX_KVM_UEXIT_BASE + slot, 0, spent);
    if (slot != FNTAX_KVM_EXIT_HLT)
        cpu->delta.kvm_userspace_ns += spent;
}

TRACEPOINT_PROBE(kvm, kvm_exit)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    u32 slot = fntax_kvm_exit_slot(args->isa, args->exit_reason, args->info1);
    if (slot >= FNTAX_KVM_EXIT_SLOTS)
        slot = FNTAX_KVM_EXIT_OTHER;
    cpu->kvm_exit_since_ns = bpf_ktime_get_ns();
    cpu->kvm_exit_slot = slot;
    fntax_kvm_count(cpu, slot, 1, 0);
    cpu->delta.kvm_exits += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_entry)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    u64 now = bpf_ktime_get_ns();
    cpu->kvm_flags |= FNTAX_KVM_F_ENTRY_SEEN;
    if (cpu->kvm_exit_since_ns) {
        u64 spent = now > cpu->kvm_exit_since_ns ? now - cpu->kvm_exit_since_ns : 0;
        u32 slot = cpu->kvm_exit_slot;
        cpu->kvm_exit_since_ns = 0;
        if (slot < FNTAX_KVM_EXIT_SLOTS) {
            fntax_kvm_count(cpu, slot, 0, spent);
            if (slot != FNTAX_VMX_HLT)
                cpu->delta.kvm_exit_ns += spent;
        }
    }
    if (cpu->kvm_ue_since_ns) {
        fntax_kvm_close_userspace(cpu, now);
        cpu->delta.kvm_reentries_by_entry += 1;
    }
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_userspace_exit)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    u32 slot;
    if (args->errno < 0)
        slot = FNTAX_KVM_UEXIT_ERROR;
    else if (args->reason < FNTAX_KVM_UEXIT_OTHER)
        slot = args->reason;
    else
        slot = FNTAX_KVM_UEXIT_OTHER;
    if (slot >= FNTAX_KVM_UEXIT_SLOTS)
        slot = FNTAX_KVM_UEXIT_OTHER;
    cpu->kvm_ue_since_ns = bpf_ktime_get_ns();
    cpu->kvm_ue_slot = slot;
    fntax_kvm_count(cpu, FNTAX_KVM_UEXIT_BASE + slot, 1, 0);
    cpu->delta.kvm_userspace_exits += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

/* KVM_RUN: the vCPU thread asks to re-enter (sys_enter) and the guest stops
 * running for it (sys_exit). Called from the raw sys_enter / sys_exit
 * programs for a tracked thread's ioctls only (the syscall number is a raw
 * tracepoint argument; the request, the ioctl's 2nd argument, is read from
 * its saved registers as bcc's PT_REGS_PARM2 does). */
static __always_inline void fntax_kvm_ioctl_enter(struct bpf_raw_tracepoint_args *ctx, u32 tid, u64 now)
{
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    u64 cmd = 0;
    if (bpf_probe_read_kernel(&cmd, sizeof(cmd), &FNTAX_IOCTL_REQUEST(regs)) || (u32)cmd != FNTAX_KVM_RUN)
        return;
    struct fntax_cpu *cpu = fntax_kvm_slot(tid);
    if (!cpu)
        return;
    if (cpu->kvm_ue_since_ns && !(cpu->kvm_flags & FNTAX_KVM_F_ENTRY_SEEN)) {
        fntax_kvm_close_userspace(cpu, now);
        cpu->delta.kvm_reentries_by_run += 1;
    }
    cpu->kvm_flags |= FNTAX_KVM_F_IN_RUN;
    cpu->kvm_run_since_ns = now;
    fntax_kvm_tick(cpu);
}

static __always_inline void fntax_kvm_ioctl_exit(struct fntax_cpu *cpu, u32 tid, u64 now)
{
    /* Cheap refusal for every other ioctl: only a thread inside KVM_RUN goes
     * further, its state loaded in this slot or parked in its tasks entry. */
    if (cpu->kvm_tid == tid && (cpu->kvm_flags & FNTAX_KVM_F_LOADED)) {
        if (!(cpu->kvm_flags & FNTAX_KVM_F_IN_RUN))
            return;
    } else {
        struct fntax_task *t = tasks.lookup(&tid);
        if (!t || !(t->kvm_flags & FNTAX_KVM_F_IN_RUN))
            return;
        cpu = fntax_kvm_load(tid, 0);
        if (!cpu || !(cpu->kvm_flags & FNTAX_KVM_F_IN_RUN))
            return;
    }
    u64 from = cpu->kvm_run_since_ns > cpu->oncpu_since_ns ? cpu->kvm_run_since_ns : cpu->oncpu_since_ns;
    if (now > from)
        cpu->delta.kvm_guest_ns += now - from;
    cpu->kvm_flags &= ~FNTAX_KVM_F_IN_RUN;
    cpu->kvm_run_since_ns = 0;
}

#ifndef FNTAX_KVM_RUN_HOOKED
/* Without the syscalls family (fntax doctor's trial loads sched + kvm), raw
 * sys_enter / sys_exit programs of our own carry the hook. They lack that
 * family's per-CPU syscall number, so the exit side looks at every syscall
 * of a tracked thread (a tasks lookup while its KVM state is not loaded). */
RAW_TRACEPOINT_PROBE(sys_enter)
{
    /* args: (struct pt_regs *regs, long id) */
    if ((long)ctx->args[1] != FNTAX_NR_IOCTL)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_kvm_ioctl_enter(ctx, tid, bpf_ktime_get_ns());
    return 0;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct fntax_cpu *cpu = fntax_cpu_current(tid);
    if (!cpu || !cpu->workload)
        return 0;
    fntax_kvm_ioctl_exit(cpu, tid, bpf_ktime_get_ns());
    return 0;
}
#endif

TRACEPOINT_PROBE(kvm, kvm_pio)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    if (args->rw)
        cpu->delta.kvm_pio_out += 1;
    else
        cpu->delta.kvm_pio_in += 1;
    fntax_kvm_count(cpu, FNTAX_KVM_PORT_BASE + fntax_kvm_port_bucket(args->port), 1, 0);
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_mmio)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    /* type 0 (a read that must go to user space) completes later as type 1:
     * counting both would count that read twice. */
    if (args->type == 1)
        cpu->delta.kvm_mmio_read += 1;
    else if (args->type == 2)
        cpu->delta.kvm_mmio_write += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_vcpu_wakeup)
{
    struct fntax_cpu *cpu = fntax_kvm_slot((u32)bpf_get_current_pid_tgid());
    if (!cpu)
        return FNTAX_KVM_RET;
    cpu->delta.kvm_halts += 1;
    cpu->delta.kvm_halt_ns += args->ns;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}
