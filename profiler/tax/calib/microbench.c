/* fntax host calibration microbenchmarks. Prints one JSON object of
 * nanoseconds per event for a single run; profiler/tax/calibrate.py repeats
 * runs and takes their lower quartile.
 *
 *   clock_read       clock_gettime(CLOCK_MONOTONIC)
 *   function_call    a call to a non-inlined function, less an empty loop
 *   syscall          syscall(SYS_getppid): entry + exit + a trivial body
 *   page_fault_minor first touch of a fresh anonymous page, less a touch of
 *                    an already-mapped page
 *   context_switch   pipe ping-pong between two processes pinned to one CPU:
 *                    per switch, less the pipe syscalls timed without switching
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The thread's own CPU time: time it spent preempted by other work on a
 * loaded host is not part of the cost of what it does. */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

__attribute__((noinline)) static long callee(long x)
{
    __asm__ volatile("" ::: "memory");
    return x + 1;
}

static double clock_read(long n)
{
    volatile uint64_t sink = 0;
    uint64_t t0 = now_ns();
    for (long i = 0; i < n; i++)
        sink += now_ns();
    return (double)(now_ns() - t0) / n;
}

static double function_call(long n)
{
    volatile long acc = 0;
    uint64_t t0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        __asm__ volatile("" ::: "memory");
        acc = acc + i;
    }
    uint64_t empty = cpu_ns() - t0;
    t0 = cpu_ns();
    for (long i = 0; i < n; i++)
        acc = callee(acc);
    uint64_t calls = cpu_ns() - t0;
    double per = ((double)calls - (double)empty) / n;
    return per > 0.1 ? per : 0.1;
}

static double syscall_cost(long n)
{
    uint64_t t0 = cpu_ns();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return (double)(cpu_ns() - t0) / n;
}

static double page_fault(long pages)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = (size_t)pages * page;
    volatile char *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        return -1;
    uint64_t t0 = cpu_ns();
    for (long i = 0; i < pages; i++)
        mem[i * page] = 1;
    uint64_t first = cpu_ns() - t0;
    t0 = cpu_ns();
    for (long i = 0; i < pages; i++)
        mem[i * page] = 2;
    uint64_t again = cpu_ns() - t0;
    munmap((void *)mem, len);
    return ((double)first - (double)again) / pages;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static double context_switch(long rounds)
{
    int ab[2], ba[2], self[2];
    char c = 0;
    if (pipe(ab) || pipe(ba) || pipe(self))
        return -1;
    pin(0);
    /* The same write + read pair with no switch: the pipe syscalls' own cost. */
    uint64_t t0 = now_ns();
    for (long i = 0; i < rounds; i++) {
        if (write(self[1], &c, 1) != 1 || read(self[0], &c, 1) != 1)
            return -1;
    }
    double pair = (double)(now_ns() - t0) / rounds;

    pid_t child = fork();
    if (child == 0) {
        pin(0);
        for (long i = 0; i < rounds; i++) {
            if (read(ab[0], &c, 1) != 1 || write(ba[1], &c, 1) != 1)
                _exit(1);
        }
        _exit(0);
    }
    t0 = now_ns();
    for (long i = 0; i < rounds; i++) {
        if (write(ab[1], &c, 1) != 1 || read(ba[0], &c, 1) != 1)
            return -1;
    }
    double round_trip = (double)(now_ns() - t0) / rounds;
    waitpid(child, NULL, 0);
    /* A round trip is two switches and two write+read pairs. */
    double per = (round_trip - 2 * pair) / 2;
    return per > 1 ? per : 1;
}

int main(int argc, char **argv)
{
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    if (scale <= 0)
        scale = 1.0;
    printf("{\"clock_read\": %.3f, \"function_call\": %.3f, \"syscall\": %.3f, "
           "\"page_fault_minor\": %.3f, \"context_switch\": %.3f}\n",
           clock_read((long)(2000000 * scale)), function_call((long)(20000000 * scale)),
           syscall_cost((long)(500000 * scale)), page_fault((long)(20000 * scale)),
           context_switch((long)(20000 * scale)));
    return 0;
}
