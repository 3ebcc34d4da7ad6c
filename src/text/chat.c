/* chat.c - chat-template recognition and rendering (see chat.h).
 *
 * Each family has one render function that follows its reference template
 * statement by statement; the comments name the template details that
 * matter. Output is built in a growing buffer (strbuf) whose failure is
 * sticky, so render functions do not check every append.
 *
 * Message contents (and a system message moved into a user turn) are
 * appended only through put_text/put_content/put_trimmed, which record
 * where each landed (chat_span), so a tokenizer can keep control-token text
 * inside them plain; everything else a renderer writes is the template's
 * own markup. The spans come out sorted and disjoint.
 */
#include "text/chat.h"
#include "base/status.h"
#include "base/strbuf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- a growing string ---- */

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The rendered text and, when asked for, where message contents landed in it. */
struct rbuf {
    strbuf b;
    struct chat_span *sp; /* NULL: not recorded */
    size_t n_sp, cap_sp;
    bool track, oom;
};

/* Appends n bytes of message content, recording their span. */
static void put_text(struct rbuf *r, const char *s, size_t n) {
    size_t off = r->b.n;
    strbuf_put(&r->b, s, n);
    if (!r->track || n == 0 || r->b.oom) return;
    if (r->n_sp > 0 && r->sp[r->n_sp - 1].off + r->sp[r->n_sp - 1].len == off) {
        r->sp[r->n_sp - 1].len += n; /* content right after content: one span */
        return;
    }
    if (r->n_sp == r->cap_sp) {
        size_t cap = r->cap_sp ? 2 * r->cap_sp : 8;
        struct chat_span *p = realloc(r->sp, cap * sizeof *p);
        if (!p) {
            r->oom = true;
            return;
        }
        r->sp = p, r->cap_sp = cap;
    }
    r->sp[r->n_sp++] = (struct chat_span){off, n};
}

static void put_content(struct rbuf *r, const char *s) {
    put_text(r, s, strlen(s));
}

/* Appends content without its leading and trailing whitespace (Jinja's
 * trim, Python's strip). */
static void put_trimmed(struct rbuf *r, const char *s) {
    size_t n = strlen(s);
    while (n > 0 && is_space(s[n - 1])) n--;
    while (n > 0 && is_space(*s)) s++, n--;
    put_text(r, s, n);
}

/* ---- recognition ---- */

static const char *find(const char *hay, size_t n, const char *needle) {
    size_t m = strlen(needle);
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m)) return hay + i;
    return NULL;
}

static bool has(const char *hay, size_t n, const char *needle) {
    return find(hay, n, needle) != NULL;
}

/* Either quoting of a Jinja string literal fragment: has_lit(t, n, "[INST] ", "'")
 * looks for both "[INST] '" and "[INST] \"". where: 0 needle then quote, 1 quote then needle. */
static bool has_lit(const char *t, size_t n, const char *needle, int quote_first) {
    char a[64], b[64];
    size_t m = strlen(needle);
    if (m + 2 > sizeof a) return false;
    for (int q = 0; q < 2; q++) {
        char qc = q ? '"' : '\'';
        if (quote_first) {
            a[0] = qc;
            memcpy(a + 1, needle, m + 1);
        } else {
            memcpy(a, needle, m);
            a[m] = qc;
            a[m + 1] = 0;
        }
        memcpy(b, a, sizeof b);
        if (has(t, n, b)) return true;
    }
    return false;
}

/* Qwen-style ChatML templates carry a default system prompt as a literal,
 * '<|im_start|>system\nYou are ...<|im_end|>\n', used when the conversation
 * has none. Finds one (a literal: no quotes or '+' inside) and unescapes it. */
