/* The CUDA emulation's runtime (cuda_emu.h): launches, barriers, the
 * dynamic shared memory, the warps' exchange slots and each thread's
 * copies in flight.
 *
 * A block's threads are fibers on the launching host thread, run one at a
 * time: a thread runs until it waits at a barrier or ends, then the next
 * one runs.  A barrier with n threads costs n context switches in one
 * process, where host threads cost a futex wake and a schedule each (on a
 * 2-core machine the emulated read-out took minutes that way).  Threads
 * that all wait at barriers no thread can fill stop the test with a message
 * instead of hanging it.
 *
 * On x86-64 a switch is a few instructions of its own (emu_switch below);
 * elsewhere it is ucontext's swapcontext, which also saves the signal mask
 * with a system call at every switch and which AddressSanitizer only
 * partly supports (it warns once a process). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
/* RN_EMU_UCONTEXT: the portable switch on x86-64 too (to test it) */
#if defined(__x86_64__) && defined(__ELF__) && !defined(RN_EMU_UCONTEXT)
#define EMU_SWITCH_ASM 1
#else
#include <ucontext.h>
#endif

dim3 threadIdx; /* the running thread's own: set at each switch */
dim3 blockIdx, gridDim, blockDim;

#define EMU_WARPS 32   /* 1024 threads */
#define EMU_COPIES 256 /* cp.async copies a thread may have in flight */
/* A thread's stack: the kernels' threads reached 5 KiB at most, with
 * AddressSanitizer too. */
#define EMU_STACK (1 << 16)

/* The calling thread's cp.async copies not yet landed: their bytes (taken
 * at the issue), destination and group (committed groups count from 0;
 * the open one is groups). */
struct emu_copy {
    unsigned char bytes[16];
    void *dst;
    long group;
};

/* One CUDA thread: its context and stack, and what the device keeps per
 * thread. */
struct emu_fiber {
#ifdef EMU_SWITCH_ASM
    void *sp; /* its stack pointer while it is not running */
#else
    ucontext_t ctx;
#endif
    unsigned char *stack; /* EMU_STACK bytes above a guard page */
    dim3 tid;
    int done;
    unsigned xturn; /* its warp-wide instructions so far */
    int n_copies;
    long groups;
    emu_copy copies[EMU_COPIES];
#ifdef EMU_ASAN
    void *fake_stack;
#endif
};

/* A barrier of `expected` threads; gen counts the times it filled. */
struct emu_barrier {
    unsigned arrived, expected;
    unsigned long gen;
};

static emu_barrier emu_block_barrier, emu_warp_barrier[EMU_WARPS];
static unsigned char *emu_smem;
static emu_fiber *emu_fibers, *emu_cur; /* the block's threads; the running one */
static unsigned long emu_progress;      /* arrivals and ends: a round without any is a deadlock */
static void (*emu_body)(void *);
static void *emu_ctx;
#ifdef EMU_ASAN
static const void *emu_sched_stack;
static size_t emu_sched_stack_size;
#endif

static void emu_fiber_main(void);

#ifdef EMU_SWITCH_ASM
/* The launching thread's stack pointer while a thread runs. */
static void *emu_sched_sp;

/* rn_emu_switch(save, to): pushes the registers the ABI has a callee keep
 * (and the SSE and x87 control words), stores the stack pointer in *save,
 * takes `to` as the stack pointer and pops the same from it.  A new
 * thread's stack holds such a frame whose return address is its entry
 * (emu_fiber_start_frame). */
