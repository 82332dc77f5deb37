/*
 * options.c -- see options.h.
 */
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "options.h"

#ifndef RD_VERSION
#define RD_VERSION "unknown"
#endif

typedef enum { T_STR, T_INT, T_UINT, T_MIB, T_BYTES, T_BOOL } opt_type;
typedef enum { SRC_DEFAULT = 0, SRC_FILE, SRC_ENV, SRC_FLAG } opt_source;

typedef struct {
    const char *section, *key, *flag, *env;
    opt_type type;
    size_t off;
    const char *def;
    long long lo, hi;
    const char *choices; /* T_STR: "a|b|c", or NULL for any text */
    const char *help;
} opt;

#define O(f) offsetof(rd_options, f)
#define BIG 2147483647LL

static const opt table[] = {
    {"server", "host", "--host", "RETNETD_HOST", T_STR, O(host), "127.0.0.1", 0, 0, NULL,
     "listen address (0.0.0.0 or :: for every interface)"},
    {"server", "port", "--port", "RETNETD_PORT", T_INT, O(port), "8080", 0, 65535, NULL,
     "listen port (0: any free port, printed in the ready line)"},
    {"server", "api_key", "--api-key", "RETNETD_API_KEY", T_STR, O(api_key), "", 0, 0, NULL,
     "require Authorization: Bearer KEY on everything but /health, /ready and /metrics"},
    {"server", "api_key_file", "--api-key-file", "RETNETD_API_KEY_FILE", T_STR, O(api_key_file), "",
     0, 0, NULL, "file of API keys, one per line as name:secret (sessions belong to a key's name)"},
    {"server", "metrics_auth", "--metrics-auth", "RETNETD_METRICS_AUTH", T_BOOL, O(metrics_auth),
     "false", 0, 1, NULL, "with API keys, require one on /metrics too"},
    {"server", "max_connections", "--max-connections", "RETNETD_MAX_CONNECTIONS", T_UINT,
     O(max_connections), "1024", 1, 1000000, NULL, "concurrent connections"},
    {"server", "timeout", "--timeout", "RETNETD_TIMEOUT", T_UINT, O(timeout_s), "600", 1, 86400,
     NULL, "seconds an idle connection is kept"},
    {"server", "max_body", "--max-body", "RETNETD_MAX_BODY", T_BYTES, O(max_body), "1048576", 1024,
     1LL << 30, NULL, "request body limit in bytes (state uploads: one state blob)"},
    {"server", "drain_timeout", "--drain-timeout", "RETNETD_DRAIN_TIMEOUT", T_UINT,
     O(drain_timeout_s), "30", 0, 3600, NULL,
     "seconds running requests may finish after SIGTERM before they are cut"},
    {"model", "dir", "--model", "RETNETD_MODEL", T_STR, O(model_dir), "models", 0, 0, NULL,
     "model directory (config.json, model.safetensors, tokenizer.json)"},
    {"model", "name", "--model-name", "RETNETD_MODEL_NAME", T_STR, O(model_name), "", 0, 0, NULL,
     "the model id clients use (empty: the directory's name)"},
    {"model", "chat_template", "--chat-template", "RETNETD_CHAT_TEMPLATE", T_STR, O(chat_template),
     "plain", 0, 0, "plain|chatml", "how chat messages become a prompt"},
    {"engine", "device", "--device", "RETNETD_DEVICE", T_STR, O(device), "auto", 0, 0,
     "auto|cpu|cuda", "backend"},
    {"engine", "threads", "--threads", "RETNETD_THREADS", T_INT, O(threads), "0", 0, 1024, NULL,
     "CPU threads (0: every online CPU)"},
    {"engine", "slots", "--slots", "RETNETD_SLOTS", T_INT, O(slots), "0", 0, 1 << 20, NULL,
     "state slots (0: state_memory / the model's state size)"},
    {"engine", "state_memory", "--state-memory", "RETNETD_STATE_MEMORY", T_MIB, O(state_memory),
     "1024", 1, 1 << 24, NULL, "MiB of state slots"},
    {"engine", "gpu_state_memory", "--gpu-state-memory", "RETNETD_GPU_STATE_MEMORY", T_MIB,
     O(gpu_state_memory), "0", 0, 1 << 24, NULL,
     "MiB of device memory for state slots when serving on a GPU (0: 90% of what the GPU has "
     "free after the weights)"},
    {"engine", "gpu_state_dtype", "--gpu-state-dtype", "RETNETD_GPU_STATE_DTYPE", T_STR,
     O(gpu_state_dtype), "f32", 0, 0, "f32|bf16",
     "GPU state values (bf16: half the memory, rounded each step)"},
    {"engine", "chunk", "--chunk", "RETNETD_CHUNK", T_INT, O(chunk), "0", 0, 65536, NULL,
     "prefill chunk in tokens (0: 64 on the CPU, 1024 on a GPU)"},
    {"engine", "prefill_budget", "--prefill-budget", "RETNETD_PREFILL_BUDGET", T_INT,
     O(prefill_budget), "0", 0, 1 << 20, NULL,
     "prompt tokens prefilled per scheduler step while other streams decode (0: 256 on the "
     "CPU, 1024 on a GPU)"},
    {"engine", "stream_interval", "--stream-interval-us", "RETNETD_STREAM_INTERVAL_US", T_INT,
     O(stream_interval_us), "-1", -1, 1000000, NULL,
     "us new stream tokens may wait to share one event (-1: 4000 if the CPU engine takes "
     "every core, else 1000)"},
    {"engine", "loop_slice", "--loop-slice-us", "RETNETD_LOOP_SLICE_US", T_INT, O(loop_slice_us),
     "0", 0, 100000, NULL,
     "scheduler slice (us) for the HTTP thread (Linux 6.12+; 0: the kernel's): short, "
     "its wake-ups do not wait behind busy engine threads"},
    {"limits", "max_waiting", "--max-waiting", "RETNETD_MAX_WAITING", T_INT, O(max_waiting), "64",
     1, 1 << 20, NULL, "requests waiting for a slot before new ones get 429"},
    {"limits", "max_prompt_tokens", "--max-prompt-tokens", "RETNETD_MAX_PROMPT_TOKENS", T_INT,
     O(max_prompt_tokens), "8192", 1, 1 << 24, NULL, "prompt tokens per request"},
    {"limits", "max_tokens", "--max-tokens", "RETNETD_MAX_TOKENS", T_INT, O(max_tokens_limit),
     "4096", 1, 1 << 24, NULL, "max_tokens a request may ask for"},
    {"limits", "max_n", "--max-n", "RETNETD_MAX_N", T_INT, O(max_n), "8", 1, 256, NULL,
     "choices per request"},
    {"limits", "max_sessions", "--max-sessions", "RETNETD_MAX_SESSIONS", T_INT, O(max_sessions),
     "256", 1, 1 << 24, NULL, "sessions, in every tier together"},
    {"sessions", "state_dir", "--state-dir", "RETNETD_STATE_DIR", T_STR, O(state_dir), "", 0, 0,
     NULL, "sessions persist here across restarts, and the disk tier (empty: none)"},
    {"sessions", "persist_interval", "--persist-interval", "RETNETD_PERSIST_INTERVAL", T_UINT,
     O(persist_interval_s), "0", 0, 86400, NULL,
     "seconds between writes of changed sessions to state_dir (0: at stop only)"},
    {"sessions", "host_state_memory", "--host-state-memory", "RETNETD_HOST_STATE_MEMORY", T_MIB,
     O(host_state_memory), "1024", 0, 1 << 24, NULL,
     "MiB of host memory for idle sessions moved out of their slots"},
    {"sessions", "ttl", "--session-ttl", "RETNETD_SESSION_TTL", T_UINT, O(session_ttl_s), "0", 0,
     BIG, NULL, "seconds an idle session is kept (0: forever)"},
    {"sessions", "prefix_cache_memory", "--prefix-cache-memory", "RETNETD_PREFIX_CACHE_MEMORY",
     T_MIB, O(prefix_cache_memory), "256", 0, 1 << 24, NULL,
     "MiB of states of recent prompts' starts kept for reuse (0: off)"},
    {"log", "level", "--log-level", "RETNETD_LOG_LEVEL", T_STR, O(log_level), "info", 0, 0,
     "debug|info|warn|error", "least severe level written"},
    {"log", "format", "--log-format", "RETNETD_LOG_FORMAT", T_STR, O(log_format), "logfmt", 0, 0,
     "logfmt|json", "one line per event"},
    {"log", "file", "--log-file", "RETNETD_LOG_FILE", T_STR, O(log_file), "", 0, 0, NULL,
     "append to this file, reopened on SIGHUP (empty: stderr)"},
    {"log", "requests", "--log-requests", "RETNETD_LOG_REQUESTS", T_BOOL, O(log_requests), "true",
     0, 1, NULL, "one line per HTTP request"},
};
#define N_OPTS (int)(sizeof table / sizeof table[0])