static void find_default_system(const char *t, size_t n, struct chat_template *out) {
    static const char head[] = "<|im_start|>system\\n";
    const char *end = t + n;
    for (const char *p = find(t, n, head); p; p = find(p + 1, (size_t)(end - p - 1), head)) {
        const char *s = p + strlen(head), *e = find(s, (size_t)(end - s), "<|im_end|>");
        if (!e) return;
        bool literal = e > s;
        for (const char *q = s; q < e && literal; q++)
            literal = *q != '\'' && *q != '"' && *q != '+' && *q != '{' && *q != '}';
        if (!literal) continue;
        size_t k = 0;
        for (const char *q = s; q < e && k + 1 < sizeof out->def_system; q++) {
            char c = *q;
            if (c == '\\' && q + 1 < e) {
                c = *++q;
                c = c == 'n' ? '\n' : c == 't' ? '\t' : c;
            }
            out->def_system[k++] = c;
        }
        out->def_system[k] = 0;
        out->def_system_len = k;
        out->has_def_system = true;
        return;
    }
}

/* Llama 3.1+: the "Today Date" line. 3.1 sets a fixed date_string in the
 * template; 3.2+ call strftime_now("%d %b %Y") (today). */
static void find_llama_date(const char *t, size_t n, struct chat_template *out) {
    static const char key[] = "set date_string = \"";
    const char *p = find(t, n, key);
    snprintf(out->date, sizeof out->date, "26 Jul 2024");
    if (p) {
        p += strlen(key);
        size_t k = 0;
        while (p + k < t + n && p[k] != '"' && k + 1 < sizeof out->date) k++;
        memcpy(out->date, p, k);
        out->date[k] = 0;
    } else if (has(t, n, "strftime_now")) {
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(out->date, sizeof out->date, "%d %b %Y", &tm);
    }
}

static enum chat_family detect_mistral(const char *t, size_t n) {
    bool inst_space = has_lit(t, n, "[INST] ", 0); /* '[INST] ' + ... */
    if (has(t, n, "[SYSTEM_PROMPT]")) return inst_space ? CHAT_MISTRAL_V7 : CHAT_MISTRAL_V7_TEKKEN;
    if (has_lit(t, n, " [INST] ", 1)) return CHAT_MISTRAL_V1;     /* ' [INST] ' */
    if (has_lit(t, n, " [/INST]", 1)) return CHAT_MISTRAL_LEGACY; /* ' [/INST]' */
    return inst_space ? CHAT_MISTRAL_V3 : CHAT_MISTRAL_V3_TEKKEN;
}

kiln_status chat_template_detect(const char *t, size_t n, struct chat_template *out) {
    memset(out, 0, sizeof *out);
    bool bos = has(t, n, "bos_token");
    if (has(t, n, "<|im_start|>")) {
        out->family = CHAT_CHATML;
        out->bos = bos;
        find_default_system(t, n, out);
    } else if (has(t, n, "<|start_header_id|>")) {
        out->family = CHAT_LLAMA3;
        out->bos = true;
        if ((out->llama31 = has(t, n, "Cutting Knowledge Date"))) find_llama_date(t, n, out);
    } else if (has(t, n, "<start_of_turn>")) {
        out->family = CHAT_GEMMA;
        out->bos = bos;
    } else if (has(t, n, "[INST]")) {
        out->family = has(t, n, "<<SYS>>") ? CHAT_LLAMA2 : detect_mistral(t, n);
        out->bos = true;
    } else if (has(t, n, "<|end|>") && (has(t, n, "<|user|>") || has(t, n, "<|assistant|>"))) {
        out->family = CHAT_PHI3; /* some Phi-3 templates build "<|user|>" from the role */
        out->bos = bos;
        out->eos_at_end = has(t, n, "eos_token");
    } else if (has(t, n, "<|user|>")) {
        out->family = CHAT_ZEPHYR;
        out->bos = bos;
    } else {
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "chat template not recognised (%zu bytes, starting \"%.40s\"); name a "
                         "family to use instead, e.g. --chat-template chatml",
                         n, t);
    }
    return KILN_OK;
}

static const char *const family_names[CHAT_FAMILY_COUNT] = {
    [CHAT_CHATML] = "chatml",
    [CHAT_LLAMA2] = "llama2",
    [CHAT_LLAMA3] = "llama3",
    [CHAT_MISTRAL_LEGACY] = "mistral-legacy",
    [CHAT_MISTRAL_V1] = "mistral-v1",
    [CHAT_MISTRAL_V3] = "mistral-v3",
    [CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_MISTRAL_V7] = "mistral-v7",
    [CHAT_MISTRAL_V7_TEKKEN] = "mistral-v7-tekken",
    [CHAT_GEMMA] = "gemma",
    [CHAT_PHI3] = "phi3",
    [CHAT_ZEPHYR] = "zephyr",
};

