/*
 * config.c -- config.json (FLA RetNetConfig names + retnetd variant fields)
 * to a fully resolved rn_config, and back.
 *
 * Every field is checked: type, allowed values, ranges.  Unknown fields are
 * errors (a typo must not silently select a default architecture), except the
 * training-only fields FLA writes, listed in ignored_fields.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model.h"

#define MAX_DIM (1 << 16) /* hidden size, head dims, FFN width / 4 */
#define MAX_LAYERS 1024
#define MAX_HEADS 1024
#define MAX_VOCAB (1 << 22)

static const char *const ignored_fields[] = {"attn_mode",
                                             "fuse_norm",
                                             "fuse_swiglu",
                                             "fuse_cross_entropy",
                                             "fuse_linear_cross_entropy",
                                             "use_cache",
                                             "initializer_range",
                                             "max_position_embeddings",
                                             "architectures",
                                             "torch_dtype",
                                             "dtype",
                                             "transformers_version",
                                             "conv_size",
                                             "use_l2warp",
                                             "_name_or_path",
                                             "auto_map",
                                             NULL};

static const char *const known_fields[] = {"model_type",
                                           "vocab_size",
                                           "hidden_size",
                                           "num_hidden_layers",
                                           "num_heads",
                                           "expand_k",
                                           "expand_v",
                                           "hidden_ratio",
                                           "intermediate_size",
                                           "hidden_act",
                                           "norm_eps",
                                           "elementwise_affine",
                                           "tie_word_embeddings",
                                           "bos_token_id",
                                           "eos_token_id",
                                           "pad_token_id",
                                           "num_kv_heads",
                                           "feature_map",
                                           "use_short_conv",
                                           "use_output_gate",
                                           "attn",
                                           "norm_type",
                                           "ffn_type",
                                           "gate_act",
                                           "attention_bias",
                                           "mlp_bias",
                                           "lm_head_bias",
                                           "position_encoding",
                                           "rope_layout",
                                           "rope_freq",
                                           "rope_theta",
                                           "decay",
                                           "qk_scale",
                                           "retention_norm",
                                           "group_norm",
                                           "group_norm_eps",
                                           "embed_scale",
                                           "embed_norm",
                                           "final_norm",
                                           "norm_position",
                                           NULL};

static int in_list(const char *s, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(s, list[i]) == 0)
            return 1;
    return 0;
}

typedef struct {
    const cJSON *root;
    const char *path;
    rn_error *err;
} cfg_reader;

static const cJSON *field(cfg_reader *r, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, name);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

static int get_int(cfg_reader *r, const char *name, int def, int lo, int hi, int *out)
{
    const cJSON *v = field(r, name);
    if (!v) {
        *out = def;
        return RN_OK;
    }
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble)
        return rn_error_set(r->err, RN_EFORMAT, "%s: '%s' must be an integer", r->path, name);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return rn_error_set(r->err, RN_EFORMAT, "%s: '%s' = %.17g is outside [%d, %d]", r->path,
                            name, v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return RN_OK;
}

