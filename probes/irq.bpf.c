/* Interrupt time: hardirq handlers and softirqs, charged to the task they
 * interrupted (the owner of this CPU's slot at that moment).
 *
 * fntax:map cpu_state  percpu_array u32 fntax_cpu
 */
#include "fntax.h"

static __always_inline struct fntax_cpu *fntax_irq_slot(void)
{
    int zero = 0;
    return cpu_state.lookup(&zero);
}

/* Raw tracepoints (no argument is read): a softirq runs with interrupts on,
 * and a perf-event tracepoint program running there held the kernel's
 * per-CPU "a BPF program runs" flag, so the wake-ups of an interrupt that
 * came in meanwhile were skipped for every fntax program (recursion misses;
 * see sched_process_exec in sched.bpf.c). */
RAW_TRACEPOINT_PROBE(irq_handler_entry)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu)
        cpu->hardirq_enter_ns = bpf_ktime_get_ns();
    return 0;
}

RAW_TRACEPOINT_PROBE(irq_handler_exit)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu && cpu->hardirq_enter_ns) {
        if (cpu->workload)
            cpu->delta.hardirq_ns += bpf_ktime_get_ns() - cpu->hardirq_enter_ns;
        cpu->hardirq_enter_ns = 0;
    }
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_entry)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu)
        cpu->softirq_enter_ns = bpf_ktime_get_ns();
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu && cpu->softirq_enter_ns) {
        if (cpu->workload)
            cpu->delta.softirq_ns += bpf_ktime_get_ns() - cpu->softirq_enter_ns;
        cpu->softirq_enter_ns = 0;
    }
    return 0;
}
