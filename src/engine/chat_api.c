/* chat_api.c - the chat parts of the public API (kiln.h): rendering a
 * conversation with the model's template family, tokenizing a rendered
 * prompt so that the control tokens written in it as text (such as
 * "<|im_start|>") become those tokens, and tokenizing a conversation so that
 * only the template's markup can make control tokens: the renderer reports
 * where the message contents landed (chat_span) and control-token text is
 * recognised only where it lies wholly outside them, so a message cannot
 * forge a turn. Bounded variants stop as soon as a prompt is certain to
 * need more tokens than the caller allows (a byte bound before any work,
 * then per piece).
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

/* Ids being collected: written while they fit in cap, all counted in n;
 * with a limit (max < SIZE_MAX) collecting stops once n passes max. */
struct toks {
    int32_t *ids;
    size_t cap, n, max;
};

static kiln_status too_long(size_t at_least, size_t max, size_t *n_ids) {
    *n_ids = at_least;
    return kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs at least %zu tokens, more than %zu",
                     at_least, max);
}

/* Appends the tokens of text[0..len) (no specials). */
static kiln_status put_plain(const kiln_model *m, const char *text, size_t len, struct toks *o) {
    if (len == 0) return KILN_OK;
    size_t got = 0, room = o->n < o->cap ? o->cap - o->n : 0;
    size_t left = o->max == SIZE_MAX ? SIZE_MAX : o->max - o->n; /* callers keep n <= max */
    int32_t dummy;
    kiln_status s =
        engine_tokenize_max(m, text, len, false, left, room ? o->ids + o->n : &dummy, room, &got);
    if (s && s != KILN_ERR_RANGE) return s;
    o->n += got; /* with a limit passed, a lower bound */
    return KILN_OK;
}

static void put_id(int32_t id, struct toks *o) {
    if (o->n < o->cap) o->ids[o->n] = id;
    o->n++;
}

/* kiln_tokenize_special over text[0..len), except that control-token text
 * is recognised only where it lies wholly outside sp[0..n_sp) (sorted,
 * disjoint), and with the limit max (SIZE_MAX: none; else KILN_ERR_RANGE
 * as soon as more than max tokens are certain, *n_ids a lower bound). */
static kiln_status tokenize_masked(const kiln_model *m, const char *text, size_t len,
                                   int add_special, const struct chat_span *sp, size_t n_sp,
                                   size_t max, int32_t *ids, size_t cap, size_t *n_ids) {
    struct toks o = {ids, cap, 0, max};
    int32_t pre[4];
    size_t n_pre = 0, k = 0;
    *n_ids = 0;
    kiln_status s = KILN_OK;
    size_t at_least = max != SIZE_MAX ? kiln_tokens_at_least(m, text, len) : 0;
    if (at_least > max) return too_long(at_least, max, n_ids);
    if (add_special) { /* what add_special adds around any text: BOS and/or EOS */
        s = kiln_tokenize(m, "", 0, 1, pre, 4, &n_pre);
        if (s) return s;
    }
    bool bos = n_pre > 0 && pre[0] == kiln_token_bos(m);
    size_t lim0 = n_sp ? sp[0].off : len;
    const struct engine_special *first = lim0 ? match_special(m, text, lim0) : NULL;
    if (bos && !(first && first->id == pre[0])) put_id(pre[0], &o);
    size_t start = 0;
    for (size_t i = 0; i < len && o.n <= max;) {
        if (k < n_sp && i >= sp[k].off) { /* a content: plain text to its end */
            i = sp[k].off + sp[k].len;
            k++;
            continue;
        }
        size_t lim = k < n_sp ? sp[k].off : len;
        const struct engine_special *hit = match_special(m, text + i, lim - i);
        if (!hit) {
            i++;
            continue;
        }
        if ((s = put_plain(m, text + start, i - start, &o))) return s;
        if (o.n > max) break;
        put_id(hit->id, &o);
        i += hit->len;
        start = i;
    }
    if (o.n <= max && (s = put_plain(m, text + start, len - start, &o))) return s;
    for (size_t i = bos ? 1 : 0; i < n_pre && o.n <= max; i++) put_id(pre[i], &o);
    if (o.n > max) return too_long(o.n, max, n_ids);
    *n_ids = o.n;
    if (o.n > cap)
        s = kiln_fail(KILN_ERR_RANGE, "tokenize: the text needs %zu tokens, room for %zu", o.n,
                      cap);
    return s;
}

