/* fuzz_gguf.c - libFuzzer target for the GGUF reader: any byte string must
 * either parse or fail with a status, never crash or read out of bounds; a
 * parsed file's tensors and metadata must all lie inside the input. */
#include "model/gguf.h"

#include <stdlib.h>
#include <string.h>

static void touch_value(const gguf_value *v, volatile uint64_t *sink) {
    if (v->type == GGUF_VT_STRING && v->str.len) *sink += (uint8_t)v->str.ptr[v->str.len - 1];
    if (v->type != GGUF_VT_ARRAY) return;
    if (v->arr.items) {
        for (uint64_t i = 0; i < v->arr.n; i++) touch_value(&v->arr.items[i], sink);
    } else if (v->arr.n) {
        *sink += (uint64_t)gguf_arr_i64(v, v->arr.n - 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* copy to an exact-size buffer so ASan sees any overread */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    memcpy(copy, data, size);
    gguf_file *f = gguf_open_memory(copy, size, "fuzz", NULL);
    if (f) {
        volatile uint64_t sink = 0;
        for (int64_t i = 0; i < gguf_kv_count(f); i++) touch_value(&gguf_kv_at(f, i)->value, &sink);
        for (int64_t i = 0; i < gguf_tensor_count(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (t->size)
                sink += ((const uint8_t *)t->data)[t->size - 1] + ((const uint8_t *)t->data)[0];
        }
        gguf_close(f);
    }
    free(copy);
    return 0;
}
