/*
 * model.h -- a RetNet model directory: config.json + safetensors weights.
 *
 * config.json uses the field names of Hugging Face / flash-linear-attention's
 * RetNetConfig; the architecture variants of torchscale and
 * yet-another-retnet are extra fields whose defaults are FLA's, so an FLA
 * checkpoint loads as it is (docs/model-format.md lists every field).
 * Weights are mmap'd read-only and never copied: every rn_tensor points into a
 * mapping owned by the model.  Everything in the files is validated before a
 * model is returned; nothing here runs on a hot path.
 */
#ifndef RN_MODEL_H
#define RN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

typedef enum { RN_DT_F32 = 0, RN_DT_F16, RN_DT_BF16, RN_DT_F64, RN_DT_I32, RN_DT_I64 } rn_dtype;

typedef enum { RN_NORM_RMS = 0, RN_NORM_LAYER } rn_norm_kind;
typedef enum { RN_FFN_GLU = 0, RN_FFN_MLP } rn_ffn_kind;
typedef enum { RN_ACT_SWISH = 0, RN_ACT_GELU, RN_ACT_RELU } rn_act;
typedef enum { RN_POS_ROTARY = 0, RN_POS_NONE } rn_pos_kind;
typedef enum { RN_ROPE_HALF = 0, RN_ROPE_INTERLEAVED } rn_rope_layout;
typedef enum { RN_FREQ_POW = 0, RN_FREQ_LINSPACE } rn_rope_freq;
typedef enum { RN_DECAY_POW2 = 0, RN_DECAY_LINSPACE } rn_decay_kind;
typedef enum { RN_QKSCALE_Q = 0, RN_QKSCALE_K } rn_qk_scale;
typedef enum { RN_RETNORM_NONE = 0, RN_RETNORM_TORCHSCALE } rn_retention_norm;
typedef enum { RN_NORMPOS_PRE = 0, RN_NORMPOS_POST, RN_NORMPOS_DEEPNORM } rn_norm_position;

/* The architecture, fully resolved (every derived size filled in). */
typedef struct rn_config {
    int vocab_size;
    int hidden_size; /* D */
    int n_layers;    /* L */
    int n_heads;     /* H */
    int head_dim_k;  /* dk = hidden_size * expand_k / H */
    int head_dim_v;  /* dv = hidden_size * expand_v / H */
    int key_dim;     /* H * dk */
    int value_dim;   /* H * dv */
    int intermediate_size;
    rn_act hidden_act; /* FFN activation */
    rn_act gate_act;   /* retention output gate activation */
    rn_norm_kind norm_kind;
    float norm_eps;
    rn_ffn_kind ffn_kind;
    int attention_bias; /* q, k, v, g, o projections carry a bias */
    int mlp_bias;
    int lm_head_bias;
    int tie_word_embeddings;
    rn_pos_kind position;
    rn_rope_layout rope_layout;
    rn_rope_freq rope_freq;
    double rope_theta;
    rn_decay_kind decay;
    rn_qk_scale qk_scale;
    rn_retention_norm retention_norm;
    rn_norm_kind group_norm_kind;
    float group_norm_eps;
    int group_norm_affine; /* FLA: a (dv,) weight shared by all heads */
    float embed_scale;
    int embed_norm; /* torchscale layernorm_embedding (an RMSNorm) */
    int final_norm;
    rn_norm_position norm_position;
    float residual_alpha;                         /* deepnorm: (2L)^(1/4), else 1 */
    int bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
} rn_config;

/* A view of one tensor inside a mapping owned by its rn_model. */
typedef struct rn_tensor {
    const void *data;
    rn_dtype dtype;
    int ndim;
    int64_t shape[4];
    int64_t numel;
} rn_tensor;

/* Weights of one block.  Optional tensors have data == NULL. */
typedef struct rn_layer_weights {
    rn_tensor norm1_w, norm1_b;   /* (D) */
    rn_tensor q_w, q_b, k_w, k_b; /* (H*dk, D), (H*dk) */
    rn_tensor v_w, v_b, g_w, g_b; /* (H*dv, D), (H*dv) */
    rn_tensor o_w, o_b;           /* (D, H*dv), (D) */
    rn_tensor gn_w;               /* (dv) */
    rn_tensor norm2_w, norm2_b;   /* (D) */
    rn_tensor gate_w, gate_b;     /* GLU: gate_proj (F, D) act'd; MLP: unused */
    rn_tensor up_w, up_b;         /* GLU: up_proj (F, D); MLP: the act'd one */
    rn_tensor down_w, down_b;     /* (D, F) */
} rn_layer_weights;

typedef struct rn_weights {
    rn_tensor embed;                      /* (V, D) */
    rn_tensor embed_norm_w;               /* (D) */
    rn_tensor final_norm_w, final_norm_b; /* (D) */
    rn_tensor lm_head_w, lm_head_b;       /* (V, D), (V); lm_head_w aliases embed when tied */
    rn_tensor rope_freq;                  /* (dk) fp32 per-feature frequencies, optional */
    rn_layer_weights *layers;             /* n_layers entries */
} rn_weights;

typedef struct rn_model rn_model;

/* Loads MODEL_DIR/config.json and its weights (model.safetensors, or the
 * shards listed in model.safetensors.index.json).  Returns RN_OK and sets
 * *out to a model owned by the caller (free with rn_model_free), or an error
 * with err->msg naming the file and tensor at fault. */
int rn_model_load(rn_model **out, const char *dir, rn_error *err);
void rn_model_free(rn_model *m);

const rn_config *rn_model_config(const rn_model *m);
const rn_weights *rn_model_weights(const rn_model *m);
/* Parameter count (tied embeddings counted once) and bytes of weights read per
 * decode step (everything but the embedding table, which is read one row a
 * token, unless tied). */
int64_t rn_model_param_count(const rn_model *m);
int64_t rn_model_weight_bytes(const rn_model *m);
/* dtype name of the bulk of the weights ("f32", "bf16", "f16") */
const char *rn_model_dtype_name(const rn_model *m);

/* Parses a config.json text into *cfg (resolving every default).  Exposed for
 * tests and for `retnet random`.  path is only used in messages. */
int rn_config_parse(rn_config *cfg, const char *json, size_t len, const char *path, rn_error *err);
/* Writes cfg as config.json text into a new malloc'd string owned by the
 * caller (free()). Returns NULL on allocation failure. */
char *rn_config_to_json(const rn_config *cfg);

/* Writes into the existing directory dir a model of c's shapes with random
 * weights: config.json and model.safetensors under FLA's tensor names
 * (separate q/k/v/g projections, swish-gated group norm, SwiGLU, RMSNorm
 * weights, an untied lm_head; c's other variants are not written), matrices
 * in dt, norm weights in f32.  Weights ~ N(0, 0.02) from seed, norms 1.
 * RN_OK, or an error with err->msg set (engine/random_model.c). */
int rn_model_write_random(const char *dir, const rn_config *c, rn_dtype dt, uint64_t seed,
                          rn_error *err);

size_t rn_dtype_size(rn_dtype t);
const char *rn_dtype_name(rn_dtype t);

/* Converts n elements of tensor data of dtype t to fp32. */
void rn_to_f32(float *dst, const void *src, rn_dtype t, size_t n);

#endif
