/* job.c -- see job.h. */
#include <stdlib.h>
#include <string.h>

#include "job.h"

rd_job *rd_job_new(int n)
{
    rd_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->ch = calloc((size_t)n, sizeof *j->ch);
    if (!j->ch) {
        free(j);
        return NULL;
    }
    j->n = n;
    j->eos = -1;
    j->session_slot = -1;
    j->fork_src = -1;
    for (int i = 0; i < n; i++)
        j->ch[i].slot = -1;
    atomic_init(&j->refs, 1);
    atomic_init(&j->cancelled, 0);
    return j;
}

void rd_job_ref(rd_job *j)
{
    atomic_fetch_add(&j->refs, 1);
}

void rd_job_unref(rd_job *j)
{
    if (!j || atomic_fetch_sub(&j->refs, 1) != 1)
        return;
    for (int i = 0; i < j->n; i++) {
        rd_choice *c = &j->ch[i];
        free(c->tok);
        free(c->res);
        free(c->mtok);
        free(c->mres);
        free(c->text);
        rn_sampler_free(c->sampler);
        rn_detok_free(c->detok);
    }
    free(j->ch);
    free(j->prompt);
    free(j->bias);
    free(j->state);
    free(j);
}

int rd_choice_push(rd_choice *c, const rn_sample_result *r)
{
    if (c->n_tok == c->cap_tok) {
        int cap = c->cap_tok ? 2 * c->cap_tok : 32;
        int32_t *t = realloc(c->tok, sizeof *t * (size_t)cap);
        if (!t)
            return -1;
        c->tok = t;
        rn_sample_result *rs = realloc(c->res, sizeof *rs * (size_t)cap);
        if (!rs)
            return -1;
        c->res = rs;
        c->cap_tok = cap;
    }
    c->tok[c->n_tok] = r->token;
    c->res[c->n_tok] = *r;
    c->n_tok++;
    return 0;
}

int rd_choice_sync_locked(rd_choice *c)
{
    if (c->n_tok > c->m_cap) {
        int cap = c->m_cap ? c->m_cap : 32;
        while (cap < c->n_tok)
            cap *= 2;
        int32_t *t = realloc(c->mtok, sizeof *t * (size_t)cap);
        if (!t)
            return -1;
        c->mtok = t;
        rn_sample_result *rs = realloc(c->mres, sizeof *rs * (size_t)cap);
        if (!rs)
            return -1;
        c->mres = rs;
        c->m_cap = cap;
    }
    for (int i = c->m_n; i < c->n_tok; i++) {
        c->mtok[i] = c->tok[i];
        c->mres[i] = c->res[i];
    }
    c->m_n = c->n_tok;
    c->m_finish = c->finish;
    return 0;
}
