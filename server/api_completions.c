/*
 * api_completions.c -- POST /v1/completions and /v1/chat/completions:
 * request JSON -> jobs (one per prompt, n choices each) -> the engine; the
 * tokens that come back are decoded here (streaming detokenizer per choice),
 * checked against stop strings (held back while they could still match) and
 * sent as one JSON body or as server-sent events.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "app.h"
#include "metrics.h"
#include "utf8.h"

#define MAX_STOPS 4
#define MAX_STOP_LEN 256

/* ---------------------------------------------------------- request parse */

typedef struct {
    const char *param; /* NULL or points to param_buf */
    char param_buf[64];
    char msg[256];
} parse_err;

static int perr(parse_err *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int perr(parse_err *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    /* copied: the name may live in the request's JSON tree, freed before the reply */
    if (param) {
        snprintf(e->param_buf, sizeof e->param_buf, "%s", param);
        e->param = e->param_buf;
    } else {
        e->param = NULL;
    }
    return -1;
}

static int get_number(const cJSON *root, const char *k, double def, double lo, double hi,
                      double *out, parse_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return perr(e, k, "'%s' must be a number", k);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return perr(e, k, "'%s' must be between %g and %g", k, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int get_int(const cJSON *root, const char *k, int def, int lo, int hi, int *out,
                   parse_err *e)
{
    double d;
    if (get_number(root, k, def, lo, hi, &d, e) != 0)
        return -1;
    if (d != floor(d))
        return perr(e, k, "'%s' must be an integer", k);
    *out = (int)d;
    return 0;
}

static int get_bool(const cJSON *root, const char *k, int def, int *out, parse_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, k);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return perr(e, k, "'%s' must be true or false", k);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Request fields, per endpoint: the sampling and session fields both take,
 * then each one's own. */
static const char *const shared_fields[] = {"model",
                                            "max_tokens",
                                            "temperature",
                                            "top_p",
                                            "n",
                                            "stream",
                                            "stream_options",
                                            "stop",
                                            "seed",
                                            "logprobs",
                                            "presence_penalty",
                                            "frequency_penalty",
                                            "logit_bias",
                                            "user",
                                            "top_k",
                                            "min_p",
                                            "repetition_penalty",
                                            "session",
                                            "ignore_eos",
                                            NULL};
static const char *const completion_fields[] = {"prompt", "echo", "best_of", NULL};
static const char *const chat_fields[] = {"messages", "max_completion_tokens", "top_logprobs",
                                          NULL};

static int field_in(const char *name, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (!strcmp(name, list[i]))
            return 1;
    return 0;
}

/* Every field of root is a shared one or one of own's. */
static int check_fields(const cJSON *root, const char *const *own, parse_err *e)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, root)
    {
        if (!field_in(it->string, shared_fields) && !field_in(it->string, own))
            return perr(e, it->string, "unsupported field '%s'", it->string);
    }
    return 0;
}

/* Tokenizes one prompt element: a string or an array of ids. */
static int prompt_tokens(rd_app *app, const cJSON *p, int32_t **ids, int *n, char **text,
                         parse_err *e)
{
    *text = NULL;
    if (cJSON_IsString(p)) {
        size_t len = strlen(p->valuestring);
        if (rn_tokenizer_encode(app->tok, p->valuestring, len, ids, n) != RN_OK)
            return perr(e, "prompt", "cannot tokenize the prompt");
        *text = strdup(p->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(p))
        return perr(e, "prompt",
                    "'prompt' must be a string, an array of strings, an array of token ids or an "
                    "array of such arrays");
    int k = cJSON_GetArraySize(p);
    *ids = malloc(sizeof(int32_t) * (size_t)(k + 1));
    *n = 0;
    if (!*ids)
        return perr(e, NULL, "out of memory");
    const cJSON *it;
    cJSON_ArrayForEach(it, p)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
            it->valuedouble < 0 || it->valuedouble >= app->cfg->vocab_size) {
            free(*ids);
            *ids = NULL;
            return perr(e, "prompt", "token ids must be integers in [0, %d)", app->cfg->vocab_size);
        }
        (*ids)[(*n)++] = (int32_t)it->valuedouble;
    }
    size_t len;
    rn_tokenizer_decode(app->tok, *ids, *n, 0, text, &len);
    return 0;
}

static int parse_stops(rd_req *r, const cJSON *root, parse_err *e)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(root, "stop");
    if (!st || cJSON_IsNull(st))
        return 0;
    int k = cJSON_IsString(st) ? 1 : cJSON_IsArray(st) ? cJSON_GetArraySize(st) : -1;
    if (k < 0 || k > MAX_STOPS)
        return perr(e, "stop", "'stop' must be a string or an array of at most %d strings",
                    MAX_STOPS);
    r->stops = calloc((size_t)k + 1, sizeof *r->stops);
    if (!r->stops)
        return perr(e, NULL, "out of memory");
    for (int i = 0; i < k; i++) {
        const cJSON *s = cJSON_IsString(st) ? st : cJSON_GetArrayItem(st, i);
        if (!cJSON_IsString(s) || !s->valuestring[0] || strlen(s->valuestring) > MAX_STOP_LEN)
            return perr(e, "stop",
                        "each stop sequence must be a non-empty string of at most %d bytes",
                        MAX_STOP_LEN);
        r->stops[r->n_stops++] = strdup(s->valuestring);
    }
    return 0;
}

static int parse_bias(rd_app *app, rd_job *j, const cJSON *root, parse_err *e)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "logit_bias"), *it;
    if (!b || cJSON_IsNull(b))
        return 0;
    if (!cJSON_IsObject(b) || cJSON_GetArraySize(b) > 1024)
        return perr(e, "logit_bias",
                    "'logit_bias' must map token ids to numbers (at most 1024 entries)");
    j->bias = calloc((size_t)cJSON_GetArraySize(b) + 1, sizeof *j->bias);
    if (!j->bias)
        return perr(e, NULL, "out of memory");
    int n = 0;
    cJSON_ArrayForEach(it, b)
    {
        char *end;
        long id = strtol(it->string, &end, 10);
        if (*end || end == it->string || id < 0 || id >= app->cfg->vocab_size ||
            !cJSON_IsNumber(it) || fabs(it->valuedouble) > 100)
            return perr(e, "logit_bias",
                        "logit_bias: '%s' must be a token id below %d with a bias in [-100, 100]",
                        it->string, app->cfg->vocab_size);
        j->bias[n++] = (rn_logit_bias){(int32_t)id, (float)it->valuedouble};
    }
    j->sp.logit_bias = j->bias;
    j->sp.n_logit_bias = n;
    return 0;
}