static const char *const source_names[] = {"default", "config file", "environment", "flag"};

/* ---------------------------------------------------------------- state */

typedef struct {
    rd_options *o;
    opt_source src[N_OPTS];
    int seen_in_file[N_OPTS];
    char err[512];
    char **strings; /* every string value, freed by rd_options_free */
    int n_strings, cap_strings;
} loader;

static loader *active; /* rd_options_free needs the strings of the last load */

static char *keep(loader *l, const char *s)
{
    if (l->n_strings == l->cap_strings) {
        int cap = l->cap_strings ? 2 * l->cap_strings : 32;
        char **p = realloc(l->strings, sizeof *p * (size_t)cap);
        if (!p)
            return NULL;
        l->strings = p;
        l->cap_strings = cap;
    }
    char *c = strdup(s);
    if (c)
        l->strings[l->n_strings++] = c;
    return c;
}

static int choice_ok(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, v, n))
            return 1;
        p += len + (bar ? 1 : 0);
    }
    return 0;
}

/* Sets option i from text v; 0, or -1 with the reason in l->err. */
static int set_value(loader *l, int i, const char *v)
{
    const opt *t = &table[i];
    char *field = (char *)l->o + t->off, *end;
    if (t->type == T_STR) {
        if (t->choices && !choice_ok(t->choices, v)) {
            snprintf(l->err, sizeof l->err, "'%s' is not one of %s", v, t->choices);
            return -1;
        }
        char *c = keep(l, v);
        if (!c) {
            snprintf(l->err, sizeof l->err, "out of memory");
            return -1;
        }
        *(const char **)(void *)field = c;
        return 0;
    }
    if (t->type == T_BOOL) {
        int b = !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcmp(v, "1") ||
                !strcasecmp(v, "on");
        if (!b && strcasecmp(v, "false") && strcasecmp(v, "no") && strcmp(v, "0") &&
            strcasecmp(v, "off")) {
            snprintf(l->err, sizeof l->err, "'%s' is not a boolean (true or false)", v);
            return -1;
        }
        *(int *)(void *)field = b;
        return 0;
    }
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno == ERANGE) {
        snprintf(l->err, sizeof l->err, "'%s' is not a whole number", v);
        return -1;
    }
    if (n < t->lo || n > t->hi) {
        snprintf(l->err, sizeof l->err, "%lld is out of range [%lld, %lld]", n, t->lo, t->hi);
        return -1;
    }
    switch (t->type) {
    case T_INT:
        *(int *)(void *)field = (int)n;
        break;
    case T_UINT:
        *(unsigned *)(void *)field = (unsigned)n;
        break;
    case T_MIB:
        *(size_t *)(void *)field = (size_t)n << 20;
        break;
    default:
        *(size_t *)(void *)field = (size_t)n;
        break;
    }
    return 0;
}