static int get_num(cfg_reader *r, const char *name, double def, double lo, double hi, double *out)
{
    const cJSON *v = field(r, name);
    if (!v) {
        *out = def;
        return RN_OK;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return rn_error_set(r->err, RN_EFORMAT, "%s: '%s' must be a number in [%g, %g]", r->path,
                            name, lo, hi);
    *out = v->valuedouble;
    return RN_OK;
}

static int get_bool(cfg_reader *r, const char *name, int def, int *out)
{
    const cJSON *v = field(r, name);
    if (!v) {
        *out = def;
        return RN_OK;
    }
    if (!cJSON_IsBool(v))
        return rn_error_set(r->err, RN_EFORMAT, "%s: '%s' must be true or false", r->path, name);
    *out = cJSON_IsTrue(v);
    return RN_OK;
}

/* names[i] maps to value i; aliases may repeat a value via values[]. */
static int get_enum(cfg_reader *r, const char *name, const char *const *names, const int *values,
                    int def, int *out)
{
    const cJSON *v = field(r, name);
    if (!v) {
        *out = def;
        return RN_OK;
    }
    if (cJSON_IsString(v))
        for (int i = 0; names[i]; i++)
            if (strcmp(v->valuestring, names[i]) == 0) {
                *out = values[i];
                return RN_OK;
            }
    char allowed[256] = "";
    for (int i = 0; names[i]; i++) {
        strncat(allowed, i ? ", " : "", sizeof allowed - strlen(allowed) - 1);
        strncat(allowed, names[i], sizeof allowed - strlen(allowed) - 1);
    }
    return rn_error_set(r->err, RN_EFORMAT, "%s: '%s' must be one of: %s", r->path, name, allowed);
}

static int check_unknown_fields(cfg_reader *r)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, r->root)
    {
        if (!in_list(it->string, known_fields) && !in_list(it->string, ignored_fields))
            return rn_error_set(r->err, RN_EFORMAT, "%s: unknown field '%s'", r->path, it->string);
    }
    return RN_OK;
}

/* FLA features that plain RetNet does not use: accept only their neutral value. */
static int check_unsupported(cfg_reader *r, const rn_config *c)
{
    const cJSON *v;
    if ((v = field(r, "model_type")) && (!cJSON_IsString(v) || strcmp(v->valuestring, "retnet")))
        return rn_error_set(r->err, RN_EUNSUPPORTED, "%s: model_type must be \"retnet\"", r->path);
    if ((v = field(r, "num_kv_heads")) &&
        (!cJSON_IsNumber(v) || v->valuedouble != (double)c->n_heads))
        return rn_error_set(r->err, RN_EUNSUPPORTED,
                            "%s: num_kv_heads (grouped retention) is not supported", r->path);
    if (field(r, "feature_map"))
        return rn_error_set(r->err, RN_EUNSUPPORTED, "%s: feature_map is not supported", r->path);
    if (field(r, "attn"))
        return rn_error_set(r->err, RN_EUNSUPPORTED,
                            "%s: hybrid attention layers ('attn') are not supported", r->path);
    if ((v = field(r, "use_short_conv")) && !cJSON_IsFalse(v))
        return rn_error_set(r->err, RN_EUNSUPPORTED, "%s: use_short_conv is not supported",
                            r->path);
    if ((v = field(r, "use_output_gate")) && !cJSON_IsTrue(v))
        return rn_error_set(r->err, RN_EUNSUPPORTED, "%s: use_output_gate=false is not supported",
                            r->path);
    return RN_OK;
}

static const char *const act_names[] = {"swish", "silu", "gelu", "relu", NULL};
static const int act_values[] = {RN_ACT_SWISH, RN_ACT_SWISH, RN_ACT_GELU, RN_ACT_RELU};

