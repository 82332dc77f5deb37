/*
 * queue.h -- the only cross-thread code: jobs go from the HTTP loop thread to
 * the engine thread (submit), and come back as "ready" notifications through
 * a uv_async_t.  Every mutex, condition variable and uv_async_send of the
 * server lives in queue.c.
 *
 * uv_async_send coalesces: the loop's callback must take what the wake
 * was for each time (rd_queue_take_ready: everything after a full wake, the
 * urgent jobs after a wake for urgent news; held jobs stay for the next
 * full wake, which the engine sends within the stream interval, or for the
 * loop's own timer while streams are decoding: rd_queue_poll).
 */
#ifndef RD_QUEUE_H
#define RD_QUEUE_H

#include <uv.h>

#include "job.h"

typedef struct rd_queue rd_queue;

/* Creates the queue and its async and timer handles on loop; on_ready runs
 * on the loop thread after the engine marked jobs ready.  Returns 0 and sets
 * *out (owned by the caller: rd_queue_close then rd_queue_free after the
 * loop closed the handles). */
int rd_queue_new(rd_queue **out, uv_loop_t *loop, void (*on_ready)(void *arg), void *arg);
void rd_queue_close(rd_queue *q); /* uv_close of both handles unless closing (loop thread) */
void rd_queue_free(rd_queue *q);

void rd_queue_lock(rd_queue *q);
void rd_queue_unlock(rd_queue *q);

/* Loop thread: hands j (with a reference the queue now owns) to the engine. */
void rd_queue_submit(rd_queue *q, rd_job *j);
/* Engine thread: pops every submitted job into a list (next_submit links);
 * waits up to wait_ms when there is none (wait_ms < 0: until one arrives or
 * stop).  Returns the list (possibly NULL). */
rd_job *rd_queue_take(rd_queue *q, int wait_ms);
/* Engine thread, after stop: the jobs submitted but never taken (once). */
rd_job *rd_queue_take_rest(rd_queue *q);
/* Engine thread, queue mutex held: puts j on the ready list (once) with a
 * reference, and arranges a wake-up (sent by rd_queue_wake).  urgent: the
 * loop must hear of it at the next wake (a first token, an end); otherwise
 * the news may wait up to the stream interval. */
void rd_queue_mark_ready_locked(rd_queue *q, rd_job *j, int urgent);
/* Engine thread: wakes the loop if anything is on the ready list and either
 * something urgent is among it (then only the urgent entries are handed
 * over), or flush is set (the engine goes idle), or the engine's next call,
 * ahead_ns from now by its estimate, would come more than a stream interval
 * after the last full wake (then everything is), so held news never waits
 * much longer than that.  Each wake preempts a core the engine is using, so
 * while tokens come faster than the interval they are sent together (one
 * SSE chunk) instead of one wake each. */
void rd_queue_wake(rd_queue *q, int flush, uint64_t ahead_ns);
/* The stream interval in microseconds (default 0: every iteration's news
 * at once).  poll: the loop may collect held news on its own timer
 * (rd_queue_poll); worth it only when the loop has a core the engine does
 * not use. */
void rd_queue_set_interval_us(rd_queue *q, unsigned us, int poll);
/* Loop thread: while on (some stream is decoding), a loop timer collects the
 * held news every stream interval (rounded down to whole milliseconds, so
 * never later than the interval) and the engine wakes the loop only for
 * urgent news or when it goes idle.  A thread that wakes a sleeping one pays
 * for it in the system call: uv_async_send took 39-45 us of the engine
 * thread on the 2-core VM of docs/benchmarks.md.  The timer's wake costs the
 * engine nothing when the loop has a core of its own; when the engine takes
 * every core, each wake of the loop preempts it either way, and the
 * engine's own wakes, sent between steps, cost it less (measured: 1.5-3%
 * of a single stream's speed), so there the engine keeps waking.  Off: news
 * left on the ready list goes out at once.  Intervals under 1 ms (libuv's
 * timer resolution) leave the waking to the engine too. */
void rd_queue_poll(rd_queue *q, int on);
/* Loop thread: takes the ready list (next_taken links), or after a wake for
 * urgent news only the urgent entries; each entry carries one reference the
 * caller must drop. */
rd_job *rd_queue_take_ready(rd_queue *q);
/* How often the loop was woken for news: by the engine (uv_async_send) and
 * by its own timer (rd_queue_poll), since the start. */
void rd_queue_wake_counts(rd_queue *q, unsigned long *engine, unsigned long *timer);
/* Asks the engine thread to stop; rd_queue_take returns NULL from then on. */
void rd_queue_stop(rd_queue *q);
int rd_queue_stopping(rd_queue *q);
/* Wakes a waiting engine thread (after a cancel, say). */
void rd_queue_poke(rd_queue *q);

#endif