/* Sampling and length fields shared by both endpoints, into a template job. */
static int parse_sampling(rd_app *app, const cJSON *root, rd_job *t, int chat, parse_err *e)
{
    double temp, top_p, min_p, rep, pres, freq, seed;
    int top_k, max_tokens, lp = 0, want_lp = 0, ignore_eos,
                           def_max = chat ? app->opt.max_tokens_limit : 16;
    if (get_number(root, "temperature", 1.0, 0.0, 2.0, &temp, e) ||
        get_number(root, "top_p", 1.0, 0.0, 1.0, &top_p, e) ||
        get_number(root, "min_p", 0.0, 0.0, 1.0, &min_p, e) ||
        get_number(root, "repetition_penalty", 1.0, 0.01, 100.0, &rep, e) ||
        get_number(root, "presence_penalty", 0.0, -2.0, 2.0, &pres, e) ||
        get_number(root, "frequency_penalty", 0.0, -2.0, 2.0, &freq, e) ||
        get_number(root, "seed", -1.0, -9007199254740992.0, 9007199254740992.0, &seed, e) ||
        get_int(root, "top_k", 0, -1, 1 << 24, &top_k, e) ||
        get_int(root,
                chat && cJSON_GetObjectItem(root, "max_completion_tokens") ? "max_completion_tokens"
                                                                           : "max_tokens",
                def_max, 1, app->opt.max_tokens_limit, &max_tokens, e) ||
        get_bool(root, "ignore_eos", 0, &ignore_eos, e))
        return -1;
    if (seed != floor(seed))
        return perr(e, "seed", "'seed' must be an integer");
    if (top_p == 0.0)
        return perr(e, "top_p", "'top_p' must be greater than 0");
    if (chat) {
        if (get_bool(root, "logprobs", 0, &want_lp, e) ||
            get_int(root, "top_logprobs", 0, 0, 20, &lp, e))
            return -1;
    } else {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(root, "logprobs");
        want_lp = l && !cJSON_IsNull(l);
        if (want_lp && get_int(root, "logprobs", 0, 0, 20, &lp, e))
            return -1;
    }
    uint64_t sd;
    if (seed < 0) {
        if (getrandom(&sd, sizeof sd, 0) != (ssize_t)sizeof sd)
            sd = (uint64_t)time(NULL);
    } else {
        sd = (uint64_t)seed;
    }
    t->sp = (rn_sample_params){.temperature = (float)temp,
                               .top_k = top_k < 0 ? 0 : top_k,
                               .top_p = (float)top_p,
                               .min_p = (float)min_p,
                               .repetition_penalty = (float)rep,
                               .presence_penalty = (float)pres,
                               .frequency_penalty = (float)freq,
                               .seed = sd};
    t->max_tokens = max_tokens;
    t->n_logprobs = lp;
    t->want_logprobs = want_lp;
    t->ignore_eos = ignore_eos;
    t->eos = app->cfg->eos_token_id;
    return parse_bias(app, t, root, e);
}

/* A message's content: a string, or an array of text parts
 * ({"type": "text", "text": "..."}) joined in order.  malloc'd, or NULL. */
static char *message_text(const cJSON *content)
{
    if (cJSON_IsString(content))
        return strdup(content->valuestring);
    if (!cJSON_IsArray(content))
        return NULL;
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, content)
    {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(text))
            return NULL;
        len += strlen(text->valuestring);
    }
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    len = 0;
    cJSON_ArrayForEach(part, content)
    {
        const char *t = cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring;
        memcpy(out + len, t, strlen(t));
        len += strlen(t);
    }
    out[len] = '\0';
    return out;
}

/* Chat messages -> one prompt string through the configured template. */
static char *chat_prompt(rd_app *app, const cJSON *root, parse_err *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(root, "messages"), *m;
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0) {
        perr(e, "messages", "'messages' must be a non-empty array");
        return NULL;
    }
    int chatml = strcmp(app->opt.chat_template, "chatml") == 0;
    size_t cap = 256, len = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        char *content = message_text(cJSON_GetObjectItemCaseSensitive(m, "content"));
        if (!cJSON_IsString(role) || !content ||
            (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
             strcmp(role->valuestring, "assistant") && strcmp(role->valuestring, "developer"))) {
            free(content);
            free(out);
            perr(e, "messages",
                 "each message needs a role (system, developer, user, assistant) and a "
                 "content: a string or an array of text parts");
            return NULL;
        }
        size_t need = len + strlen(content) + 64;
        if (need > cap) {
            while (cap < need)
                cap *= 2;
            out = realloc(out, cap);
        }
        const char *r = role->valuestring;
        if (chatml)
            len += (size_t)sprintf(out + len, "<|im_start|>%s\n%s<|im_end|>\n", r, content);
        else if (!strcmp(r, "system") || !strcmp(r, "developer"))
            len += (size_t)sprintf(out + len, "%s\n\n", content);
        else
            len += (size_t)sprintf(out + len, "%s: %s\n", !strcmp(r, "user") ? "User" : "Assistant",
                                   content);
        free(content);
    }
    out = realloc(out, len + 32);
    strcpy(out + len, chatml ? "<|im_start|>assistant\n" : "Assistant:");
    return out;
}

/* ------------------------------------------------------------ jobs */

