/* chat_api.c - the chat parts of the public API (kiln.h): rendering a
 * conversation with the model's template family, and tokenizing a rendered
 * prompt so that the control tokens written in it as text (such as
 * "<|im_start|>") become those tokens.
 *
 * Built on the public model API (kiln_model_chat_template, kiln_token_*,
 * kiln_tokenize) and the model's control-token index (engine_model_specials,
 * built at load), so it works with every tokenizer the engine supports.
 * Thread-safe: nothing is written after load.
 */
#include "base/status.h"
#include "engine/genseq.h"
#include "kiln.h"
#include "text/chat.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The template named, or the model's recognised one. */
static kiln_status resolve(const kiln_model *m, const char *name, struct chat_template *t) {
    if (name) return chat_template_named(name, t);
    size_t len = 0;
    const char *tmpl = kiln_model_chat_template(m, &len);
    if (!tmpl)
        return kiln_fail(KILN_ERR_NOT_FOUND,
                         "the model has no chat template (tokenizer.chat_template); name one, "
                         "e.g. --chat-template chatml");
    return chat_template_detect(tmpl, len, t);
}

/* The text of special token id ("" when id < 0) into buf. */
static const char *token_text(const kiln_model *m, int32_t id, char *buf, size_t cap) {
    size_t n = id >= 0 ? kiln_token_to_piece(m, id, 1, buf, cap - 1) : 0;
    buf[n < cap - 1 ? n : cap - 1] = 0;
    return buf;
}

const char *kiln_chat_template_family(const kiln_model *m, const char *template_name) {
    struct chat_template t;
    return resolve(m, template_name, &t) ? NULL : chat_family_name(t.family);
}

const char *const *kiln_chat_stop_strings(const char *family) {
    struct chat_template t;
    enum chat_family f = CHAT_UNKNOWN;
    if (family && chat_template_named(family, &t) == KILN_OK) f = t.family;
    kiln_clear_error();
    return chat_family_stops(f);
}

kiln_status kiln_chat_format(const kiln_model *m, const char *template_name,
                             const kiln_chat_message *msgs, size_t n, int add_assistant, char *buf,
                             size_t cap, size_t *len) {
    struct chat_template t;
    char bos[64], eos[64], *text = NULL;
    size_t n_text = 0;
    *len = 0;
    kiln_status s = resolve(m, template_name, &t);
    if (s) return s;
    token_text(m, kiln_token_bos(m), bos, sizeof bos);
    token_text(m, kiln_token_eos(m), eos, sizeof eos);
    s = chat_render(&t, msgs, n, add_assistant != 0, bos, eos, &text, &n_text);
    if (s) return s;
    *len = n_text;
    if (n_text + 1 > cap) {
        free(text);
        return kiln_fail(KILN_ERR_RANGE, "chat: the prompt needs %zu bytes, the buffer has %zu",
                         n_text + 1, cap);
    }
    memcpy(buf, text, n_text + 1);
    free(text);
    return KILN_OK;
}

/* ---- tokenizing with control tokens ---- */

/* The longest control token whose text starts at s (n > 0 bytes left), or
 * NULL: only the tokens with s's first byte are tried, longest first. */
static const struct engine_special *match_special(const kiln_model *m, const char *s, size_t n) {
    const uint32_t *first;
    const struct engine_special *sp = engine_model_specials(m, &first);
    unsigned char b = (unsigned char)s[0];
    for (uint32_t i = first[b]; i < first[b + 1]; i++)
        if (sp[i].len <= n && !memcmp(sp[i].text, s, sp[i].len)) return &sp[i];
    return NULL;
}

/* Appends the tokens of text[0..len) (no specials) at ids[*n..), counting
 * what is needed past cap. */
static kiln_status put_plain(const kiln_model *m, const char *text, size_t len, int32_t *ids,
                             size_t cap, size_t *n) {
    if (len == 0) return KILN_OK;
    size_t got = 0, room = *n < cap ? cap - *n : 0;
    int32_t dummy;
    kiln_status s = kiln_tokenize(m, text, len, 0, room ? ids + *n : &dummy, room, &got);
    if (s && s != KILN_ERR_RANGE) return s;
    *n += got;
    return KILN_OK;
}

static void put_id(int32_t id, int32_t *ids, size_t cap, size_t *n) {
    if (*n < cap) ids[*n] = id;
    (*n)++;
}

kiln_status kiln_tokenize_special(const kiln_model *m, const char *text, size_t len,
                                  int add_special, int32_t *ids, size_t cap, size_t *n_ids) {
    size_t n = 0;
    int32_t pre[4];
    size_t n_pre = 0;
    *n_ids = 0;
    kiln_status s = KILN_OK;
    if (add_special) { /* what add_special adds around any text: BOS and/or EOS */
        s = kiln_tokenize(m, "", 0, 1, pre, 4, &n_pre);
        if (s) return s;
    }
    bool bos = n_pre > 0 && pre[0] == kiln_token_bos(m);
    const struct engine_special *first = len ? match_special(m, text, len) : NULL;
    if (bos && !(first && first->id == pre[0])) put_id(pre[0], ids, cap, &n);
    size_t start = 0;
    for (size_t i = 0; i < len;) {
        const struct engine_special *hit = match_special(m, text + i, len - i);
        if (!hit) {
            i++;
            continue;
        }
        if ((s = put_plain(m, text + start, i - start, ids, cap, &n))) return s;
        put_id(hit->id, ids, cap, &n);
        i += hit->len;
        start = i;
    }
    if ((s = put_plain(m, text + start, len - start, ids, cap, &n))) return s;
    for (size_t i = bos ? 1 : 0; i < n_pre; i++) put_id(pre[i], ids, cap, &n);
    *n_ids = n;
    if (n > cap)
        s = kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs %zu tokens, room for %zu", n, cap);
    return s;
}