static int find_key(const char *section, const char *key)
{
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(table[i].section, section) && !strcmp(table[i].key, key))
            return i;
    return -1;
}

static int find_flag(const char *flag)
{
    for (int i = 0; i < N_OPTS; i++)
        if (!strcmp(table[i].flag, flag))
            return i;
    return -1;
}

/* ---------------------------------------------------------------- sources */

static int ini_cb(void *user, const char *section, const char *key, const char *value)
{
    loader *l = user;
    int i = find_key(section, key);
    if (l->err[0])
        return 0; /* keep the first error */
    if (!section[0]) {
        snprintf(l->err, sizeof l->err, "'%s' is outside a [section]", key);
        return 0;
    }
    if (i < 0) {
        int known = 0;
        for (int k = 0; k < N_OPTS; k++)
            known |= !strcmp(table[k].section, section);
        snprintf(l->err, sizeof l->err, known ? "unknown key '%s' in [%s]" : "unknown section [%s]",
                 known ? key : section, section);
        return 0;
    }
    if (l->seen_in_file[i]) {
        snprintf(l->err, sizeof l->err, "[%s] %s is set twice", section, key);
        return 0;
    }
    l->seen_in_file[i] = 1;
    if (set_value(l, i, value) != 0) {
        char why[sizeof l->err];
        memcpy(why, l->err, sizeof why);
        snprintf(l->err, sizeof l->err, "[%.40s] %.60s: %.400s", section, key, why);
        return 0;
    }
    l->src[i] = SRC_FILE;
    return 1;
}