static rd_job *make_job(rd_app *app, const rd_job *t, int n, int32_t *ids, int n_ids, parse_err *e)
{
    rd_job *j = rd_job_new(n);
    if (!j)
        return NULL;
    j->prompt = ids;
    j->n_prompt = n_ids;
    j->max_tokens = t->max_tokens;
    j->n_logprobs = t->n_logprobs;
    j->want_logprobs = t->want_logprobs;
    j->ignore_eos = t->ignore_eos;
    j->eos = t->eos;
    j->news = t->news;
    j->sp = t->sp;
    if (t->sp.n_logit_bias) {
        j->bias = malloc(sizeof *j->bias * (size_t)t->sp.n_logit_bias);
        if (!j->bias) {
            perr(e, NULL, "out of memory");
            rd_job_unref(j);
            return NULL;
        }
        memcpy(j->bias, t->bias, sizeof *j->bias * (size_t)t->sp.n_logit_bias);
        j->sp.logit_bias = j->bias;
    }
    for (int i = 0; i < n; i++) {
        rn_error err = {0};
        rn_sample_params sp = j->sp;
        sp.seed = j->sp.seed + (uint64_t)i; /* one stream per choice */
        if (rn_sampler_new(&j->ch[i].sampler, &sp, app->cfg->vocab_size, &err) != RN_OK ||
            rn_detok_new(&j->ch[i].detok, app->tok, 1) != RN_OK) {
            perr(e, NULL, "%s", err.msg[0] ? err.msg : "out of memory");
            rd_job_unref(j);
            return NULL;
        }
        rn_sampler_accept_prompt(j->ch[i].sampler, ids, n_ids);
    }
    return j;
}

static void req_free(rd_req *r)
{
    for (int i = 0; i < r->n_jobs; i++) {
        if (r->jobs[i])
            rd_job_unref(r->jobs[i]);
        if (r->prompt_text)
            free(r->prompt_text[i]);
    }
    for (int i = 0; i < r->n_stops; i++)
        free(r->stops[i]);
    free(r->stops);
    free(r->jobs);
    free(r->prompt_text);
    rd_jw_free(&r->chunk);
    free(r);
}

/* The loop collects held stream tokens on its own timer (rd_queue_poll)
 * while some stream is decoding: from a stream's first token, which the
 * engine sends at once, to its end.  A stream still queued or prefilling
 * has nothing held, so it keeps no timer ticking. */
static void stream_set_decoding(rd_app *app, rd_req *r, int on)
{
    if (r->decoding == on)
        return;
    r->decoding = on;
    app->streams_decoding += on ? 1 : -1;
    if (app->streams_decoding == (on ? 1 : 0))
        rd_queue_poll(app->queue, on);
}

static void stream_list_remove(rd_app *app, rd_req *r)
{
    if (r->prev_stream)
        r->prev_stream->next_stream = r->next_stream;
    else if (app->streams == r)
        app->streams = r->next_stream;
    if (r->next_stream)
        r->next_stream->prev_stream = r->prev_stream;
    r->next_stream = r->prev_stream = NULL;
    stream_set_decoding(app, r, 0);
}

/* Parses the request into r->jobs; returns 0 or sends the error itself. */
static int build_jobs(rd_app *app, rd_req *r, const cJSON *root, parse_err *e)
{
    rd_job tmpl;
    memset(&tmpl, 0, sizeof tmpl);
    int n, stream = 0, echo = 0, best_of;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (check_fields(root, r->chat ? chat_fields : completion_fields, e) ||
        get_int(root, "n", 1, 1, app->opt.max_n, &n, e) ||
        get_bool(root, "stream", 0, &stream, e) ||
        (!r->chat && get_bool(root, "echo", 0, &echo, e)) ||
        (!r->chat && get_int(root, "best_of", 1, 1, 1, &best_of, e)) ||
        parse_sampling(app, root, &tmpl, r->chat, e) || parse_stops(r, root, e))
        goto fail;
    if (model && !cJSON_IsNull(model) && !cJSON_IsString(model)) {
        perr(e, "model", "'model' must be a string");
        goto fail;
    }
    if (cJSON_IsString(model) && strcmp(model->valuestring, app->opt.model_name)) {
        free(tmpl.bias);
        perr(e, "model", "model '%.100s' not found; this server serves '%s'", model->valuestring,
             app->opt.model_name);
        return 404;
    }
    const cJSON *user = cJSON_GetObjectItemCaseSensitive(root, "user");
    if (user && !cJSON_IsNull(user) && !cJSON_IsString(user)) {
        perr(e, "user", "'user' must be a string");
        goto fail;
    }
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (so && !cJSON_IsNull(so)) {
        if (!stream) {
            perr(e, "stream_options", "'stream_options' is only allowed with \"stream\": true");
            goto fail;
        }
        if (!cJSON_IsObject(so)) {
            perr(e, "stream_options", "'stream_options' must be an object");
            goto fail;
        }
        if (get_bool(so, "include_usage", 0, &r->include_usage, e) ||
            get_bool(so, "continuous_usage_stats", 0, &r->continuous_usage, e))
            goto fail;
    }
    if (echo && tmpl.want_logprobs) {
        perr(e, "echo", "'echo' together with 'logprobs' is not supported");
        goto fail;
    }
    r->stream = stream;
    r->echo = echo;
    /* prompts */
    cJSON *single = NULL;
    const cJSON *prompts;
    char *chat_text = NULL;
    if (r->chat) {
        if (!(chat_text = chat_prompt(app, root, e)))
            goto fail;
        single = cJSON_CreateString(chat_text);
        free(chat_text);
        prompts = single;
    } else {
        prompts = cJSON_GetObjectItemCaseSensitive(root, "prompt");
        if (!prompts || cJSON_IsNull(prompts)) {
            perr(e, "prompt", "'prompt' is required");
            goto fail;
        }
    }
    int multi = cJSON_IsArray(prompts) && cJSON_GetArraySize(prompts) > 0 &&
                (cJSON_IsString(cJSON_GetArrayItem(prompts, 0)) ||
                 cJSON_IsArray(cJSON_GetArrayItem(prompts, 0)));
    int np = multi ? cJSON_GetArraySize(prompts) : 1;
    if (np > 64 || np * n > app->opt.max_n * 4) {
        cJSON_Delete(single);
        perr(e, "prompt", "too many prompts");
        goto fail;
    }
    r->jobs = calloc((size_t)np, sizeof *r->jobs);
    r->prompt_text = calloc((size_t)np, sizeof *r->prompt_text);
    if (!r->jobs || !r->prompt_text) {
        cJSON_Delete(single);
        perr(e, NULL, "out of memory");
        goto fail;
    }
    r->n_jobs = np;
    tmpl.news = r->n_stops > 0 ? RD_NEWS_EACH : r->stream ? RD_NEWS_STREAM : RD_NEWS_ENDS;
    for (int i = 0; i < np; i++) {
        int32_t *ids = NULL;
        int n_ids = 0;
        const cJSON *p = multi ? cJSON_GetArrayItem(prompts, i) : prompts;
        if (prompt_tokens(app, p, &ids, &n_ids, &r->prompt_text[i], e) != 0)
            break;
        if (n_ids == 0 && app->cfg->bos_token_id >= 0) /* an empty prompt starts from BOS */
            ids[n_ids++] = app->cfg->bos_token_id;
        if (n_ids == 0 || n_ids > app->opt.max_prompt_tokens) {
            free(ids);
            perr(e, "prompt", n_ids ? "the prompt has more than %d tokens" : "the prompt is empty",
                 app->opt.max_prompt_tokens);
            break;
        }
        if (!(r->jobs[i] = make_job(app, &tmpl, n, ids, n_ids, e))) {
            free(ids);
            break;
        }
    }
    cJSON_Delete(single);
    free(tmpl.bias);
    for (int i = 0; i < np; i++)
        if (!r->jobs[i])
            return 400;
    return 0;
fail:
    free(tmpl.bias);
    return 400;
}