const char *chat_family_name(enum chat_family f) {
    return f > CHAT_UNKNOWN && f < CHAT_FAMILY_COUNT ? family_names[f] : NULL;
}

kiln_status chat_template_named(const char *name, struct chat_template *out) {
    memset(out, 0, sizeof *out);
    if (name && !strcmp(name, "qwen")) name = "chatml";
    for (int f = CHAT_UNKNOWN + 1; name && f < CHAT_FAMILY_COUNT; f++) {
        if (strcmp(name, family_names[f])) continue;
        out->family = (enum chat_family)f;
        /* the families whose published templates start with bos_token */
        out->bos = f != CHAT_CHATML && f != CHAT_PHI3 && f != CHAT_ZEPHYR;
        out->eos_at_end = f == CHAT_PHI3;
        return KILN_OK;
    }
    return kiln_fail(KILN_ERR_NOT_FOUND,
                     "unknown chat template '%s'; known: chatml (qwen), llama2, llama3, "
                     "mistral-legacy, mistral-v1, mistral-v3, mistral-v3-tekken, mistral-v7, "
                     "mistral-v7-tekken, gemma, phi3, zephyr",
                     name ? name : "(null)");
}

const char *const *chat_family_stops(enum chat_family f) {
    static const char *const none[] = {NULL};
    static const char *const chatml[] = {"<|im_end|>", "<|im_start|>", NULL};
    static const char *const llama2[] = {"</s>", "[INST]", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|start_header_id|>", NULL};
    static const char *const gemma[] = {"<end_of_turn>", "<start_of_turn>", NULL};
    static const char *const phi3[] = {"<|end|>", "<|user|>", "<|assistant|>", NULL};
    static const char *const zephyr[] = {"</s>", "<|user|>", "<|assistant|>", NULL};
    switch (f) {
    case CHAT_CHATML:
        return chatml;
    case CHAT_LLAMA3:
        return llama3;
    case CHAT_GEMMA:
        return gemma;
    case CHAT_PHI3:
        return phi3;
    case CHAT_ZEPHYR:
        return zephyr;
    case CHAT_UNKNOWN:
    case CHAT_FAMILY_COUNT:
        return none;
    default:
        return llama2; /* llama2 and the Mistral variants */
    }
}

/* ---- rendering ---- */

struct conv {
    const kiln_chat_message *m;
    size_t n;
    const char *sys; /* a leading system message's content, when split off */
    const char *family;
};

static bool role_is(const kiln_chat_message *m, const char *role) {
    return !strcmp(m->role, role);
}

/* Splits off a leading system message (the templates' loop_messages). */
static struct conv split_system(const struct chat_template *t, const kiln_chat_message *m,
                                size_t n) {
    struct conv c = {m, n, NULL, chat_family_name(t->family)};
    if (n > 0 && role_is(&m[0], "system")) {
        c.sys = m[0].content;
        c.m++;
        c.n--;
    }
    return c;
}

/* The check most templates make: user, assistant, user, ... from the first
 * message on, and no other role. */
static kiln_status check_alternation(const struct conv *c) {
    for (size_t i = 0; i < c->n; i++) {
        const char *want = i % 2 == 0 ? "user" : "assistant";
        if (strcmp(c->m[i].role, want))
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "chat template %s: after an optional system message, roles must "
                             "alternate user/assistant/user/...; message %zu is '%s', not '%s'",
                             c->family, i + (c->sys ? 1 : 0), c->m[i].role, want);
    }
    return KILN_OK;
}

