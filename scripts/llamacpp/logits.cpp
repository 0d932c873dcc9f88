// Greedy decoding with llama.cpp's C API, printing each step's chosen id and top-5 logits as JSON
// (the format of tests/fixtures/smollm2/llamacpp_reference.json's `steps`). Built and run by
// scripts/smollm2_llamacpp_refs.py against a llama.cpp build tree.
//
//   logits MODEL FLASH_ATTN(0|1|-1=auto) KV_TYPE(f16|f32) MAX_STEPS PROMPT_ID...
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s MODEL FLASH_ATTN KV_TYPE MAX_STEPS PROMPT_ID...\n", argv[0]);
        return 2;
    }
    const int fa = atoi(argv[2]);
    const std::string kv = argv[3];
    const int max_steps = atoi(argv[4]);
    std::vector<llama_token> prompt;
    for (int i = 5; i < argc; i++) prompt.push_back(atoi(argv[i]));

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.use_extra_bufts = false;  // plain ggml kernels: no repacked weights
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return 1;
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_threads = cp.n_threads_batch = 2;
    cp.flash_attn_type = fa == 1   ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                         : fa == 0 ? LLAMA_FLASH_ATTN_TYPE_DISABLED
                                   : LLAMA_FLASH_ATTN_TYPE_AUTO;
    cp.type_k = cp.type_v = kv == "f32" ? GGML_TYPE_F32 : GGML_TYPE_F16;
    llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return 1;
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    if (llama_decode(ctx, llama_batch_get_one(prompt.data(), prompt.size()))) return 1;
    std::vector<int> order(n_vocab);
    printf("[");
    for (int step = 0; step < max_steps; step++) {
        const float *logits = llama_get_logits_ith(ctx, -1);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                          [&](int a, int b) { return logits[a] > logits[b]; });
        printf("%s{\"id\":%d,\"topk_ids\":[", step ? "," : "", order[0]);
        for (int k = 0; k < 5; k++) printf("%s%d", k ? "," : "", order[k]);
        printf("],\"topk_logits\":[");
        for (int k = 0; k < 5; k++) printf("%s%.6f", k ? "," : "", logits[order[k]]);
        printf("]}");
        llama_token next = order[0];
        if (llama_vocab_is_eog(vocab, next)) break;
        if (llama_decode(ctx, llama_batch_get_one(&next, 1))) return 1;
    }
    printf("]\n");
    llama_free(ctx);
    llama_model_free(model);
    return 0;
}
