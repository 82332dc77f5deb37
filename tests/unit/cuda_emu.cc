/* The CUDA emulation's runtime (cuda_emu.h): launches, barriers, the
 * dynamic shared memory, the warps' exchange slots and each thread's
 * copies in flight. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emu.h"

thread_local dim3 threadIdx;
dim3 blockIdx, gridDim, blockDim;

#define EMU_WARPS 32 /* 1024 threads */
static pthread_barrier_t emu_block_barrier, emu_warp_barrier[EMU_WARPS];
static unsigned char *emu_smem;

static unsigned emu_linear(const dim3 &t)
{
    return t.x + blockDim.x * (t.y + blockDim.y * t.z);
}

void __syncthreads(void)
{
    pthread_barrier_wait(&emu_block_barrier);
}

void __syncwarp(void)
{
    pthread_barrier_wait(&emu_warp_barrier[emu_linear(threadIdx) / 32]);
}

unsigned char *rn_emu_dynamic_smem(void)
{
    return emu_smem;
}

unsigned rn_emu_lane_id(void)
{
    return emu_linear(threadIdx) % 32;
}

/* A warp's lanes' values in a shuffle (doubles hold floats exactly). */
static double emu_exchange[EMU_WARPS][32];

double *rn_emu_exchange(void)
{
    return emu_exchange[emu_linear(threadIdx) / 32];
}

/* A warp's lanes' operands of a warp-wide instruction (mma_dev.cuh), in
 * two sets that the warp's instructions take in turn: every lane of a warp
 * runs the same instructions, so a lane writes a set again only after the
 * barrier of the instruction between, which every lane reaches after it
 * has read that set -- one barrier an instruction, not two. */
static unsigned char emu_xbytes[EMU_WARPS][2][32][64];
static thread_local unsigned emu_xturn; /* the calling thread's instructions so far */

unsigned char *rn_emu_xbytes(void)
{
    return &emu_xbytes[emu_linear(threadIdx) / 32][emu_xturn++ & 1][0][0];
}

/* The calling thread's cp.async copies not yet landed: their bytes (taken
 * at the issue), destination and group (committed groups count from 0;
 * the open one is emu_groups). */
#define EMU_COPIES 256
struct emu_copy {
    unsigned char bytes[16];
    void *dst;
    long group;
};
static thread_local emu_copy emu_copies[EMU_COPIES];
static thread_local int emu_n_copies;
static thread_local long emu_groups;

int rn_emu_cp_async_at_issue;
int rn_emu_blocks_reversed;

void rn_cp_async16_zfill(void *dst, const void *src, int n)
{
    if ((uintptr_t)dst % 16 || (uintptr_t)src % 16 || emu_n_copies == EMU_COPIES ||
        (n != 0 && n != 16))
        abort(); /* the device's alignment; a kernel that never waits */
    emu_copy *c = &emu_copies[emu_n_copies++];
    memset(c->bytes, 0, 16);
    memcpy(c->bytes, src, (size_t)n);
    c->dst = dst, c->group = emu_groups;
    if (rn_emu_cp_async_at_issue)
        memcpy(dst, c->bytes, 16);
}

void rn_cp_async16(void *dst, const void *src)
{
    rn_cp_async16_zfill(dst, src, 16);
}

void rn_cp_async_commit(void)
{
    emu_groups++;
}

/* Lands the copies of every committed group but the newest n, in order
 * (those that landed at their issue are only forgotten). */
void rn_emu_cp_async_wait(int n)
{
    int kept = 0;
    for (int i = 0; i < emu_n_copies; i++) {
        emu_copy *c = &emu_copies[i];
        if (c->group < emu_groups - n) {
            if (!rn_emu_cp_async_at_issue)
                memcpy(c->dst, c->bytes, 16);
        } else {
            emu_copies[kept++] = *c;
        }
    }
    emu_n_copies = kept;
}

struct emu_thread {
    dim3 tid;
    void (*body)(void *);
    void *ctx;
};

static void *emu_thread_main(void *arg)
{
    emu_thread *t = (emu_thread *)arg;
    threadIdx = t->tid;
    emu_n_copies = 0, emu_groups = 0, emu_xturn = 0;
    t->body(t->ctx);
    if (emu_n_copies) /* copies issued and never waited for: lost on the device too */
        abort();
    return NULL;
}

/* One block: its barriers, then a host thread per CUDA thread, joined.  A
 * thread that cannot be started aborts the test: the started ones would
 * wait at a barrier forever. */
static void emu_block(unsigned n, emu_thread *ts, pthread_t *ids, const pthread_attr_t *attr)
{
    pthread_barrier_init(&emu_block_barrier, NULL, n);
    for (unsigned w = 0; w * 32 < n; w++)
        pthread_barrier_init(&emu_warp_barrier[w], NULL, n - w * 32 < 32 ? n - w * 32 : 32);
    for (unsigned i = 0; i < n; i++)
        if (pthread_create(&ids[i], attr, emu_thread_main, &ts[i]) != 0)
            abort();
    for (unsigned i = 0; i < n; i++)
        pthread_join(ids[i], NULL);
    pthread_barrier_destroy(&emu_block_barrier);
    for (unsigned w = 0; w * 32 < n; w++)
        pthread_barrier_destroy(&emu_warp_barrier[w]);
}

int rn_emu_launch_impl(dim3 grid, dim3 block, size_t smem, void (*body)(void *), void *ctx)
{
    unsigned n = block.x * block.y * block.z;
    emu_thread *ts = (emu_thread *)calloc(n ? n : 1, sizeof(emu_thread));
    pthread_t *ids = (pthread_t *)calloc(n ? n : 1, sizeof(pthread_t));
    pthread_attr_t attr;
    int rc = -1;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, (size_t)1 << 20);
    emu_smem = smem ? (unsigned char *)rn_emu_alloc(smem, 1) : NULL;
    if (!ts || !ids || n == 0 || n > 32 * EMU_WARPS || (smem && !emu_smem))
        goto cleanup;
    gridDim = grid, blockDim = block;
    for (unsigned i = 0; i < n; i++) {
        ts[i].tid = dim3(i % block.x, i / block.x % block.y, i / (block.x * block.y));
        ts[i].body = body, ts[i].ctx = ctx;
    }
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = rn_emu_blocks_reversed
                               ? dim3(grid.x - 1 - x, grid.y - 1 - y, grid.z - 1 - z)
                               : dim3(x, y, z);
                if (emu_smem) /* all ones: bf16 NaN, so a read before a write shows */
                    memset(emu_smem, 0xff, smem);
                emu_block(n, ts, ids, &attr);
            }
    rc = 0;
cleanup:
    pthread_attr_destroy(&attr);
    free(emu_smem);
    emu_smem = NULL;
    free(ts);
    free(ids);
    return rc;
}