extern "C" void rn_emu_switch(void **save, void *to);
__asm__(".text\n"
        ".p2align 4\n"
        ".globl rn_emu_switch\n"
        ".hidden rn_emu_switch\n"
        ".type rn_emu_switch,@function\n"
        "rn_emu_switch:\n"
        "    pushq %rbp\n"
        "    pushq %rbx\n"
        "    pushq %r12\n"
        "    pushq %r13\n"
        "    pushq %r14\n"
        "    pushq %r15\n"
        "    subq $8, %rsp\n"
        "    stmxcsr (%rsp)\n"
        "    fnstcw 4(%rsp)\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    ldmxcsr (%rsp)\n"
        "    fldcw 4(%rsp)\n"
        "    addq $8, %rsp\n"
        "    popq %r15\n"
        "    popq %r14\n"
        "    popq %r13\n"
        "    popq %r12\n"
        "    popq %rbx\n"
        "    popq %rbp\n"
        "    ret\n"
        ".size rn_emu_switch, .-rn_emu_switch\n");

static void emu_switch_to(emu_fiber *f)
{
    rn_emu_switch(&emu_sched_sp, f->sp);
}

static void emu_switch_back(emu_fiber *f)
{
    rn_emu_switch(&f->sp, emu_sched_sp);
}

/* f's stack as rn_emu_switch leaves a thread's: the control words as the
 * launching thread has them, zeros for the registers, then emu_fiber_main
 * as the return address, entered with the stack aligned as after a call
 * (and a zero return address above it, where a backtrace ends). */
static void emu_fiber_start_frame(emu_fiber *f)
{
    uint64_t *top = (uint64_t *)(f->stack + EMU_STACK), *sp = top - 9;
    memset(sp, 0, 9 * sizeof(uint64_t));
    __asm__ volatile("stmxcsr %0\n\tfnstcw %1"
                     : "=m"(*(uint32_t *)sp), "=m"(*(uint16_t *)((char *)sp + 4)));
    sp[7] = (uint64_t)(uintptr_t)emu_fiber_main;
    f->sp = sp;
}
#else
static ucontext_t emu_sched; /* the launching thread, between threads */

static void emu_switch_to(emu_fiber *f)
{
    swapcontext(&emu_sched, &f->ctx);
}

static void emu_switch_back(emu_fiber *f)
{
    swapcontext(&f->ctx, &emu_sched);
}

static void emu_fiber_start_frame(emu_fiber *f)
{
    if (getcontext(&f->ctx) != 0)
        abort();
    f->ctx.uc_stack.ss_sp = f->stack;
    f->ctx.uc_stack.ss_size = EMU_STACK;
    f->ctx.uc_link = NULL; /* emu_fiber_main never returns */
    makecontext(&f->ctx, emu_fiber_main, 0);
    /* AddressSanitizer's swapcontext clears the shadow of the stack named
     * here at every switch, which would erase the redzones of the frames a
     * waiting thread keeps across its barriers; makecontext is done with
     * it. */
    f->ctx.uc_stack.ss_sp = NULL;
    f->ctx.uc_stack.ss_size = 0;
}
#endif

/* Back to the launching thread's loop, which runs the next thread (not
 * inlined: the callers' locals stay out of the switch's frame). */
__attribute__((noinline)) static void emu_yield(void)
{
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&emu_cur->fake_stack, emu_sched_stack, emu_sched_stack_size);
#endif
    emu_switch_back(emu_cur);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(emu_cur->fake_stack, NULL, NULL);
#endif
}

static void emu_barrier_wait(emu_barrier *b)
{
    unsigned long gen = b->gen;
    emu_progress++;
    if (++b->arrived == b->expected) {
        b->arrived = 0;
        b->gen++;
        return;
    }
    while (b->gen == gen)
        emu_yield();
}

static void emu_barrier_init(emu_barrier *b, unsigned expected)
{
    b->arrived = 0, b->expected = expected, b->gen = 0;
}

static unsigned emu_linear(const dim3 &t)
{
    return t.x + blockDim.x * (t.y + blockDim.y * t.z);
}

void __syncthreads(void)
{
    emu_barrier_wait(&emu_block_barrier);
}

void __syncwarp(void)
{
    emu_barrier_wait(&emu_warp_barrier[emu_linear(threadIdx) / 32]);
}

unsigned char *rn_emu_dynamic_smem(void)
{
    return emu_smem;
}