static void render_chatml(const struct chat_template *t, const kiln_chat_message *m, size_t n,
                          bool add, const char *bos, struct rbuf *r) {
    strbuf *b = &r->b;
    if (t->bos) strbuf_puts(b, bos);
    if (t->has_def_system && n > 0 && !role_is(&m[0], "system")) {
        strbuf_puts(b, "<|im_start|>system\n");
        strbuf_put(b, t->def_system, t->def_system_len);
        strbuf_puts(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|im_start|>");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "\n");
        put_content(r, m[i].content);
        strbuf_puts(b, "<|im_end|>\n");
    }
    if (add) strbuf_puts(b, "<|im_start|>assistant\n");
}

/* Llama 2: the system message is wrapped in <<SYS>> and put at the start of
 * the first user turn; every turn's content is strip()ped, every user turn
 * starts with bos_token; the template has no generation prompt. */
static kiln_status render_llama2(const struct conv *c, const char *bos, const char *eos,
                                 struct rbuf *r) {
    strbuf *b = &r->b;
    kiln_status s = check_alternation(c);
    if (s) return s;
    for (size_t i = 0; i < c->n; i++) {
        if (role_is(&c->m[i], "user")) {
            strbuf_puts(b, bos);
            strbuf_puts(b, "[INST] ");
            if (i == 0 && c->sys) {
                /* strip() applies to the whole; the <<SYS>> block starts with '<' */
                strbuf_puts(b, "<<SYS>>\n");
                put_content(r, c->sys);
                strbuf_puts(b, "\n<</SYS>>\n\n");
                size_t n = strlen(c->m[i].content);
                while (n > 0 && is_space(c->m[i].content[n - 1])) n--;
                put_text(r, c->m[i].content, n);
            } else {
                put_trimmed(r, c->m[i].content);
            }
            strbuf_puts(b, " [/INST]");
        } else {
            strbuf_puts(b, " ");
            put_trimmed(r, c->m[i].content);
            strbuf_puts(b, " ");
            strbuf_puts(b, eos);
        }
    }
    return KILN_OK;
}

static void llama3_turn(struct rbuf *r, const char *role, const char *content) {
    strbuf *b = &r->b;
    strbuf_puts(b, "<|start_header_id|>");
    strbuf_puts(b, role);
    strbuf_puts(b, "<|end_header_id|>\n\n");
    put_trimmed(r, content);
    strbuf_puts(b, "<|eot_id|>");
}

/* Llama 3: bos_token, then each message as a header and its trimmed content.
 * 3.1+ always opens with a system turn carrying the knowledge cutoff and
 * today's date before the (trimmed) system message. */
static void render_llama3(const struct chat_template *t, const kiln_chat_message *m, size_t n,
                          bool add, const char *bos, struct rbuf *r) {
    strbuf *b = &r->b;
    if (t->llama31) {
        size_t first = n > 0 && role_is(&m[0], "system") ? 1 : 0;
        strbuf_puts(b, bos);
        strbuf_puts(b, "<|start_header_id|>system<|end_header_id|>\n\n");
        strbuf_puts(b, "Cutting Knowledge Date: December 2023\nToday Date: ");
        strbuf_puts(b, t->date);
        strbuf_puts(b, "\n\n");
        if (first) put_trimmed(r, m[0].content);
        strbuf_puts(b, "<|eot_id|>");
        for (size_t i = first; i < n; i++) llama3_turn(r, m[i].role, m[i].content);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (i == 0) strbuf_puts(b, bos);
            llama3_turn(r, m[i].role, m[i].content);
        }
    }
    if (add) strbuf_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* The Mistral variants differ in spaces, trimming and where the system
 * message goes: v1 into the first user turn, v3 into the last one (and only
 * when the conversation ends with it), v7 as its own [SYSTEM_PROMPT] turn;
 * the legacy templates accept no system message at all. */
static kiln_status render_mistral(const struct chat_template *t, const struct conv *c0,
                                  const kiln_chat_message *m, size_t n, const char *bos,
                                  const char *eos, struct rbuf *r) {
    strbuf *b = &r->b;
    enum chat_family f = t->family;
    strbuf_puts(b, bos);
    if (f == CHAT_MISTRAL_V7 || f == CHAT_MISTRAL_V7_TEKKEN) {
        const char *sp = f == CHAT_MISTRAL_V7 ? " " : "";
        for (size_t i = 0; i < n; i++) {
            if (role_is(&m[i], "user")) {
                strbuf_puts(b, "[INST]");
                strbuf_puts(b, sp);
                put_content(r, m[i].content);
                strbuf_puts(b, "[/INST]");
            } else if (role_is(&m[i], "system")) {
                strbuf_puts(b, "[SYSTEM_PROMPT]");
                strbuf_puts(b, sp);
                put_content(r, m[i].content);
                strbuf_puts(b, "[/SYSTEM_PROMPT]");
            } else if (role_is(&m[i], "assistant")) {
                strbuf_puts(b, sp);
                put_content(r, m[i].content);
                strbuf_puts(b, eos);
            } else {
                return kiln_fail(KILN_ERR_INVALID_ARG,
                                 "chat template %s: message %zu has role '%s'; only user, system "
                                 "and assistant are supported",
                                 c0->family, i, m[i].role);
            }
        }
        return KILN_OK;
    }
    struct conv c = *c0;
    if (f == CHAT_MISTRAL_LEGACY && c0->sys)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "chat template %s: this template supports no system message (it "
                         "accepts only alternating user and assistant messages)",
                         c0->family);
    if (f == CHAT_MISTRAL_LEGACY) {
        c.m = m;
        c.n = n;
        c.sys = NULL;
    }
    kiln_status s = check_alternation(&c);
    if (s) return s;
    for (size_t i = 0; i < c.n; i++) {
        const char *content = c.m[i].content;
        if (role_is(&c.m[i], "assistant")) {
            if (f == CHAT_MISTRAL_V1) strbuf_puts(b, " ");
            if (f == CHAT_MISTRAL_V3) {
                strbuf_puts(b, " ");
                put_trimmed(r, content);
            } else {
                put_content(r, content);
            }
            strbuf_puts(b, eos);
            continue;
        }
        bool with_sys = c.sys && (f == CHAT_MISTRAL_V1 ? i == 0 : i + 1 == c.n);
        strbuf_puts(b, f == CHAT_MISTRAL_V1          ? " [INST] "
                       : f == CHAT_MISTRAL_V3_TEKKEN ? "[INST]"
                                                     : "[INST] ");
        if (with_sys) {
            put_content(r, c.sys);
            strbuf_puts(b, "\n\n");
        }
        put_content(r, content);
        strbuf_puts(b, f == CHAT_MISTRAL_V1 || f == CHAT_MISTRAL_LEGACY ? " [/INST]" : "[/INST]");
    }
    return KILN_OK;
}

