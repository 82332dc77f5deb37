/*
 * metrics.h -- GET /metrics in the Prometheus text format (0.0.4).
 * Counters and histograms are updated on the loop thread as requests end and
 * tokens arrive; gauges (queue, batch, slots, tiers, memory) are read from
 * the scheduler and the session table when scraped.  Loop thread only.
 */
#ifndef RD_METRICS_H
#define RD_METRICS_H

#include <stddef.h>

struct rd_app;

/* The label for a request path: "completions", "sessions", ... or "other". */
const char *rd_metrics_endpoint(const char *method, const char *path);
void rd_metrics_request(const char *endpoint, unsigned status, double seconds);
void rd_metrics_ttft(double seconds);
/* n tokens arrived `gap` seconds after the previous ones: n gaps of gap/n. */
void rd_metrics_tokens_out(int n, double gap, int first);
void rd_metrics_tokens_in(int n);
/* The whole exposition as a new string (caller frees), or NULL. */
char *rd_metrics_render(struct rd_app *app, size_t *len);

#endif