static int read_sizes(cfg_reader *r, rn_config *c)
{
    int rc;
    double ek, ev, ratio;
    if ((rc = get_int(r, "vocab_size", 32000, 1, MAX_VOCAB, &c->vocab_size)) ||
        (rc = get_int(r, "hidden_size", 2048, 1, MAX_DIM, &c->hidden_size)) ||
        (rc = get_int(r, "num_hidden_layers", 24, 1, MAX_LAYERS, &c->n_layers)) ||
        (rc = get_int(r, "num_heads", 8, 1, MAX_HEADS, &c->n_heads)) ||
        (rc = get_num(r, "expand_k", 1.0, 1e-3, 64.0, &ek)) ||
        (rc = get_num(r, "expand_v", 2.0, 1e-3, 64.0, &ev)) ||
        (rc = get_num(r, "hidden_ratio", 2.0, 1e-3, 64.0, &ratio)) ||
        (rc = get_int(r, "intermediate_size", 0, 1, 4 * MAX_DIM, &c->intermediate_size)))
        return rc;
    const cJSON *hr = cJSON_GetObjectItemCaseSensitive(r->root, "hidden_ratio");
    if (hr && cJSON_IsNull(hr))
        ratio = 4.0;                      /* FLA's GatedMLP: an explicit null ratio means 4 */
    if (!field(r, "intermediate_size")) { /* FLA modules/mlp.py */
        int inter = (int)(c->hidden_size * ratio * 2.0 / 3.0);
        c->intermediate_size = 256 * ((inter + 255) / 256);
        /* derived, it must obey the limit an explicit value does (else the
         * config could not be written back and read again) */
        if (c->intermediate_size > 4 * MAX_DIM)
            return rn_error_set(r->err, RN_EFORMAT,
                                "%s: intermediate size %d (hidden_size x hidden_ratio x 2/3) is "
                                "outside [1, %d]",
                                r->path, c->intermediate_size, 4 * MAX_DIM);
    }
    long key_dim = (long)(c->hidden_size * ek), value_dim = (long)(c->hidden_size * ev);
    if (key_dim <= 0 || value_dim <= 0 || key_dim % c->n_heads || value_dim % c->n_heads)
        return rn_error_set(r->err, RN_EFORMAT,
                            "%s: key dim %ld and value dim %ld must be positive multiples of "
                            "num_heads %d",
                            r->path, key_dim, value_dim, c->n_heads);
    c->head_dim_k = (int)(key_dim / c->n_heads);
    c->head_dim_v = (int)(value_dim / c->n_heads);
    if (c->head_dim_k > MAX_DIM || c->head_dim_v > MAX_DIM || key_dim > 4 * MAX_DIM ||
        value_dim > 4 * MAX_DIM)
        return rn_error_set(r->err, RN_EFORMAT, "%s: head dims %d/%d too large", r->path,
                            c->head_dim_k, c->head_dim_v);
    c->key_dim = (int)key_dim;
    c->value_dim = (int)value_dim;
    return RN_OK;
}