/* ------------------------------------------------------------- output */

static void json_logprobs(rd_app *app, cJSON *choice, const rd_choice *c, int from, int to,
                          size_t text_offset0, int want, int n_top)
{
    if (!want) {
        cJSON_AddNullToObject(choice, "logprobs");
        return;
    }
    cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs");
    cJSON *toks = cJSON_AddArrayToObject(lp, "tokens"),
          *tlp = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *top = cJSON_AddArrayToObject(lp, "top_logprobs"),
          *off = cJSON_AddArrayToObject(lp, "text_offset");
    size_t offset = text_offset0;
    for (int i = from; i < to; i++) {
        char *piece = NULL;
        size_t len = 0;
        rn_tokenizer_decode(app->tok, &c->mtok[i], 1, 0, &piece, &len);
        cJSON_AddItemToArray(toks, cJSON_CreateString(piece ? piece : ""));
        cJSON_AddItemToArray(tlp, cJSON_CreateNumber(c->mres[i].logprob));
        cJSON *alt = cJSON_CreateObject();
        for (int k = 0; k < c->mres[i].n_top && k < n_top; k++) {
            char *ap = NULL;
            size_t al;
            rn_tokenizer_decode(app->tok, &c->mres[i].top[k].token, 1, 0, &ap, &al);
            if (ap && !cJSON_GetObjectItemCaseSensitive(alt, ap))
                cJSON_AddNumberToObject(alt, ap, c->mres[i].top[k].logprob);
            free(ap);
        }
        cJSON_AddItemToArray(top, alt);
        cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
        offset += len;
        free(piece);
    }
}

/* One token as the chat API reports it: text, logprob, UTF-8 bytes. */
static cJSON *chat_token(rd_app *app, int32_t id, float lp)
{
    char *piece = NULL;
    size_t len = 0;
    cJSON *o = cJSON_CreateObject(), *bytes = cJSON_CreateArray();
    rn_tokenizer_decode(app->tok, &id, 1, 0, &piece, &len);
    cJSON_AddStringToObject(o, "token", piece ? piece : "");
    cJSON_AddNumberToObject(o, "logprob", lp);
    for (size_t k = 0; piece && k < len; k++)
        cJSON_AddItemToArray(bytes, cJSON_CreateNumber((unsigned char)piece[k]));
    cJSON_AddItemToObject(o, "bytes", bytes);
    free(piece);
    return o;
}

/* Chat completions' logprobs: {"content": [{token, logprob, bytes,
 * top_logprobs: [{token, logprob, bytes}]}]} for tokens [from, to). */
static void json_chat_logprobs(rd_app *app, cJSON *choice, const rd_choice *c, int from, int to,
                               int want, int n_top)
{
    if (!want) {
        cJSON_AddNullToObject(choice, "logprobs");
        return;
    }
    cJSON *lp = cJSON_AddObjectToObject(choice, "logprobs"),
          *content = cJSON_AddArrayToObject(lp, "content");
    for (int i = from; i < to; i++) {
        cJSON *t = chat_token(app, c->mtok[i], c->mres[i].logprob), *top = cJSON_CreateArray();
        for (int k = 0; k < c->mres[i].n_top && k < n_top; k++)
            cJSON_AddItemToArray(
                top, chat_token(app, c->mres[i].top[k].token, c->mres[i].top[k].logprob));
        cJSON_AddItemToObject(t, "top_logprobs", top);
        cJSON_AddItemToArray(content, t);
    }
}

static const char *finish_name(rd_finish f)
{
    return f == RD_FIN_LENGTH ? "length" : f == RD_FIN_STOP ? "stop" : NULL;
}

/* Earliest stop-string match that ends in text[from, len) (the text before
 * `from` was searched already); returns its offset or -1. */
static long find_stop(const rd_req *r, const char *text, size_t len, size_t from)
{
    long best = -1;
    for (int s = 0; s < r->n_stops; s++) {
        const char *st = r->stops[s];
        size_t sl = strlen(st);
        for (size_t i = from >= sl ? from - sl + 1 : 0; i + sl <= len; i++)
            if (memcmp(text + i, st, sl) == 0) {
                if (best < 0 || (long)i < best)
                    best = (long)i;
                break;
            }
    }
    return best;
}