unsigned rn_emu_lane_id(void)
{
    return emu_linear(threadIdx) % 32;
}

/* A warp's lanes' values in a shuffle or vote (doubles hold floats and
 * unsigned values exactly), and their operands of a warp-wide instruction
 * (mma_dev.cuh), each in two sets that the warp's instructions take in
 * turn (xturn counts them all): every lane of a warp runs the same
 * instructions, so a lane writes a set again only after the barrier of
 * the instruction between, which every lane reaches after it has read
 * that set -- one barrier an instruction, not two. */
static double emu_exchange[EMU_WARPS][2][32];
static unsigned char emu_xbytes[EMU_WARPS][2][32][64];

double *rn_emu_exchange(void)
{
    return emu_exchange[emu_linear(threadIdx) / 32][emu_cur->xturn++ & 1];
}

unsigned char *rn_emu_xbytes(void)
{
    return &emu_xbytes[emu_linear(threadIdx) / 32][emu_cur->xturn++ & 1][0][0];
}

int rn_emu_cp_async_at_issue;
int rn_emu_blocks_reversed;

void rn_cp_async16_zfill(void *dst, const void *src, int n)
{
    emu_fiber *f = emu_cur;
    if ((uintptr_t)dst % 16 || (uintptr_t)src % 16 || f->n_copies == EMU_COPIES ||
        (n != 0 && n != 16))
        abort(); /* the device's alignment; a kernel that never waits */
    emu_copy *c = &f->copies[f->n_copies++];
    memset(c->bytes, 0, 16);
    memcpy(c->bytes, src, (size_t)n);
    c->dst = dst, c->group = f->groups;
    if (rn_emu_cp_async_at_issue)
        memcpy(dst, c->bytes, 16);
}

void rn_cp_async16(void *dst, const void *src)
{
    rn_cp_async16_zfill(dst, src, 16);
}

void rn_cp_async_commit(void)
{
    emu_cur->groups++;
}

/* Lands the copies of every committed group but the newest n, in order
 * (those that landed at their issue are only forgotten). */
void rn_emu_cp_async_wait(int n)
{
    emu_fiber *f = emu_cur;
    int kept = 0;
    for (int i = 0; i < f->n_copies; i++) {
        emu_copy *c = &f->copies[i];
        if (c->group < f->groups - n) {
            if (!rn_emu_cp_async_at_issue)
                memcpy(c->dst, c->bytes, 16);
        } else {
            f->copies[kept++] = *c;
        }
    }
    f->n_copies = kept;
}

/* A thread from its start to its end, then back to the launching thread's
 * loop for good (it is never resumed once done). */
static void emu_fiber_main(void)
{
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(NULL, &emu_sched_stack, &emu_sched_stack_size);
#endif
    emu_body(emu_ctx);
    if (emu_cur->n_copies) /* copies issued and never waited for: lost on the device too */
        abort();
    emu_cur->done = 1;
    emu_progress++;
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(NULL, emu_sched_stack, emu_sched_stack_size);
#endif
    emu_switch_back(emu_cur);
    abort(); /* unreachable: a done thread is not resumed */
}

/* Runs thread f until it waits or ends (not inlined, as emu_yield). */
__attribute__((noinline)) static void emu_resume(emu_fiber *f)
{
    emu_cur = f;
    threadIdx = f->tid;
#ifdef EMU_ASAN
    void *fake = NULL;
    __sanitizer_start_switch_fiber(&fake, f->stack, EMU_STACK);
#endif
    emu_switch_to(f);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, NULL, NULL);
#endif
}

/* Thread f ready to start the kernel afresh on its stack (not inlined, as
 * emu_yield). */
__attribute__((noinline)) static void emu_fiber_reset(emu_fiber *f)
{
    f->done = 0, f->xturn = 0, f->n_copies = 0, f->groups = 0;
#ifdef EMU_ASAN /* the last block's frames' redzones, if any were left, before the new frame */
    __asan_unpoison_memory_region(f->stack, EMU_STACK);
#endif
    emu_fiber_start_frame(f);
}