kiln_status kiln_tokenize_special(const kiln_model *m, const char *text, size_t len,
                                  int add_special, int32_t *ids, size_t cap, size_t *n_ids) {
    return tokenize_masked(m, text, len, add_special, NULL, 0, SIZE_MAX, ids, cap, n_ids);
}

kiln_status kiln_tokenize_bounded(const kiln_model *m, const char *text, size_t len,
                                  int add_special, int parse_special, int32_t *ids, size_t cap,
                                  size_t *n_ids) {
    if (parse_special)
        return tokenize_masked(m, text, len, add_special, NULL, 0, cap, ids, cap, n_ids);
    return engine_tokenize_max(m, text, len, add_special != 0, cap, ids, cap, n_ids);
}

/* ---- tokenizing a conversation ---- */

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The fewest tokens every family's rendering of msgs needs: those of the
 * non-system messages' contents, stripped (a system message may be
 * dropped: mistral-v3 puts it only into a last user turn), counted as
 * kiln_tokens_at_least does, over their bytes together (a token may span
 * two contents that touch). */
static size_t min_content_tokens(const kiln_model *m, const kiln_chat_message *msgs, size_t n) {
    size_t total = 0, per = (size_t)kiln_model_max_token_bytes(m);
    if (per == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].content || !msgs[i].role || !strcmp(msgs[i].role, "system")) continue;
        const char *c = msgs[i].content;
        size_t len = strlen(c);
        while (len > 0 && is_space(c[len - 1])) len--;
        while (len > 0 && is_space(*c)) c++, len--;
        total += engine_counted_bytes(m, c, len);
    }
    return total / per + (total % per != 0);
}

/* Roles are pasted into the template's markup, so they must be names. */
static kiln_status check_role_names(const kiln_chat_message *msgs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role;
        if (!r) continue; /* chat_render names the missing role */
        bool ok = *r != 0;
        for (const char *p = r; *p && ok; p++)
            ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 *p == '_' || *p == '-';
        if (!ok)
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "chat: message %zu has role '%.40s'; a role must be a name (letters, "
                             "digits, '_' and '-')",
                             i, r);
    }
    return KILN_OK;
}

kiln_status kiln_chat_tokenize(const kiln_model *m, const char *template_name,
                               const kiln_chat_message *msgs, size_t n, int add_assistant,
                               int bounded, int32_t *ids, size_t cap, size_t *n_ids) {
    struct chat_template t;
    char bos[64], eos[64], *text = NULL;
    struct chat_span *sp = NULL;
    size_t n_text = 0, n_sp = 0, max = bounded ? cap : SIZE_MAX;
    *n_ids = 0;
    kiln_status s = resolve(m, template_name, &t);
    if (s || (s = check_role_names(msgs, n))) return s;
    size_t at_least = bounded ? min_content_tokens(m, msgs, n) : 0;
    if (at_least > max) return too_long(at_least, max, n_ids); /* before rendering */
    token_text(m, kiln_token_bos(m), bos, sizeof bos);
    token_text(m, kiln_token_eos(m), eos, sizeof eos);
    s = chat_render_spans(&t, msgs, n, add_assistant != 0, bos, eos, &text, &n_text, &sp, &n_sp);
    if (!s) s = tokenize_masked(m, text, n_text, 1, sp, n_sp, max, ids, cap, n_ids);
    free(text);
    free(sp);
    return s;
}
