/* KVM: VM exits by reason with their time, exits that reach the VM monitor
 * (userspace exits) by reason with their time, port I/O and MMIO, and halts
 * kept apart from overhead; per process (tgid) of the VM monitor.
 *
 * fntax:map kvm_procs    hash          u32  fntax_kvm_proc
 * fntax:map kvm_threads  hash          u32  fntax_kvm_thread
 * fntax:map kvm_cpu      percpu_array  u32  fntax_kvm_cpu
 * fntax:map kvm_errors   array         u32  u64
 *
 * SELF-CONTAINED for now (no fntax.h): it compiles alone with
 * BPF(src_file=...). probes/KVM_NOTES.md says how it folds into fntax.h's
 * world (kvm_cpu -> cpu_state, kvm_threads -> tasks, kvm_procs -> procs).
 *
 * Signals, all tracepoint fields (formats in probes/KVM_NOTES.md); no kprobes,
 * no kernel struct read through a header layout:
 *   kvm:kvm_exit            exit_reason, isa, info1   (silent on nested/PVM hosts)
 *   kvm:kvm_entry           -                          (silent on nested/PVM hosts)
 *   kvm:kvm_userspace_exit  reason, errno              the exit reaches the VM monitor
 *   syscalls:sys_enter_ioctl cmd == KVM_RUN            the vCPU thread asks to re-enter
 *   kvm:kvm_pio             rw, port
 *   kvm:kvm_mmio            type
 *   kvm:kvm_vcpu_wakeup     ns, waited                 a halt ended (poll or wait)
 *   sched:sched_switch / sched_process_exit            fold points
 *
 * Re-entry after a userspace exit: the thread's next kvm_entry when that
 * tracepoint has ever fired for the thread (entry_seen), else the thread's
 * next KVM_RUN ioctl. Both are counted (reentries_by_entry / _by_run) so user
 * space can say which one timed the figures.
 *
 * Hot path (every KVM event): the per-CPU slot kvm_cpu of the task on this
 * CPU, array lookups only. The in-flight state (an exit or userspace exit not
 * yet re-entered) is saved to kvm_threads[tid] when a vCPU thread is switched
 * out and restored at switch-in; deltas fold into kvm_procs[tgid] at
 * switch-out, at thread exit, and every FNTAX_KVM_FOLD_EVERY events (a vCPU
 * thread alone on a CPU may never be switched out).
 *
 * Tunables, -D only: FNTAX_KVM_MAX_THREADS, FNTAX_KVM_MAX_PROCS,
 * FNTAX_KVM_FOLD_EVERY, FNTAX_KVM_PASS_TO_PERF.
 */
#include <uapi/linux/ptrace.h>

#ifndef FNTAX_KVM_MAX_THREADS
#define FNTAX_KVM_MAX_THREADS 4096
#endif
#ifndef FNTAX_KVM_MAX_PROCS
#define FNTAX_KVM_MAX_PROCS 1024
#endif
#ifndef FNTAX_KVM_FOLD_EVERY
#define FNTAX_KVM_FOLD_EVERY 256
#endif
/* A tracepoint's BPF programs gate its perf samples for every perf user: a
 * program returning 0 blinds `perf kvm stat`, `perf record -e kvm:*` and
 * `perf stat -e kvm:*` host-wide while it is attached (seen here: perf
 * records no kvm event at all). Returning 1 lets them through, but then perf
 * handles bcc's own (bufferless) attach event on every hit: +0.1 to +0.5 us
 * more per guest port write here (bench/kvm_exit_cost.py), and on a VMX/SVM
 * host kvm_exit and kvm_entry fire on every exit, in-kernel ones included.
 * Hot paths stay cheap, and the other families return 0 too: 0 by default;
 * -DFNTAX_KVM_PASS_TO_PERF=1 to coexist with perf (a module-wide choice once
 * merged). */
#ifndef FNTAX_KVM_PASS_TO_PERF
#define FNTAX_KVM_PASS_TO_PERF 0
#endif
#define FNTAX_KVM_RET (FNTAX_KVM_PASS_TO_PERF ? 1 : 0)

/* _IO(KVMIO=0xAE, 0x80) */
#define FNTAX_KVM_RUN 0xAE80

/* Exit reasons in one vocabulary: VMX basic exit reasons (exit_reason &
 * 0xffff) index the slots directly; SVM exit codes are folded onto the VMX
 * reason that means the same thing (fntax_kvm_svm_slot). */
