/*
 * fuzz_config.c -- libFuzzer target: arbitrary bytes as config.json.  The
 * parser must refuse or accept without crashing, and an accepted config must
 * have sizes the engine can rely on.
 */
#include <stdint.h>
#include <stdlib.h>

#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rn_config c;
    rn_error err;
    if (rn_config_parse(&c, (const char *)data, size, "fuzz", &err) != RN_OK)
        return 0;
    if (c.hidden_size < 1 || c.n_layers < 1 || c.n_heads < 1 || c.head_dim_k < 1 ||
        c.head_dim_v < 1 || c.vocab_size < 1 || c.intermediate_size < 1 ||
        c.head_dim_k * c.n_heads != c.key_dim || c.head_dim_v * c.n_heads != c.value_dim)
        abort();
    char *back = rn_config_to_json(&c);
    rn_config again;
    if (!back || rn_config_parse(&again, back, __builtin_strlen(back), "fuzz", &err) != RN_OK)
        abort();
    free(back);
    return 0;
}