static int load_file(loader *l, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "retnetd: --config %s: %s\n", path,
                stat(path, &st) != 0 ? strerror(errno) : "not a regular file");
        return -1;
    }
    ini_allow_multiline = false; /* a continuation line would set a key twice */
    int line = ini_parse(path, ini_cb, l);
    if (line == 0)
        return 0;
    if (line < 0)
        fprintf(stderr, "retnetd: --config %s: cannot read it\n", path);
    else
        fprintf(stderr, "retnetd: %s:%d: %s\n", path, line,
                l->err[0] ? l->err : "not a key = value line, [section] or comment");
    return -1;
}

static int load_env(loader *l)
{
    for (int i = 0; i < N_OPTS; i++) {
        const char *v = getenv(table[i].env);
        if (!v)
            continue;
        if (set_value(l, i, v) != 0) {
            fprintf(stderr, "retnetd: %s: %s\n", table[i].env, l->err);
            return -1;
        }
        l->src[i] = SRC_ENV;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: retnetd [--config FILE] [--check-config] [options]\n"
            "  --config FILE             settings from an INI file (config/retnetd.conf)\n"
            "  --check-config            validate, print the effective settings, exit\n"
            "  --print-config-example    every setting with its default, as a config file\n"
            "  --version, -V             print the version (git describe of the build) and exit\n"
            "  --help, -h                this text\n"
            "Settings (defaults < config file < RETNETD_* environment < flags):\n");
    const char *section = "";
    for (int i = 0; i < N_OPTS; i++) {
        const opt *t = &table[i];
        if (strcmp(section, t->section))
            fprintf(f, "[%s]\n", section = t->section);
        char left[64];
        snprintf(left, sizeof left, "%s %s", t->flag,
                 t->type == T_STR    ? (t->choices ? t->choices : "TEXT")
                 : t->type == T_BOOL ? "true|false"
                 : t->type == T_MIB  ? "MIB"
                                     : "N");
        fprintf(f, "  %-34s %s (default %s%s)\n", left, t->help, t->def[0] ? t->def : "empty",
                t->type == T_MIB ? " MiB" : "");
    }
}

/* First pass: --config, --check-config, --help and --version; 1 = help or
 * version printed. */
static int scan_flags(rd_options *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("retnetd %s\n", RD_VERSION);
            return 1;
        }
        if (!strcmp(argv[i], "--print-config-example")) {
            rd_options_print_example(stdout);
            return 1;
        }
        if (!strcmp(argv[i], "--check-config"))
            o->check_config = 1;
        else if (!strcmp(argv[i], "--config") && i + 1 < argc)
            o->config_path = argv[++i];
    }
    return 0;
}