/* Gemma: "model" for the assistant, content trimmed, a system message
 * merged into the first user turn followed by a blank line (Gemma 3). */
static kiln_status render_gemma(const struct chat_template *t, const struct conv *c, bool add,
                                const char *bos, struct rbuf *r) {
    strbuf *b = &r->b;
    kiln_status s = check_alternation(c);
    if (s) return s;
    if (t->bos) strbuf_puts(b, bos);
    for (size_t i = 0; i < c->n; i++) {
        strbuf_puts(b, "<start_of_turn>");
        strbuf_puts(b, role_is(&c->m[i], "assistant") ? "model" : c->m[i].role);
        strbuf_puts(b, "\n");
        if (i == 0 && c->sys) {
            put_content(r, c->sys);
            strbuf_puts(b, "\n\n");
        }
        put_trimmed(r, c->m[i].content);
        strbuf_puts(b, "<end_of_turn>\n");
    }
    if (add) strbuf_puts(b, "<start_of_turn>model\n");
    return KILN_OK;
}

/* Phi-3 ("<|end|>" after each turn) and Zephyr (eos_token and a newline). */
static void render_tagged(const struct chat_template *t, const kiln_chat_message *m, size_t n,
                          bool add, const char *bos, const char *eos, struct rbuf *r) {
    strbuf *b = &r->b;
    bool phi = t->family == CHAT_PHI3;
    if (t->bos) strbuf_puts(b, bos);
    for (size_t i = 0; i < n; i++) {
        strbuf_puts(b, "<|");
        strbuf_puts(b, m[i].role);
        strbuf_puts(b, "|>\n");
        put_content(r, m[i].content);
        if (phi) {
            strbuf_puts(b, "<|end|>\n");
        } else {
            strbuf_puts(b, eos);
            strbuf_puts(b, "\n");
        }
    }
    if (add && (phi || n > 0)) /* Zephyr's prompt sits inside the loop: loop.last */
        strbuf_puts(b, "<|assistant|>\n");
    else if (!add && phi && t->eos_at_end)
        strbuf_puts(b, eos);
}