#define FNTAX_KVM_EXIT_SLOTS 96
#define FNTAX_KVM_EXIT_OTHER (FNTAX_KVM_EXIT_SLOTS - 1)
#define FNTAX_KVM_ISA_VMX 1
#define FNTAX_KVM_ISA_SVM 2
#define FNTAX_VMX_HLT 12

/* Userspace exits: KVM_EXIT_* (uapi kvm.h) index the slots; past the known
 * range -> OTHER; KVM_RUN returning an error (errno < 0: -EINTR when a signal
 * kicks the vCPU out, "restart" in the tracepoint) -> ERROR. */
#define FNTAX_KVM_UEXIT_SLOTS 48
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
#define FNTAX_PORT_BUCKETS 8

enum fntax_kvm_error {
    FNTAX_KVM_ERR_THREADS = 0,  /* kvm_threads full */
    FNTAX_KVM_ERR_PROCS = 1,    /* kvm_procs full */
    FNTAX_KVM_ERR_LOST = 2,     /* a slot changed owner with an unfolded delta (missed switch) */
    FNTAX_KVM_ERR_SLOTS = 4,
};

struct fntax_kvm_counters {
    u64 exits;               /* kvm_exit, every reason */
    u64 exit_ns;             /* kvm_exit -> kvm_entry, halts excluded */
    u64 halt_exits;          /* kvm_exit with reason HLT */
    u64 halt_exit_ns;        /* their kvm_exit -> kvm_entry (idle guest: not tax) */
    u64 userspace_exits;     /* kvm_userspace_exit, every reason and error */
    u64 userspace_ns;        /* userspace exit -> re-entry, KVM_EXIT_HLT excluded */
    u64 userspace_halt_ns;   /* KVM_EXIT_HLT (irqchip in user space): idle */
    u64 reentries_by_entry;  /* userspace exits closed by kvm_entry */
    u64 reentries_by_run;    /* userspace exits closed by the next KVM_RUN */
    u64 kvm_runs;            /* KVM_RUN ioctls */
    u64 pio_in;
    u64 pio_out;
    u64 pio_ports[FNTAX_PORT_BUCKETS];
    u64 mmio_read;           /* kvm_mmio type 1: a read completed (in kernel, or after user space) */
    u64 mmio_write;          /* type 2 */
    u64 mmio_unsatisfied;    /* type 0: a read that had to go to user space (then completes as a read) */
    u64 halts;               /* kvm_vcpu_wakeup: a halt ended */
    u64 halt_wait_ns;        /* halts that slept: their time */
    u64 halt_poll_ns;        /* halts that ended while polling: their time */
};

struct fntax_kvm_reason {
    u64 count;
    u64 ns;
};

/* kvm_procs: per VM-monitor process (tgid). */
struct fntax_kvm_proc {
    struct fntax_kvm_counters c;
    struct fntax_kvm_reason exit_reasons[FNTAX_KVM_EXIT_SLOTS];
    struct fntax_kvm_reason userspace_reasons[FNTAX_KVM_UEXIT_SLOTS];
    u32 exited;
    u32 pad;
    char comm[16];
};

/* The part of a vCPU thread's state that outlives a switch-out. */
struct fntax_kvm_thread {
    u64 exit_since_ns;       /* kvm_exit not yet re-entered (0: none) */
    u64 ue_since_ns;         /* userspace exit not yet re-entered (0: none) */
    u32 exit_slot;
    u32 ue_slot;
    u32 entry_seen;          /* kvm_entry fired for this thread: it, not KVM_RUN, closes */
    u32 pad;
};

/* kvm_cpu: the task on this CPU, its in-flight state and unfolded deltas. */
struct fntax_kvm_cpu {
    u32 tid;
    u32 vcpu;                /* the owner has a kvm_threads entry */
    u32 events;              /* KVM events since the last fold */
    u32 pad;
    struct fntax_kvm_thread f;
    u64 exit_dirty[2];       /* bit per exit slot touched since the last fold */
    u64 ue_dirty;            /* bit per userspace-exit slot */
    struct fntax_kvm_counters delta;
    struct fntax_kvm_reason exit_reasons[FNTAX_KVM_EXIT_SLOTS];
    struct fntax_kvm_reason userspace_reasons[FNTAX_KVM_UEXIT_SLOTS];
};

BPF_HASH(kvm_procs, u32, struct fntax_kvm_proc, FNTAX_KVM_MAX_PROCS);
BPF_HASH(kvm_threads, u32, struct fntax_kvm_thread, FNTAX_KVM_MAX_THREADS);
BPF_PERCPU_ARRAY(kvm_cpu, struct fntax_kvm_cpu, 1);
BPF_ARRAY(kvm_errors, u64, FNTAX_KVM_ERR_SLOTS);
/* A zeroed kvm_procs value to insert from: too big for the BPF stack. */
BPF_PERCPU_ARRAY(kvm_proc_zero, struct fntax_kvm_proc, 1);