static int read_variants(cfg_reader *r, rn_config *c)
{
    static const char *const norm_n[] = {"rmsnorm", "layernorm", NULL};
    static const char *const gn_n[] = {"rms", "layer", NULL};
    static const int norm_v[] = {RN_NORM_RMS, RN_NORM_LAYER};
    static const char *const ffn_n[] = {"glu", "mlp", NULL};
    static const int ffn_v[] = {RN_FFN_GLU, RN_FFN_MLP};
    static const char *const pos_n[] = {"rotary", "none", NULL};
    static const int pos_v[] = {RN_POS_ROTARY, RN_POS_NONE};
    static const char *const lay_n[] = {"half", "interleaved", NULL};
    static const int lay_v[] = {RN_ROPE_HALF, RN_ROPE_INTERLEAVED};
    static const char *const freq_n[] = {"pow", "linspace", NULL};
    static const int freq_v[] = {RN_FREQ_POW, RN_FREQ_LINSPACE};
    static const char *const dec_n[] = {"pow2", "linspace", NULL};
    static const int dec_v[] = {RN_DECAY_POW2, RN_DECAY_LINSPACE};
    static const char *const qk_n[] = {"q", "k", NULL};
    static const int qk_v[] = {RN_QKSCALE_Q, RN_QKSCALE_K};
    static const char *const rn_n[] = {"none", "torchscale", NULL};
    static const int rn_v[] = {RN_RETNORM_NONE, RN_RETNORM_TORCHSCALE};
    static const char *const np_n[] = {"pre", "post", "deepnorm", NULL};
    static const int np_v[] = {RN_NORMPOS_PRE, RN_NORMPOS_POST, RN_NORMPOS_DEEPNORM};
    int rc, e[12];
    double eps, gn_eps, theta, escale;
    if ((rc = get_enum(r, "hidden_act", act_names, act_values, RN_ACT_SWISH, &e[0])) ||
        (rc = get_enum(r, "gate_act", act_names, act_values, RN_ACT_SWISH, &e[1])) ||
        (rc = get_enum(r, "norm_type", norm_n, norm_v, RN_NORM_RMS, &e[2])) ||
        (rc = get_enum(r, "ffn_type", ffn_n, ffn_v, RN_FFN_GLU, &e[3])) ||
        (rc = get_enum(r, "position_encoding", pos_n, pos_v, RN_POS_ROTARY, &e[4])) ||
        (rc = get_enum(r, "rope_layout", lay_n, lay_v, RN_ROPE_HALF, &e[5])) ||
        (rc = get_enum(r, "rope_freq", freq_n, freq_v, RN_FREQ_POW, &e[6])) ||
        (rc = get_enum(r, "decay", dec_n, dec_v, RN_DECAY_POW2, &e[7])) ||
        (rc = get_enum(r, "qk_scale", qk_n, qk_v, RN_QKSCALE_Q, &e[8])) ||
        (rc = get_enum(r, "retention_norm", rn_n, rn_v, RN_RETNORM_NONE, &e[9])) ||
        (rc = get_enum(r, "group_norm", gn_n, norm_v, RN_NORM_RMS, &e[10])) ||
        (rc = get_enum(r, "norm_position", np_n, np_v, RN_NORMPOS_PRE, &e[11])) ||
        (rc = get_num(r, "norm_eps", 1e-6, 0.0, 1.0, &eps)) ||
        (rc = get_num(r, "group_norm_eps", eps, 0.0, 1.0, &gn_eps)) ||
        (rc = get_num(r, "rope_theta", 10000.0, 1.0, 1e12, &theta)) ||
        (rc = get_num(r, "embed_scale", 1.0, 0.0, 1e6, &escale)) ||
        (rc = get_bool(r, "elementwise_affine", 1, &c->group_norm_affine)) ||
        (rc = get_bool(r, "tie_word_embeddings", 0, &c->tie_word_embeddings)) ||
        (rc = get_bool(r, "attention_bias", 0, &c->attention_bias)) ||
        (rc = get_bool(r, "mlp_bias", 0, &c->mlp_bias)) ||
        (rc = get_bool(r, "lm_head_bias", 0, &c->lm_head_bias)) ||
        (rc = get_bool(r, "embed_norm", 0, &c->embed_norm)) ||
        (rc = get_bool(r, "final_norm", 1, &c->final_norm)))
        return rc;
    c->hidden_act = (rn_act)e[0];
    c->gate_act = (rn_act)e[1];
    c->norm_kind = (rn_norm_kind)e[2];
    c->ffn_kind = (rn_ffn_kind)e[3];
    c->position = (rn_pos_kind)e[4];
    c->rope_layout = (rn_rope_layout)e[5];
    c->rope_freq = (rn_rope_freq)e[6];
    c->decay = (rn_decay_kind)e[7];
    c->qk_scale = (rn_qk_scale)e[8];
    c->retention_norm = (rn_retention_norm)e[9];
    c->group_norm_kind = (rn_norm_kind)e[10];
    c->norm_position = (rn_norm_position)e[11];
    c->norm_eps = (float)eps;
    c->group_norm_eps = (float)gn_eps;
    c->rope_theta = theta;
    c->embed_scale = (float)escale;
    c->residual_alpha =
        c->norm_position == RN_NORMPOS_DEEPNORM ? (float)pow(2.0 * c->n_layers, 0.25) : 1.0f;
    return RN_OK;
}

static int read_token_ids(cfg_reader *r, rn_config *c)
{
    int rc;
    if ((rc = get_int(r, "bos_token_id", -1, -1, MAX_VOCAB, &c->bos_token_id)) ||
        (rc = get_int(r, "eos_token_id", -1, -1, MAX_VOCAB, &c->eos_token_id)) ||
        (rc = get_int(r, "pad_token_id", -1, -1, MAX_VOCAB, &c->pad_token_id)))
        return rc;
    return RN_OK;
}

