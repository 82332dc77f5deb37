/*
 * options.h -- every setting of retnetd in one table (options.c): its
 * config-file section and key, command-line flag, environment variable,
 * type, range and default.  The defaults exist only there.
 *
 * Precedence, lowest first: the defaults < the config file (--config FILE,
 * INI, parsed by libinih) < RETNETD_* environment variables < flags.  An
 * unknown key, a value out of range or of the wrong type is an error that
 * names the file and line (or the variable, or the flag).
 */
#ifndef RD_OPTIONS_H
#define RD_OPTIONS_H

#include <stddef.h>
#include <stdio.h>

typedef struct rd_options {
    /* [server] */
    const char *host;
    int port;
    const char *api_key;
    const char *api_key_file;
    int metrics_auth; /* /metrics needs an API key when keys are set */
    unsigned max_connections;
    unsigned timeout_s;
    size_t max_body;
    unsigned drain_timeout_s;
    /* [model] */
    const char *model_dir;
    const char *model_name; /* the id clients use; "" = the directory's name */
    const char *chat_template;
    /* [engine] */
    const char *device;
    int threads;
    int slots;                   /* 0: from state_memory */
    size_t state_memory;         /* bytes */
    size_t gpu_state_memory;     /* bytes; 0: state_memory */
    const char *gpu_state_dtype; /* "f32" or "bf16" */
    int chunk;
    int prefill_budget;
    int stream_interval_us; /* -1: chosen at start (main.c) */
    int loop_slice_us;      /* the loop thread's scheduler slice; 0: the kernel's */
    /* [limits] */
    int max_waiting;
    int max_prompt_tokens;
    int max_tokens_limit;
    int max_n;
    int max_sessions;
    /* [sessions] */
    const char *state_dir; /* "" = none */
    unsigned persist_interval_s;
    size_t host_state_memory;
    unsigned session_ttl_s;
    size_t prefix_cache_memory;
    /* [log] */
    const char *log_level;  /* debug | info | warn | error */
    const char *log_format; /* logfmt | json */
    const char *log_file;   /* "" = stderr */
    int log_requests;
    /* not settings: what the command line asked for */
    const char *config_path;
    int check_config;
} rd_options;

/* Fills *o from defaults, o->config_path's file, the environment and argv.
 * Returns 0, 1 when --help was printed (exit 0), or -1 after printing one
 * message to stderr (exit 2).  Strings in *o live until rd_options_free. */
int rd_options_load(rd_options *o, int argc, char **argv);
void rd_options_free(rd_options *o);
/* Writes the effective configuration as a config file, each value with a
 * comment saying where it came from (--check-config). */
void rd_options_print(const rd_options *o, FILE *f);
/* The documented example config file (config/retnetd.conf) for the defaults. */
void rd_options_print_example(FILE *f);

#endif