static __always_inline void fntax_kvm_count_error(int which)
{
    u64 *v = kvm_errors.lookup(&which);
    if (v)
        __sync_fetch_and_add(v, 1);
}

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

static __always_inline void fntax_kvm_add(struct fntax_kvm_reason *dst, const struct fntax_kvm_reason *src)
{
    if (src->count)
        __sync_fetch_and_add(&dst->count, src->count);
    if (src->ns)
        __sync_fetch_and_add(&dst->ns, src->ns);
}

/* Fold the slot's delta into kvm_procs[tgid]; in the owner's context. */
static __always_inline void fntax_kvm_fold(struct fntax_kvm_cpu *cpu, u32 tgid)
{
    cpu->events = 0;
    if (!cpu->vcpu)
        return;
    struct fntax_kvm_proc *p = kvm_procs.lookup(&tgid);
    if (!p) {
        int zero = 0;
        struct fntax_kvm_proc *fresh = kvm_proc_zero.lookup(&zero);
        if (!fresh)
            return;
        bpf_get_current_comm(&fresh->comm, sizeof(fresh->comm));
        kvm_procs.insert(&tgid, fresh);   /* BPF_NOEXIST: never replaces a racing insert */
        p = kvm_procs.lookup(&tgid);
        if (!p) {
            fntax_kvm_count_error(FNTAX_KVM_ERR_PROCS);
            return;
        }
    }
    struct fntax_kvm_counters *d = &cpu->delta;
    struct fntax_kvm_counters *c = &p->c;
    __sync_fetch_and_add(&c->exits, d->exits);
    __sync_fetch_and_add(&c->exit_ns, d->exit_ns);
    __sync_fetch_and_add(&c->halt_exits, d->halt_exits);
    __sync_fetch_and_add(&c->halt_exit_ns, d->halt_exit_ns);
    __sync_fetch_and_add(&c->userspace_exits, d->userspace_exits);
    __sync_fetch_and_add(&c->userspace_ns, d->userspace_ns);
    __sync_fetch_and_add(&c->userspace_halt_ns, d->userspace_halt_ns);
    __sync_fetch_and_add(&c->reentries_by_entry, d->reentries_by_entry);
    __sync_fetch_and_add(&c->reentries_by_run, d->reentries_by_run);
    __sync_fetch_and_add(&c->kvm_runs, d->kvm_runs);
    __sync_fetch_and_add(&c->pio_in, d->pio_in);
    __sync_fetch_and_add(&c->pio_out, d->pio_out);
#pragma unroll
    for (int i = 0; i < FNTAX_PORT_BUCKETS; i++)
        __sync_fetch_and_add(&c->pio_ports[i], d->pio_ports[i]);
    __sync_fetch_and_add(&c->mmio_read, d->mmio_read);
    __sync_fetch_and_add(&c->mmio_write, d->mmio_write);
    __sync_fetch_and_add(&c->mmio_unsatisfied, d->mmio_unsatisfied);
    __sync_fetch_and_add(&c->halts, d->halts);
    __sync_fetch_and_add(&c->halt_wait_ns, d->halt_wait_ns);
    __sync_fetch_and_add(&c->halt_poll_ns, d->halt_poll_ns);
    __builtin_memset(d, 0, sizeof(*d));

    /* Reason slots: only those touched since the last fold. */
    if (cpu->exit_dirty[0] | cpu->exit_dirty[1]) {
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < FNTAX_KVM_EXIT_SLOTS; i++) {
            if (!(cpu->exit_dirty[i >> 6] & (1ull << (i & 63))))
                continue;
            fntax_kvm_add(&p->exit_reasons[i], &cpu->exit_reasons[i]);
            cpu->exit_reasons[i].count = 0;
            cpu->exit_reasons[i].ns = 0;
        }
        cpu->exit_dirty[0] = 0;
        cpu->exit_dirty[1] = 0;
    }
    if (cpu->ue_dirty) {
#pragma clang loop unroll(disable)
        for (u32 i = 0; i < FNTAX_KVM_UEXIT_SLOTS; i++) {
            if (!(cpu->ue_dirty & (1ull << i)))
                continue;
            fntax_kvm_add(&p->userspace_reasons[i], &cpu->userspace_reasons[i]);
            cpu->userspace_reasons[i].count = 0;
            cpu->userspace_reasons[i].ns = 0;
        }
        cpu->ue_dirty = 0;
    }
}