/* Families that paste the role into the text accept any role; the others
 * know system, user and assistant only. */
static kiln_status check_roles(const struct chat_template *t, const kiln_chat_message *m,
                               size_t n) {
    bool any = t->family == CHAT_CHATML || t->family == CHAT_LLAMA3 || t->family == CHAT_PHI3;
    for (size_t i = 0; i < n; i++) {
        if (!m[i].role || !m[i].content)
            return kiln_fail(KILN_ERR_INVALID_ARG, "chat: message %zu has no %s", i,
                             m[i].role ? "content" : "role");
        if (!any && !role_is(&m[i], "system") && !role_is(&m[i], "user") &&
            !role_is(&m[i], "assistant"))
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "chat template %s: message %zu has role '%s'; only system, user "
                             "and assistant are supported",
                             chat_family_name(t->family), i, m[i].role);
        if (i > 0 && role_is(&m[i], "system") && t->family != CHAT_CHATML &&
            t->family != CHAT_LLAMA3 && t->family != CHAT_PHI3 && t->family != CHAT_ZEPHYR &&
            t->family != CHAT_MISTRAL_V7 && t->family != CHAT_MISTRAL_V7_TEKKEN)
            return kiln_fail(KILN_ERR_INVALID_ARG,
                             "chat template %s: a system message must come first (message %zu "
                             "is one)",
                             chat_family_name(t->family), i);
    }
    return KILN_OK;
}

kiln_status chat_render_spans(const struct chat_template *t, const kiln_chat_message *msgs,
                              size_t n, bool add, const char *bos, const char *eos, char **out,
                              size_t *len, struct chat_span **spans, size_t *n_spans) {
    struct rbuf r = {.track = spans != NULL};
    strbuf *b = &r.b;
    *out = NULL;
    *len = 0;
    if (spans) *spans = NULL, *n_spans = 0;
    bos = bos ? bos : "";
    eos = eos ? eos : "";
    kiln_status s = check_roles(t, msgs, n);
    if (s) return s;
    struct conv c = split_system(t, msgs, n);
    switch (t->family) {
    case CHAT_CHATML:
        render_chatml(t, msgs, n, add, bos, &r);
        break;
    case CHAT_LLAMA2:
        s = render_llama2(&c, bos, eos, &r);
        break;
    case CHAT_LLAMA3:
        render_llama3(t, msgs, n, add, bos, &r);
        break;
    case CHAT_GEMMA:
        s = render_gemma(t, &c, add, bos, &r);
        break;
    case CHAT_PHI3:
    case CHAT_ZEPHYR:
        render_tagged(t, msgs, n, add, bos, eos, &r);
        break;
    case CHAT_MISTRAL_LEGACY:
    case CHAT_MISTRAL_V1:
    case CHAT_MISTRAL_V3:
    case CHAT_MISTRAL_V3_TEKKEN:
    case CHAT_MISTRAL_V7:
    case CHAT_MISTRAL_V7_TEKKEN:
        s = render_mistral(t, &c, msgs, n, bos, eos, &r);
        break;
    default:
        s = kiln_fail(KILN_ERR_INVALID_ARG, "chat: no template family given");
    }
    if (!s && !b->p && !b->oom) strbuf_put(b, "", 0); /* an empty conversation renders as "" */
    if (!s && (b->oom || r.oom))
        s = kiln_fail(KILN_ERR_NOMEM, "chat: out of memory rendering the prompt");
    if (s) {
        free(b->p);
        free(r.sp);
        return s;
    }
    *out = b->p;
    *len = b->n;
    if (spans) *spans = r.sp, *n_spans = r.n_sp;
    return KILN_OK;
}

kiln_status chat_render(const struct chat_template *t, const kiln_chat_message *msgs, size_t n,
                        bool add, const char *bos, const char *eos, char **out, size_t *len) {
    return chat_render_spans(t, msgs, n, add, bos, eos, out, len, NULL, NULL);
}
