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

TRACEPOINT_PROBE(irq, irq_handler_entry)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu)
        cpu->hardirq_enter_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, irq_handler_exit)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu && cpu->hardirq_enter_ns) {
        if (cpu->workload)
            cpu->delta.hardirq_ns += bpf_ktime_get_ns() - cpu->hardirq_enter_ns;
        cpu->hardirq_enter_ns = 0;
    }
    return 0;
}

TRACEPOINT_PROBE(irq, softirq_entry)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu)
        cpu->softirq_enter_ns = bpf_ktime_get_ns();
    return 0;
}

TRACEPOINT_PROBE(irq, softirq_exit)
{
    struct fntax_cpu *cpu = fntax_irq_slot();
    if (cpu && cpu->softirq_enter_ns) {
        if (cpu->workload)
            cpu->delta.softirq_ns += bpf_ktime_get_ns() - cpu->softirq_enter_ns;
        cpu->softirq_enter_ns = 0;
    }
    return 0;
}