/* Zero the touched reason slots (arrays stay zero outside the dirty masks). */
static __always_inline void fntax_kvm_drop_reasons(struct fntax_kvm_cpu *cpu)
{
    if (!(cpu->exit_dirty[0] | cpu->exit_dirty[1] | cpu->ue_dirty))
        return;
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FNTAX_KVM_EXIT_SLOTS; i++) {
        if (cpu->exit_dirty[i >> 6] & (1ull << (i & 63))) {
            cpu->exit_reasons[i].count = 0;
            cpu->exit_reasons[i].ns = 0;
        }
    }
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < FNTAX_KVM_UEXIT_SLOTS; i++) {
        if (cpu->ue_dirty & (1ull << i)) {
            cpu->userspace_reasons[i].count = 0;
            cpu->userspace_reasons[i].ns = 0;
        }
    }
    cpu->exit_dirty[0] = 0;
    cpu->exit_dirty[1] = 0;
    cpu->ue_dirty = 0;
}

/* The slot, owned by the calling thread and marked as a vCPU thread (every
 * KVM event comes from one). NULL only if the per-CPU array is unreadable. */
static __always_inline struct fntax_kvm_cpu *fntax_kvm_current(void)
{
    int zero = 0;
    struct fntax_kvm_cpu *cpu = kvm_cpu.lookup(&zero);
    if (!cpu)
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    if (cpu->tid != tid) {
        /* First event of this thread on this CPU since attach, or a missed
         * switch: adopt the slot. A foreign unfolded delta is lost (counted). */
        if (cpu->vcpu && cpu->events)
            fntax_kvm_count_error(FNTAX_KVM_ERR_LOST);
        cpu->tid = tid;
        cpu->vcpu = 0;
        cpu->events = 0;
        __builtin_memset(&cpu->f, 0, sizeof(cpu->f));
        __builtin_memset(&cpu->delta, 0, sizeof(cpu->delta));
        fntax_kvm_drop_reasons(cpu);
        struct fntax_kvm_thread *t = kvm_threads.lookup(&tid);
        if (t) {
            cpu->f = *t;
            cpu->vcpu = 1;
        }
    }
    if (!cpu->vcpu) {
        struct fntax_kvm_thread fresh = {};
        if (kvm_threads.update(&tid, &fresh) != 0) {
            fntax_kvm_count_error(FNTAX_KVM_ERR_THREADS);
            return 0;
        }
        cpu->vcpu = 1;
    }
    return cpu;
}

/* After each event: bound how stale kvm_procs can get for a vCPU thread
 * that is never switched out. */
static __always_inline void fntax_kvm_tick(struct fntax_kvm_cpu *cpu)
{
    if (++cpu->events >= FNTAX_KVM_FOLD_EVERY)
        fntax_kvm_fold(cpu, (u32)(bpf_get_current_pid_tgid() >> 32));
}

static __always_inline void fntax_kvm_close_userspace(struct fntax_kvm_cpu *cpu, u64 now)
{
    u64 spent = now - cpu->f.ue_since_ns;
    u32 slot = cpu->f.ue_slot;
    cpu->f.ue_since_ns = 0;
    if (slot >= FNTAX_KVM_UEXIT_SLOTS)
        return;
    cpu->userspace_reasons[slot].ns += spent;
    cpu->ue_dirty |= 1ull << slot;
    if (slot == FNTAX_KVM_EXIT_HLT)
        cpu->delta.userspace_halt_ns += spent;
    else
        cpu->delta.userspace_ns += spent;
}