/* How many trailing bytes of text could still start a stop string. */
static size_t stop_hold(const rd_req *r, const char *text, size_t len)
{
    size_t hold = 0;
    for (int s = 0; s < r->n_stops; s++) {
        const char *st = r->stops[s];
        for (size_t k = strlen(st) - 1; k > hold;
             k--) /* the longest suffix that is a prefix of st */
            if (k <= len && memcmp(text + len - k, st, k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

static void text_append(rd_choice *c, const char *s, size_t n)
{
    if (c->text_len + n + 1 > c->text_cap) {
        size_t cap = c->text_cap ? c->text_cap : 256;
        while (cap < c->text_len + n + 1)
            cap *= 2;
        char *t = realloc(c->text, cap);
        if (!t)
            return; /* keeps what it has; the text is cut short, never overrun */
        c->text = t;
        c->text_cap = cap;
    }
    memcpy(c->text + c->text_len, s, n);
    c->text_len += n;
    c->text[c->text_len] = '\0';
}

/* Appends the text of one token; a stop string it completes ends the choice
 * there (the stop string itself is never sent).  Checking token by token
 * makes the end, and the tokens counted up to it, independent of how the
 * engine's progress was batched into notifications. */
static void append_token_text(rd_req *r, rd_choice *c, const char *s, size_t n)
{
    size_t from = c->text_len;
    text_append(c, s, n);
    long at = r->n_stops ? find_stop(r, c->text, c->text_len, from) : -1;
    if (at >= 0) {
        c->text_len = (size_t)at;
        c->stopped = 1;
        atomic_store(&c->stop_req, 1);
    }
}

/* Moves new tokens of choice c into its text; returns the number of bytes
 * now safe to send (not part of a possible stop string).  Queue lock held. */
static size_t advance_choice(rd_req *r, rd_job *j, rd_choice *c, int *finished)
{
    while (!c->stopped && c->n_seen < c->m_n) {
        const char *s;
        size_t n;
        int32_t t = c->mtok[c->n_seen++];
        if (!(t == j->eos && !j->ignore_eos) && rn_detok_push(c->detok, t, &s, &n) == RN_OK)
            append_token_text(r, c, s, n);
    }
    if (!c->stopped && c->m_finish != RD_FIN_NONE && c->n_seen == c->m_n) {
        const char *s;
        size_t n;
        if (rn_detok_finish(c->detok, &s, &n) == RN_OK)
            append_token_text(r, c, s, n);
    }
    *finished = c->stopped || (c->m_finish != RD_FIN_NONE && c->n_seen == c->m_n);
    if (*finished || !r->n_stops)
        return c->text_len;
    return c->text_len - stop_hold(r, c->text, c->text_len);
}

/* --------------------------------------------------------------- SSE */

/* Prompt, completion and cached prompt tokens of r so far. */
static void usage_counts(const rd_req *r, int *pt, int *ct, int *cached)
{
    *pt = *ct = *cached = 0;
    for (int i = 0; i < r->n_jobs; i++) {
        *pt += r->jobs[i]->n_prompt;
        *cached += r->jobs[i]->cached;
        for (int k = 0; k < r->jobs[i]->n; k++) {
            const rd_choice *c = &r->jobs[i]->ch[k];
            /* tokens generated after a stop string are not returned */
            *ct += c->stopped ? c->n_seen : c->m_n;
        }
    }
}

/* Stream chunks are written as text (rd_jw), not built as cJSON trees: one
 * goes out per token and stream, and the tree, its allocations and cJSON's
 * number printing (printf, then scanf to check) were most of the loop
 * thread's own work after the sends. */

/* The usage object of r, for stream chunks and the full response alike;
 * prompt_tokens_details.cached_tokens is OpenAI's field for prompt tokens
 * served from a cache (the prefix cache). */
static void usage_write(rd_req *r, rd_jw *w)
{
    int pt, ct, cached;
    usage_counts(r, &pt, &ct, &cached);
    rd_jw_lit(w, "{\"prompt_tokens\":");
    rd_jw_int(w, pt);
    rd_jw_lit(w, ",\"completion_tokens\":");
    rd_jw_int(w, ct);
    rd_jw_lit(w, ",\"total_tokens\":");
    rd_jw_int(w, pt + ct);
    rd_jw_lit(w, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    rd_jw_int(w, cached);
    rd_jw_lit(w, "}}");
}

/* `data: {"id":..,"object":..,"created":..,"model":..` of every chunk. */
static void chunk_open(rd_req *r, rd_jw *w)
{
    const char *model = r->app->opt.model_name;
    rd_jw_reset(w);
    rd_jw_lit(w, "data: {\"id\":");
    rd_jw_str(w, r->id, strlen(r->id));
    rd_jw_lit(w, r->chat ? ",\"object\":\"chat.completion.chunk\",\"created\":"
                         : ",\"object\":\"text_completion\",\"created\":");
    rd_jw_int(w, r->created);
    rd_jw_lit(w, ",\"model\":");
    rd_jw_str(w, model, strlen(model));
}

/* Closes the chunk and hands it to the connection; a chunk that ran out of
 * memory is dropped, as a failed cJSON print was. */
static void chunk_send(rd_req *r, rd_jw *w)
{
    rd_jw_lit(w, "}\n\n");
    if (w->oom)
        return;
    rd_http_stream_push(r->conn, w->p, w->len, 0);
    r->chunks_sent++;
}

/* `,"logprobs":...` of a choice: null, or the cJSON the full response uses. */
static void logprobs_write(rd_req *r, rd_jw *w, rd_job *j, rd_choice *c, int from_tok, int to_tok)
{
    if (!j->want_logprobs) {
        rd_jw_lit(w, ",\"logprobs\":null");
        return;
    }
    cJSON *holder = cJSON_CreateObject();
    if (!holder) {
        w->oom = 1;
        return;
    }
    if (r->chat)
        json_chat_logprobs(r->app, holder, c, from_tok, to_tok, 1, j->n_logprobs);
    else
        json_logprobs(r->app, holder, c, from_tok, to_tok, c->sent_bytes, 1, j->n_logprobs);
    rd_jw_lit(w, ",\"logprobs\":");
    rd_jw_cjson(w, cJSON_GetObjectItemCaseSensitive(holder, "logprobs"));
    cJSON_Delete(holder);
}

static void stream_piece(rd_req *r, int index, const char *text, size_t len, const char *finish,
                         rd_job *j, rd_choice *c, int from_tok, int to_tok)
{
    rd_jw *w = &r->chunk;
    chunk_open(r, w);
    rd_jw_lit(w, ",\"choices\":[{\"index\":");
    rd_jw_int(w, index);
    if (r->chat) {
        int role = !(r->role_sent & (1u << (index & 31)));
        rd_jw_lit(w, ",\"delta\":{");
        if (role)
            rd_jw_lit(w, "\"role\":\"assistant\"");
        if (len || !finish) {
            rd_jw_lit(w, role ? ",\"content\":" : "\"content\":");
            rd_jw_str(w, text, len);
        }
        rd_jw_lit(w, "}");
        r->role_sent |= 1u << (index & 31);
    } else {
        rd_jw_lit(w, ",\"text\":");
        rd_jw_str(w, text, len);
    }
    logprobs_write(r, w, j, c, from_tok, to_tok);
    rd_jw_lit(w, ",\"finish_reason\":");
    if (finish) {
        rd_jw_str(w, finish, strlen(finish));
    } else {
        rd_jw_lit(w, "null");
    }
    rd_jw_lit(w, "}]");
    if (r->continuous_usage) { /* vLLM's extension: the counts so far */
        rd_jw_lit(w, ",\"usage\":");
        usage_write(r, w);
    } else if (r->include_usage) {
        rd_jw_lit(w, ",\"usage\":null");
    }
    chunk_send(r, w);
}

static int all_finished(rd_req *r)
{
    for (int i = 0; i < r->n_jobs; i++)
        for (int k = 0; k < r->jobs[i]->n; k++)
            if (!r->jobs[i]->ch[k].finish_sent)
                return 0;
    return 1;
}

/* The stream's last event; the connection ends after it. */
static void stream_done(rd_req *r)
{
    rd_http_stream_push(r->conn, "data: [DONE]\n\n", 14, 1);
    r->done_sent = 1;
}

static void stream_end(rd_req *r)
{
    if (r->include_usage) {
        chunk_open(r, &r->chunk);
        rd_jw_lit(&r->chunk, ",\"choices\":[],\"usage\":");
        usage_write(r, &r->chunk);
        chunk_send(r, &r->chunk);
    }
    stream_done(r);
}

static void stream_error(rd_req *r, unsigned status, const char *msg)
{
    rd_jw *w = &r->chunk;
    rd_jw_reset(w);
    rd_jw_lit(w, "data: {\"error\":{\"message\":");
    rd_jw_str(w, msg, strlen(msg));
    rd_jw_lit(w, ",\"type\":");
    const char *type = rd_json_fail_type(status);
    rd_jw_str(w, type, strlen(type));
    rd_jw_lit(w, ",\"param\":null,\"code\":null}");
    chunk_send(r, w);
    stream_done(r);
}

/* Queue mutex held: copies every choice's progress into its mirror and the
 * first failure into r, so the rest of the work (detokenizing, JSON, SSE)
 * runs without the mutex the engine thread takes for every token. */
static void sync_req_locked(rd_req *r)
{
    for (int i = 0; i < r->n_jobs; i++) {
        rd_job *j = r->jobs[i];
        for (int k = 0; k < j->n; k++)
            if (rd_choice_sync_locked(&j->ch[k]) != 0 && !r->err_status) {
                r->err_status = 500;
                snprintf(r->err_msg, sizeof r->err_msg, "out of memory");
            }
        if (j->error_status && j->error_status != 499 && !r->err_status) {
            r->err_status = j->error_status;
            snprintf(r->err_msg, sizeof r->err_msg, "%s", j->error_msg);
        }
    }
}

static void sync_req(rd_req *r)
{
    rd_queue_lock(r->app->queue);
    sync_req_locked(r);
    rd_queue_unlock(r->app->queue);
}

/* Streams whatever became ready for all choices of r (after sync_req). */
static void stream_progress(rd_req *r)
{
    if (r->err_status && !r->done_sent) {
        stream_error(r, (unsigned)r->err_status, r->err_msg);
        return;
    }
    for (int ji = 0; ji < r->n_jobs && !r->done_sent; ji++) {
        rd_job *j = r->jobs[ji];
        for (int k = 0; k < j->n; k++) {
            rd_choice *c = &j->ch[k];
            if (c->finish_sent)
                continue;
            int fin;
            size_t safe = advance_choice(r, j, c, &fin);
            int index = ji * j->n + k;
            if (safe > c->sent_bytes || fin) {
                const char *fn = fin ? (c->stopped ? "stop" : finish_name(c->m_finish)) : NULL;
                /* the logprobs of every token since the last chunk, including
                 * tokens whose text is still held back */
                stream_piece(r, index, c->text + c->sent_bytes, safe - c->sent_bytes, fn, j, c,
                             c->lp_sent, c->n_seen);
                c->lp_sent = c->n_seen;
                c->sent_bytes = safe;
                c->finish_sent = fin;
            }
        }
    }
    /* on a session, the end waits for the job itself: its last token is fed
     * into the state one step after it was sampled, and the request must not
     * be cancelled before that */
    if (!r->done_sent && all_finished(r) && (!r->session || r->jobs[0]->phase == RD_PHASE_DONE))
        stream_end(r);
}

/* ------------------------------------------------------- full response */

static int reply_full(rd_req *r)
{
    rd_app *app = r->app;
    sync_req(r);
    if (r->err_status)
        return rd_json_error(r->conn, (unsigned)r->err_status,
                             rd_json_fail_type((unsigned)r->err_status), NULL, NULL, "%s",
                             r->err_msg);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", r->id);
    cJSON_AddStringToObject(o, "object", r->chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)r->created);
    cJSON_AddStringToObject(o, "model", app->opt.model_name);
    cJSON *arr = cJSON_AddArrayToObject(o, "choices");
    for (int ji = 0; ji < r->n_jobs; ji++) {
        rd_job *j = r->jobs[ji];
        for (int k = 0; k < j->n; k++) {
            rd_choice *c = &j->ch[k];
            int fin;
            advance_choice(r, j, c, &fin);
            cJSON *ch = cJSON_CreateObject();
            cJSON_AddNumberToObject(ch, "index", ji * j->n + k);
            size_t plen = r->echo && r->prompt_text[ji] ? strlen(r->prompt_text[ji]) : 0;
            char *t = malloc(plen + c->text_len + 1);
            memcpy(t, plen ? r->prompt_text[ji] : "", plen);
            memcpy(t + plen, c->text ? c->text : "", c->text_len);
            t[plen + c->text_len] = '\0';
            if (r->chat) {
                cJSON *m = cJSON_AddObjectToObject(ch, "message");
                cJSON_AddStringToObject(m, "role", "assistant");
                cJSON_AddStringToObject(m, "content", t);
                json_chat_logprobs(app, ch, c, 0, c->n_seen, j->want_logprobs, j->n_logprobs);
            } else {
                cJSON_AddStringToObject(ch, "text", t);
                json_logprobs(app, ch, c, 0, c->n_seen, 0, j->want_logprobs, j->n_logprobs);
            }
            free(t);
            cJSON_AddStringToObject(ch, "finish_reason",
                                    c->stopped                 ? "stop"
                                    : finish_name(c->m_finish) ? finish_name(c->m_finish)
                                                               : "stop");
            cJSON_AddItemToArray(arr, ch);
        }
    }
    rd_jw *w = &r->chunk; /* unused by a full response otherwise */
    rd_jw_reset(w);
    usage_write(r, w);
    rd_jw_raw(w, "", 1); /* its NUL: cJSON takes a C string */
    if (!w->oom)
        cJSON_AddRawToObject(o, "usage", w->p);
    return rd_json_reply(r->conn, 200, o);
}

static int jobs_done(rd_req *r)
{
    int done = 1;
    rd_queue_lock(r->app->queue);
    for (int i = 0; i < r->n_jobs; i++)
        done &= r->jobs[i]->phase == RD_PHASE_DONE;
    rd_queue_unlock(r->app->queue);
    return done;
}

/* ------------------------------------------------------------ entry */

int rd_api_completion_check(rd_app *app, const char *body, size_t len, int chat)
{
    parse_err e = {0};
    cJSON *root = rd_json_parse_object(body, len, e.msg, sizeof e.msg);
    if (!root)
        return 400;
    rd_req *r = calloc(1, sizeof *r);
    if (!r) {
        cJSON_Delete(root);
        return 500;
    }
    r->app = app;
    r->kind = RD_REQ_COMPLETION;
    r->chat = chat;
    int status = build_jobs(app, r, root, &e);
    cJSON_Delete(root);
    req_free(r);
    return status;
}

int rd_api_completions(rd_app *app, rd_conn *conn, int chat, rd_session *sess)
{
    size_t len;
    const char *body = rd_conn_body(conn, &len);
    parse_err e = {0};
    cJSON *root = rd_json_parse_object(body, len, e.msg, sizeof e.msg);
    if (!root)
        return rd_json_error(conn, 400, "invalid_request_error", NULL, NULL, "%s", e.msg);
    rd_req *r = calloc(1, sizeof *r);
    if (!r) {
        cJSON_Delete(root);
        return rd_json_error(conn, 500, "server_error", NULL, NULL, "out of memory");
    }
    r->app = app;
    r->conn = conn;
    r->kind = RD_REQ_COMPLETION;
    r->chat = chat;
    r->created = (int64_t)time(NULL);
    unsigned char rnd[12];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        memset(rnd, 0, sizeof rnd);
    int o = snprintf(r->id, sizeof r->id, chat ? "chatcmpl-" : "cmpl-");
    for (int i = 0; i < 12; i++)
        o += snprintf(r->id + o, sizeof r->id - (size_t)o, "%02x", rnd[i]);
    int status = build_jobs(app, r, root, &e);
    const cJSON *sj = cJSON_GetObjectItemCaseSensitive(root, "session");
    if (status == 0 && sj && !cJSON_IsNull(sj)) {
        if (!cJSON_IsString(sj))
            status = 400,
            snprintf(e.msg, sizeof e.msg, "'session' must be a session id (a string)"),
            e.param = "session";
        else if (!(sess = rd_session_find_for(app, conn, sj->valuestring)))
            status = 404, snprintf(e.msg, sizeof e.msg, "session not found"), e.param = "session";
        else if (r->n_jobs != 1 || r->jobs[0]->n != 1)
            status = 400,
            snprintf(e.msg, sizeof e.msg, "a session continues one prompt with n = 1"),
            e.param = "session";
        else if (rd_session_busy(sess))
            status = 409, snprintf(e.msg, sizeof e.msg, "the session is in use by another request"),
            e.param = "session";
    }
    cJSON_Delete(root);
    if (status != 0) {
        req_free(r);
        return rd_json_error(conn, (unsigned)status,
                             status == 404 ? "not_found_error" : "invalid_request_error", e.param,
                             status == 404 ? "not_found" : NULL, "%s", e.msg);
    }
    int most = 0;
    for (int i = 0; i < r->n_jobs; i++)
        most = r->jobs[i]->n > most ? r->jobs[i]->n : most;
    if (most > rn_engine_n_slots(app->engine)) {
        req_free(r);
        return rd_json_error(conn, 400, "invalid_request_error", "n", NULL,
                             "n = %d needs more state slots than this server has (%d)", most,
                             rn_engine_n_slots(app->engine));
    }
    int need = 0; /* free slots the request takes (its session's is its own) */
    for (int i = 0; i < r->n_jobs; i++)
        need += r->jobs[i]->n - (sess && i == 0 ? 1 : 0);
    if (rd_tier_ready(app, conn, sess, need) != RD_TIER_GO) {
        req_free(r); /* parked: handled again from the start; or answered */
        return 0;
    }
    if (rd_sched_try_enqueue(app->sched, r->n_jobs) != 0) {
        req_free(r);
        return rd_json_error(conn, 429, "rate_limit_error", NULL, "server_is_overloaded",
                             "all state slots are busy and the wait queue is full; retry later");
    }
    if (sess) {
        r->session = sess;
        r->jobs[0]->session_slot = rd_session_slot(sess);
        r->jobs[0]->session_fresh = rd_session_take_fresh(sess);
        rd_session_set_busy(sess, 1);
    }
    rd_conn_set_data(conn, r);
    for (int i = 0; i < r->n_jobs; i++) {
        r->jobs[i]->http = r;
        rd_job_ref(r->jobs[i]);
        rd_queue_submit(app->queue, r->jobs[i]);
    }
    if (r->stream) {
        if (rd_http_stream(conn) != 0)
            return -1;
        if (r->echo)
            for (int i = 0; i < r->n_jobs; i++)
                for (int k = 0; k < r->jobs[i]->n; k++)
                    stream_piece(r, i * r->jobs[i]->n + k, r->prompt_text[i],
                                 strlen(r->prompt_text[i] ? r->prompt_text[i] : ""), NULL,
                                 r->jobs[i], &r->jobs[i]->ch[k], 0, 0);
        r->next_stream = app->streams;
        if (app->streams)
            app->streams->prev_stream = r;
        app->streams = r;
        return 0;
    }
    rd_http_wait(conn);
    return 0;
}

/* A non-streaming request with stop strings: decodes the new tokens of the
 * choices still running, so a stop string ends its choice in the engine as
 * soon as it appears rather than at max_tokens.  Finished choices are left to
 * reply_full (which flushes their detokenizer). */
static void scan_stops(rd_req *r, rd_job *j)
{
    sync_req(r);
    for (int k = 0; k < j->n; k++) {
        rd_choice *c = &j->ch[k];
        int fin;
        if (!c->stopped && c->m_finish == RD_FIN_NONE)
            advance_choice(r, j, c, &fin);
    }
}

/* The loop's view of a job that has news. */
/* Time to first token and inter-token gaps, as tokens reach the loop. */
static void note_tokens(rd_req *r)
{
    long n = 0;
    rd_queue_lock(r->app->queue);
    for (int i = 0; i < r->n_jobs; i++)
        for (int k = 0; k < r->jobs[i]->n; k++)
            n += r->jobs[i]->ch[k].n_tok;
    rd_queue_unlock(r->app->queue);
    if (n <= r->tok_seen)
        return;
    double now = rd_conn_age(r->conn);
    rd_conn_stats *st = rd_conn_stats_of(r->conn);
    int first = r->tok_seen == 0;
    if (first) {
        st->ttft_s = now;
        rd_metrics_ttft(now);
    }
    rd_metrics_tokens_out((int)(n - r->tok_seen), now - r->tok_last, first);
    st->tokens_out = (int)n;
    r->tok_seen = n;
    r->tok_last = now;
}

void rd_api_job_ready(rd_app *app, rd_job *j)
{
    rd_req *r = j->http;
    if (!r)
        return;
    note_tokens(r);
    if (r->stream) {
        sync_req(r);
        stream_progress(r);
        if (r->done_sent)
            stream_list_remove(app, r);
        else if (r->tok_seen > 0)
            stream_set_decoding(app, r, 1);
        rd_http_resume_later(r->conn);
    } else {
        if (r->n_stops)
            scan_stops(r, j);
        if (jobs_done(r))
            rd_http_resume_later(r->conn);
    }
}

/* A parked non-streaming request may answer now. */
int rd_api_completion_resume(rd_app *app, rd_conn *conn)
{
    rd_req *r = rd_conn_get_data(conn);
    (void)app;
    if (!jobs_done(r)) {
        rd_http_wait(conn);
        return 0;
    }
    return reply_full(r);
}

/* The request ended (answered, or the client left): cancel the rest. */
void rd_api_completion_done(rd_app *app, rd_conn *conn)
{
    rd_req *r = rd_conn_get_data(conn);
    if (!r)
        return;
    int64_t advanced = 0, prompt = 0;
    int engine_done = 1;
    for (int i = 0; i < r->n_jobs; i++)
        prompt += r->jobs[i]->n_prompt;
    rd_conn_stats_of(conn)->tokens_in = (int)prompt;
    rd_metrics_tokens_in((int)prompt);
    for (int i = 0; i < r->n_jobs; i++) {
        rd_job *j = r->jobs[i];
        atomic_store(&j->cancelled, 1);
        j->http = NULL;
        rd_queue_lock(app->queue);
        advanced += j->prefilled + j->ch[0].fed;
        engine_done &= j->phase == RD_PHASE_DONE;
        if (r->session && j->phase != RD_PHASE_DONE)
            j->release_session = r->session; /* settled by rd_api_release_session */
        rd_queue_unlock(app->queue);
    }
    rd_queue_poke(app->queue);
    if (r->session && engine_done) {
        rd_session_advance(r->session, advanced);
        rd_session_set_busy(r->session, 0);
        rd_tier_wake(app);
    }
    stream_list_remove(app, r);
    rd_conn_set_data(conn, NULL);
    req_free(r);
}

/* Resumes without running MHD inside the loop (running it could complete a
 * connection and free a request this loop is about to visit), then runs it
 * once. */
void rd_api_keepalive(rd_app *app)
{
    int any = 0;
    for (rd_req *r = app->streams; r; r = r->next_stream) {
        if (r->chunks_sent == 0 && !r->done_sent) {
            rd_http_stream_push(r->conn, ": keep-alive\n\n", 14, 0);
            rd_http_resume_later(r->conn);
            any = 1;
        }
    }
    if (any)
        rd_http_run(app->http);
}
