/* queue.c -- see queue.h. */
#include <stdint.h>
#include <stdlib.h>

#include "queue.h"

struct rd_queue {
    uv_mutex_t mu;
    uv_cond_t cv;
    uv_async_t async;
    uv_timer_t poll; /* the loop's own collection of held news (rd_queue_poll) */
    rd_job *sub_head, *sub_tail;
    rd_job *ready_head;
    int stop, poked;
    int may_poll;                       /* rd_queue_set_interval_us */
    int polling;                        /* the loop collects held news on its timer */
    int urgent_wake;                    /* an urgent job is on the ready list */
    int deliver_all;                    /* the last wake was for everything, not only the urgent */
    uint64_t interval_ns, last_wake_ns; /* rd_queue_wake (engine thread) */
    unsigned long wakes_engine, wakes_timer; /* rd_queue_wake_counts */
    void (*on_ready)(void *);
    void *arg;
};

static void async_cb(uv_async_t *h)
{
    rd_queue *q = h->data;
    q->on_ready(q->arg);
}

/* The loop's timer: everything on the ready list goes out, as after a full
 * wake from the engine. */
static void poll_cb(uv_timer_t *t)
{
    rd_queue *q = t->data;
    uv_mutex_lock(&q->mu);
    int any = q->ready_head != NULL;
    if (any) {
        q->deliver_all = 1;
        q->urgent_wake = 0; /* taken now: the engine's next wake need not be for it */
        q->wakes_timer++;
    }
    uv_mutex_unlock(&q->mu);
    if (any)
        q->on_ready(q->arg);
}

int rd_queue_new(rd_queue **out, uv_loop_t *loop, void (*on_ready)(void *arg), void *arg)
{
    rd_queue *q = calloc(1, sizeof *q);
    *out = NULL;
    if (!q)
        return -1;
    q->on_ready = on_ready;
    q->arg = arg;
    if (uv_mutex_init(&q->mu) != 0 || uv_cond_init(&q->cv) != 0 ||
        uv_async_init(loop, &q->async, async_cb) != 0) {
        free(q);
        return -1;
    }
    q->async.data = q;
    uv_timer_init(loop, &q->poll); /* cannot fail */
    q->poll.data = q;
    *out = q;
    return 0;
}

void rd_queue_close(rd_queue *q)
{
    /* a shutdown's walk over every handle may have closed them already */
    if (!uv_is_closing((uv_handle_t *)&q->async))
        uv_close((uv_handle_t *)&q->async, NULL);
    if (!uv_is_closing((uv_handle_t *)&q->poll))
        uv_close((uv_handle_t *)&q->poll, NULL);
}

void rd_queue_free(rd_queue *q)
{
    if (!q)
        return;
    for (rd_job *j = q->sub_head, *n; j; j = n) {
        n = j->next_submit;
        rd_job_unref(j);
    }
    for (rd_job *j = q->ready_head, *n; j; j = n) {
        n = j->next_ready;
        rd_job_unref(j);
    }
    uv_cond_destroy(&q->cv);
    uv_mutex_destroy(&q->mu);
    free(q);
}

void rd_queue_lock(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
}

void rd_queue_unlock(rd_queue *q)
{
    uv_mutex_unlock(&q->mu);
}

void rd_queue_submit(rd_queue *q, rd_job *j)
{
    uv_mutex_lock(&q->mu);
    j->next_submit = NULL;
    if (q->sub_tail)
        q->sub_tail->next_submit = j;
    else
        q->sub_head = j;
    q->sub_tail = j;
    uv_cond_signal(&q->cv);
    uv_mutex_unlock(&q->mu);
}

rd_job *rd_queue_take(rd_queue *q, int wait_ms)
{
    uv_mutex_lock(&q->mu);
    if (!q->sub_head && !q->stop && !q->poked && wait_ms != 0) {
        if (wait_ms < 0)
            uv_cond_wait(&q->cv, &q->mu);
        else
            uv_cond_timedwait(&q->cv, &q->mu, (uint64_t)wait_ms * 1000000u);
    }
    q->poked = 0;
    rd_job *list = q->stop ? NULL : q->sub_head;
    if (!q->stop)
        q->sub_head = q->sub_tail = NULL;
    uv_mutex_unlock(&q->mu);
    return list;
}