TRACEPOINT_PROBE(kvm, kvm_exit)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    u32 slot = fntax_kvm_exit_slot(args->isa, args->exit_reason, args->info1);
    if (slot >= FNTAX_KVM_EXIT_SLOTS)
        slot = FNTAX_KVM_EXIT_OTHER;
    cpu->f.exit_since_ns = bpf_ktime_get_ns();
    cpu->f.exit_slot = slot;
    cpu->exit_reasons[slot].count += 1;
    cpu->exit_dirty[slot >> 6] |= 1ull << (slot & 63);
    cpu->delta.exits += 1;
    if (slot == FNTAX_VMX_HLT)
        cpu->delta.halt_exits += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_entry)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    u64 now = bpf_ktime_get_ns();
    cpu->f.entry_seen = 1;
    if (cpu->f.exit_since_ns) {
        u64 spent = now - cpu->f.exit_since_ns;
        u32 slot = cpu->f.exit_slot;
        cpu->f.exit_since_ns = 0;
        if (slot < FNTAX_KVM_EXIT_SLOTS) {
            cpu->exit_reasons[slot].ns += spent;
            cpu->exit_dirty[slot >> 6] |= 1ull << (slot & 63);
            if (slot == FNTAX_VMX_HLT)
                cpu->delta.halt_exit_ns += spent;
            else
                cpu->delta.exit_ns += spent;
        }
    }
    if (cpu->f.ue_since_ns) {
        fntax_kvm_close_userspace(cpu, now);
        cpu->delta.reentries_by_entry += 1;
    }
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_userspace_exit)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
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
    cpu->f.ue_since_ns = bpf_ktime_get_ns();
    cpu->f.ue_slot = slot;
    cpu->userspace_reasons[slot].count += 1;
    cpu->ue_dirty |= 1ull << slot;
    cpu->delta.userspace_exits += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(syscalls, sys_enter_ioctl)
{
    if ((u32)args->cmd != FNTAX_KVM_RUN)
        return FNTAX_KVM_RET;
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    cpu->delta.kvm_runs += 1;
    if (cpu->f.ue_since_ns && !cpu->f.entry_seen) {
        fntax_kvm_close_userspace(cpu, bpf_ktime_get_ns());
        cpu->delta.reentries_by_run += 1;
    }
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_pio)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    if (args->rw)
        cpu->delta.pio_out += 1;
    else
        cpu->delta.pio_in += 1;
    u32 bucket = fntax_kvm_port_bucket(args->port);
    if (bucket < FNTAX_PORT_BUCKETS)
        cpu->delta.pio_ports[bucket] += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_mmio)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    if (args->type == 0)
        cpu->delta.mmio_unsatisfied += 1;
    else if (args->type == 1)
        cpu->delta.mmio_read += 1;
    else
        cpu->delta.mmio_write += 1;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(kvm, kvm_vcpu_wakeup)
{
    struct fntax_kvm_cpu *cpu = fntax_kvm_current();
    if (!cpu)
        return FNTAX_KVM_RET;
    cpu->delta.halts += 1;
    if (args->waited)
        cpu->delta.halt_wait_ns += args->ns;
    else
        cpu->delta.halt_poll_ns += args->ns;
    fntax_kvm_tick(cpu);
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(sched, sched_switch)
{
    int zero = 0;
    struct fntax_kvm_cpu *cpu = kvm_cpu.lookup(&zero);
    if (!cpu)
        return FNTAX_KVM_RET;
    u32 prev = (u32)args->prev_pid;
    u32 next = (u32)args->next_pid;

    /* Switch-out, in prev's context: fold, keep what is in flight. */
    if (cpu->tid == prev && cpu->vcpu) {
        fntax_kvm_fold(cpu, (u32)(bpf_get_current_pid_tgid() >> 32));
        struct fntax_kvm_thread *t = kvm_threads.lookup(&prev);
        if (t)
            *t = cpu->f;
    } else if (cpu->vcpu && cpu->events) {
        /* The slot's owner left without us seeing it: its delta cannot be
         * folded from here (wrong context); drop it rather than give it to next. */
        fntax_kvm_count_error(FNTAX_KVM_ERR_LOST);
        __builtin_memset(&cpu->delta, 0, sizeof(cpu->delta));
        fntax_kvm_drop_reasons(cpu);
    }

    /* Switch-in: the slot becomes next's. Unfolded deltas are empty here
     * (folded above, or the owner never was a vCPU thread). */
    cpu->tid = next;
    cpu->vcpu = 0;
    cpu->events = 0;
    struct fntax_kvm_thread *t = kvm_threads.lookup(&next);
    if (t) {
        cpu->f = *t;
        cpu->vcpu = 1;
    } else {
        __builtin_memset(&cpu->f, 0, sizeof(cpu->f));
    }
    return FNTAX_KVM_RET;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    int zero = 0;
    struct fntax_kvm_cpu *cpu = kvm_cpu.lookup(&zero);
    if (!cpu)
        return FNTAX_KVM_RET;
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    u32 tgid = (u32)(id >> 32);
    if (cpu->tid == tid && cpu->vcpu) {
        fntax_kvm_fold(cpu, tgid);
        kvm_threads.delete(&tid);
        /* Its last switch-out finds no kvm_threads entry: nothing to save. */
        cpu->vcpu = 0;
    }
    if (tid == tgid) {
        struct fntax_kvm_proc *p = kvm_procs.lookup(&tgid);
        if (p)
            p->exited = 1;
    }
    return FNTAX_KVM_RET;
}
