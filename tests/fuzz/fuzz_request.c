/*
 * fuzz_request.c -- libFuzzer target: arbitrary bytes as the body of
 * POST /v1/completions or /v1/chat/completions (the first byte picks which),
 * through the server's own parsing and validation (rd_api_completion_check:
 * JSON, every field's type and range, prompts tokenized, chat templates).
 * It must accept or refuse with a 4xx, never crash, leak or read out of
 * bounds.  The model is the tiny fixture; no engine runs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

static rd_app app;
static rn_model *model;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *root = getenv("RN_FIXTURES");
    char dir[512], tok[600];
    snprintf(dir, sizeof dir, "%s/fla", root ? root : "tests/fixtures");
    snprintf(tok, sizeof tok, "%s/tokenizer/bytelevel.json", root ? root : "tests/fixtures");
    char *args[] = {"retnetd", NULL};
    if (rd_options_load(&app.opt, 1, args) != 0 || rn_model_load(&model, dir, NULL) != RN_OK ||
        rn_tokenizer_load(&app.tok, tok, NULL) != RN_OK)
        abort();
    app.model = model;
    app.cfg = rn_model_config(model);
    app.opt.model_name = "fuzz";
    app.opt.max_prompt_tokens = 4096;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int status = rd_api_completion_check(&app, (const char *)data + 1, size - 1, data[0] & 1);
    if (status != 0 && (status < 400 || status > 499))
        abort(); /* a body can only be refused as the client's error */
    return 0;
}