static int load_flags(loader *l, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--check-config"))
            continue;
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        int k = find_flag(a);
        if (k < 0) {
            fprintf(stderr, "retnetd: unknown option '%s' (retnetd --help lists them)\n", a);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "retnetd: %s needs a value\n", a);
            return -1;
        }
        if (set_value(l, k, argv[++i]) != 0) {
            fprintf(stderr, "retnetd: %s: %s\n", a, l->err);
            return -1;
        }
        l->src[k] = SRC_FLAG;
    }
    return 0;
}

int rd_options_load(rd_options *o, int argc, char **argv)
{
    loader *l = calloc(1, sizeof *l);
    memset(o, 0, sizeof *o);
    if (!l)
        return -1;
    l->o = o;
    active = l;
    if (scan_flags(o, argc, argv))
        return 1;
    for (int i = 0; i < N_OPTS; i++)
        if (set_value(l, i, table[i].def) != 0) {
            fprintf(stderr, "retnetd: built-in default of %s: %s\n", table[i].key, l->err);
            return -1;
        }
    if ((o->config_path && load_file(l, o->config_path) != 0) || load_env(l) != 0 ||
        load_flags(l, argc, argv) != 0)
        return -1;
    return 0;
}

void rd_options_free(rd_options *o)
{
    (void)o;
    if (!active)
        return;
    for (int i = 0; i < active->n_strings; i++)
        free(active->strings[i]);
    free(active->strings);
    free(active);
    active = NULL;
}

/* ---------------------------------------------------------------- output */

static void print_value(FILE *f, const rd_options *o, const opt *t)
{
    const char *field = (const char *)o + t->off;
    switch (t->type) {
    case T_STR: {
        const char *v = *(const char *const *)(const void *)field;
        fprintf(f, "%s", v ? v : "");
        break;
    }
    case T_BOOL:
        fprintf(f, "%s", *(const int *)(const void *)field ? "true" : "false");
        break;
    case T_INT:
        fprintf(f, "%d", *(const int *)(const void *)field);
        break;
    case T_UINT:
        fprintf(f, "%u", *(const unsigned *)(const void *)field);
        break;
    case T_MIB:
        fprintf(f, "%zu", *(const size_t *)(const void *)field >> 20);
        break;
    default:
        fprintf(f, "%zu", *(const size_t *)(const void *)field);
        break;
    }
}

void rd_options_print(const rd_options *o, FILE *f)
{
    const char *section = "";
    if (o->config_path)
        fprintf(f, "; effective retnetd configuration (config file %s)\n", o->config_path);
    else
        fprintf(f, "; effective retnetd configuration (no config file)\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt *t = &table[i];
        if (strcmp(section, t->section))
            fprintf(f, "\n[%s]\n", section = t->section);
        fprintf(f, "%s = ", t->key);
        if (!strcmp(t->key, "api_key") && o->api_key[0])
            fprintf(f, "(set, not shown)");
        else
            print_value(f, o, t);
        fprintf(f, "    ; %s\n", source_names[active ? active->src[i] : 0]);
    }
}

void rd_options_print_example(FILE *f)
{
    const char *section = "";
    fprintf(f, "; retnetd configuration: every setting with its default.\n"
               "; Precedence, lowest first: built-in defaults < this file (retnetd --config\n"
               "; FILE) < RETNETD_* environment variables < command-line flags.\n"
               "; `retnetd --config FILE --check-config` validates a file and prints the\n"
               "; effective configuration.  Sizes in MiB unless a comment says bytes.\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt *t = &table[i];
        if (strcmp(section, t->section))
            fprintf(f, "\n[%s]\n", section = t->section);
        fprintf(f, "; %s%s%s.  Flag %s, environment %s.\n", t->help, t->choices ? ": " : "",
                t->choices ? t->choices : "", t->flag, t->env);
        fprintf(f, "%s = %s\n", t->key, t->def);
    }
}