int rn_config_parse(rn_config *cfg, const char *json, size_t len, const char *path, rn_error *err)
{
    int rc;
    rn_config c;
    memset(&c, 0, sizeof c);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    cfg_reader r = {root, path, err};
    if (!root || !cJSON_IsObject(root)) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: not a JSON object", path);
        goto out;
    }
    while (end && end < json + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (end && end < json + len && *end) { /* "{...} junk": refuse rather than ignore */
        rc = rn_error_set(err, RN_EFORMAT, "%s: text after the JSON object", path);
        goto out;
    }
    if ((rc = check_unknown_fields(&r)) || (rc = read_sizes(&r, &c)) ||
        (rc = read_variants(&r, &c)) || (rc = read_token_ids(&r, &c)) ||
        (rc = check_unsupported(&r, &c)))
        goto out;
    if (c.position == RN_POS_ROTARY && c.head_dim_k % 2) {
        rc = rn_error_set(err, RN_EFORMAT, "%s: rotary needs an even key head dim, got %d", path,
                          c.head_dim_k);
        goto out;
    }
    *cfg = c;
out:
    cJSON_Delete(root);
    return rc;
}

static const char *act_name(rn_act a)
{
    return a == RN_ACT_GELU ? "gelu" : a == RN_ACT_RELU ? "relu" : "swish";
}

char *rn_config_to_json(const rn_config *c)
{
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "model_type", "retnet");
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "expand_k", (double)c->key_dim / c->hidden_size);
    cJSON_AddNumberToObject(o, "expand_v", (double)c->value_dim / c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate_size);
    cJSON_AddStringToObject(o, "hidden_act", act_name(c->hidden_act));
    cJSON_AddNumberToObject(o, "norm_eps", c->norm_eps);
    cJSON_AddBoolToObject(o, "elementwise_affine", c->group_norm_affine);
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddStringToObject(o, "norm_type",
                            c->norm_kind == RN_NORM_LAYER ? "layernorm" : "rmsnorm");
    cJSON_AddStringToObject(o, "ffn_type", c->ffn_kind == RN_FFN_MLP ? "mlp" : "glu");
    cJSON_AddStringToObject(o, "gate_act", act_name(c->gate_act));
    cJSON_AddBoolToObject(o, "attention_bias", c->attention_bias);
    cJSON_AddBoolToObject(o, "mlp_bias", c->mlp_bias);
    cJSON_AddBoolToObject(o, "lm_head_bias", c->lm_head_bias);
    cJSON_AddStringToObject(o, "position_encoding", c->position == RN_POS_NONE ? "none" : "rotary");
    cJSON_AddStringToObject(o, "rope_layout",
                            c->rope_layout == RN_ROPE_INTERLEAVED ? "interleaved" : "half");
    cJSON_AddStringToObject(o, "rope_freq", c->rope_freq == RN_FREQ_LINSPACE ? "linspace" : "pow");
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(o, "decay", c->decay == RN_DECAY_LINSPACE ? "linspace" : "pow2");
    cJSON_AddStringToObject(o, "qk_scale", c->qk_scale == RN_QKSCALE_K ? "k" : "q");
    cJSON_AddStringToObject(o, "retention_norm",
                            c->retention_norm == RN_RETNORM_TORCHSCALE ? "torchscale" : "none");
    cJSON_AddStringToObject(o, "group_norm", c->group_norm_kind == RN_NORM_LAYER ? "layer" : "rms");
    cJSON_AddNumberToObject(o, "group_norm_eps", c->group_norm_eps);
    cJSON_AddNumberToObject(o, "embed_scale", c->embed_scale);
    cJSON_AddBoolToObject(o, "embed_norm", c->embed_norm);
    cJSON_AddBoolToObject(o, "final_norm", c->final_norm);
    cJSON_AddStringToObject(o, "norm_position",
                            c->norm_position == RN_NORMPOS_POST       ? "post"
                            : c->norm_position == RN_NORMPOS_DEEPNORM ? "deepnorm"
                                                                      : "pre");
    if (c->bos_token_id >= 0)
        cJSON_AddNumberToObject(o, "bos_token_id", c->bos_token_id);
    if (c->eos_token_id >= 0)
        cJSON_AddNumberToObject(o, "eos_token_id", c->eos_token_id);
    if (c->pad_token_id >= 0)
        cJSON_AddNumberToObject(o, "pad_token_id", c->pad_token_id);
    s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}