/* One block: its barriers, its n threads started afresh on their stacks,
 * then rounds over the threads not yet ended until all have. */
static void emu_block(unsigned n)
{
    emu_barrier_init(&emu_block_barrier, n);
    for (unsigned w = 0; w * 32 < n; w++)
        emu_barrier_init(&emu_warp_barrier[w], n - w * 32 < 32 ? n - w * 32 : 32);
    for (unsigned i = 0; i < n; i++)
        emu_fiber_reset(&emu_fibers[i]);
    for (unsigned left = n; left > 0;) {
        unsigned long before = emu_progress;
        left = 0;
        for (unsigned i = 0; i < n; i++) {
            if (emu_fibers[i].done)
                continue;
            emu_resume(&emu_fibers[i]);
            left += !emu_fibers[i].done;
        }
        if (left > 0 && emu_progress == before) {
            fprintf(stderr,
                    "cuda_emu: block (%u,%u,%u): %u threads wait at barriers "
                    "that no thread can fill\n",
                    blockIdx.x, blockIdx.y, blockIdx.z, left);
            abort();
        }
    }
}

/* n threads' state and stacks, each stack over a guard page so an overflow
 * faults; NULL when out of memory.  emu_free_fibers releases them. */
static emu_fiber *emu_alloc_fibers(unsigned n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    emu_fiber *fs = (emu_fiber *)calloc(n, sizeof(emu_fiber));
    if (!fs)
        return NULL;
    for (unsigned i = 0; i < n; i++) {
        void *p = mmap(NULL, EMU_STACK + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            goto fail;
        fs[i].stack = (unsigned char *)p + page;
        if (mprotect(p, page, PROT_NONE) != 0)
            goto fail;
    }
    return fs;
fail:
    for (unsigned i = 0; i < n && fs[i].stack; i++)
        munmap(fs[i].stack - page, EMU_STACK + page);
    free(fs);
    return NULL;
}

static void emu_free_fibers(emu_fiber *fs, unsigned n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (unsigned i = 0; fs && i < n; i++)
        munmap(fs[i].stack - page, EMU_STACK + page);
    free(fs);
}

/* The threads of the largest block launched so far, kept for the next
 * launches: a backend's forward pass makes hundreds of small launches, and
 * mapping their stacks afresh each time cost more than running them. */
static emu_fiber *emu_pool;
static unsigned emu_pool_n;

/* emu_pool holding at least n threads; 0, or -1 when out of memory. */
static int emu_pool_fit(unsigned n)
{
    if (n <= emu_pool_n)
        return 0;
    emu_free_fibers(emu_pool, emu_pool_n);
    emu_pool = emu_alloc_fibers(n);
    emu_pool_n = emu_pool ? n : 0;
    return emu_pool ? 0 : -1;
}

int rn_emu_launch_impl(dim3 grid, dim3 block, size_t smem, void (*body)(void *), void *ctx)
{
    unsigned n = block.x * block.y * block.z;
    int rc = -1;
    if (n == 0 || n > 32 * EMU_WARPS)
        return -1;
    emu_smem = smem ? (unsigned char *)rn_emu_alloc(smem, 1) : NULL;
    if (emu_pool_fit(n) != 0 || (smem && !emu_smem))
        goto cleanup;
    emu_fibers = emu_pool;
    gridDim = grid, blockDim = block;
    emu_body = body, emu_ctx = ctx;
    for (unsigned i = 0; i < n; i++)
        emu_fibers[i].tid = dim3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = rn_emu_blocks_reversed
                               ? dim3(grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z)
                               : dim3(x, y, z);
                if (emu_smem) /* all ones: bf16 NaN, so a read before a write shows */
                    memset(emu_smem, 0xff, smem);
                emu_block(n);
            }
    rc = 0;
cleanup:
    free(emu_smem);
    emu_smem = NULL;
    emu_fibers = emu_cur = NULL;
    return rc;
}