rd_job *rd_queue_take_rest(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
    rd_job *list = q->sub_head;
    q->sub_head = q->sub_tail = NULL;
    uv_mutex_unlock(&q->mu);
    return list;
}

void rd_queue_mark_ready_locked(rd_queue *q, rd_job *j, int urgent)
{
    if (urgent) {
        j->ready_urgent = 1;
        q->urgent_wake = 1;
    }
    if (j->on_ready)
        return;
    rd_job_ref(j);
    j->on_ready = 1;
    j->next_ready = q->ready_head;
    q->ready_head = j;
}

void rd_queue_set_interval_us(rd_queue *q, unsigned us, int poll)
{
    q->interval_ns = (uint64_t)us * 1000u;
    q->may_poll = poll;
}

void rd_queue_poll(rd_queue *q, int on)
{
    uint64_t ms = q->interval_ns / 1000000u;
    if (on && (ms == 0 || !q->may_poll))
        return; /* a sub-millisecond interval, or no core of its own: the engine wakes */
    if (uv_is_closing((uv_handle_t *)&q->poll))
        return; /* shutting down: the engine thread is gone, nothing is held */
    uv_mutex_lock(&q->mu);
    int was = q->polling;
    q->polling = on;
    /* news left over when the polling stops is not stranded */
    int leftover = was && !on && q->ready_head;
    if (leftover)
        q->deliver_all = 1;
    uv_mutex_unlock(&q->mu);
    if (on && !was)
        uv_timer_start(&q->poll, poll_cb, ms, ms);
    else if (was && !on)
        uv_timer_stop(&q->poll);
    if (leftover)
        uv_async_send(&q->async);
}

void rd_queue_wake(rd_queue *q, int flush, uint64_t ahead_ns)
{
    uint64_t now = uv_hrtime();
    uv_mutex_lock(&q->mu);
    /* held news waits only if the next call still comes within the
     * interval of the last full wake, or the loop collects it itself */
    int all = flush || (!q->polling && now + ahead_ns - q->last_wake_ns > q->interval_ns);
    int wake = q->ready_head && (all || q->urgent_wake);
    if (wake) {
        q->wakes_engine++;
        q->urgent_wake = 0;
        if (all) {
            q->deliver_all = 1;
            q->last_wake_ns = now;
        }
    }
    uv_mutex_unlock(&q->mu);
    if (wake)
        uv_async_send(&q->async);
}

rd_job *rd_queue_take_ready(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
    int all = q->deliver_all;
    q->deliver_all = 0;
    /* relink through next_taken: the engine may put a job back on the ready
     * list (reusing next_ready) while the loop walks this one.  A wake for
     * urgent news takes only the urgent jobs: the held ones stay for the
     * next full wake, so one stream's first token or end does not send
     * every other stream's chunk early */
    rd_job *list = NULL, **link = &q->ready_head;
    while (*link) {
        rd_job *j = *link;
        if (!all && !j->ready_urgent) {
            link = &j->next_ready;
            continue;
        }
        *link = j->next_ready;
        j->on_ready = 0;
        j->ready_urgent = 0;
        j->next_taken = list;
        list = j;
    }
    uv_mutex_unlock(&q->mu);
    return list;
}

void rd_queue_wake_counts(rd_queue *q, unsigned long *engine, unsigned long *timer)
{
    uv_mutex_lock(&q->mu);
    *engine = q->wakes_engine;
    *timer = q->wakes_timer;
    uv_mutex_unlock(&q->mu);
}

void rd_queue_stop(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
    q->stop = 1;
    uv_cond_broadcast(&q->cv);
    uv_mutex_unlock(&q->mu);
}

int rd_queue_stopping(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
    int s = q->stop;
    uv_mutex_unlock(&q->mu);
    return s;
}

void rd_queue_poke(rd_queue *q)
{
    uv_mutex_lock(&q->mu);
    q->poked = 1;
    uv_cond_signal(&q->cv);
    uv_mutex_unlock(&q->mu);
}
