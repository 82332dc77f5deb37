/*
 * fuzz_options.c -- libFuzzer target: arbitrary bytes as retnetd's config
 * file (server/options.c over libinih).  Loading must accept or refuse
 * without crashing or leaking; an accepted file must give values inside
 * every setting's range, and printing the effective configuration must work.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "options.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/rn-fuzz-options-%ld.conf", (long)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        abort();
    fwrite(data, 1, size, f);
    fclose(f);
    char *argv[] = {"retnetd", "--config", path, "--check-config", NULL};
    rd_options o;
    FILE *saved = stderr;
    stderr = fopen("/dev/null", "w"); /* refusals print a line each */
    int rc = rd_options_load(&o, 4, argv);
    fclose(stderr);
    stderr = saved;
    if (rc == 0) {
        if (o.port < 0 || o.port > 65535 || o.chunk < 1 || o.max_n < 1 || o.max_n > 256 ||
            !o.host || !o.device || !o.log_format)
            abort();
        FILE *null = fopen("/dev/null", "w");
        rd_options_print(&o, null);
        fclose(null);
    }
    rd_options_free(&o);
    return 0;
}
