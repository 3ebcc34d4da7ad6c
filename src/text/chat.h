/* chat.h - chat templates: turning a conversation into a prompt.
 *
 * Kiln has no Jinja engine. It recognises the common families of
 * tokenizer.chat_template by their content (the special markers each family
 * uses, plus the few details in which a family's published templates
 * differ: a leading bos_token, a default system prompt, a date) and renders
 * each family natively, producing the text the reference Jinja template
 * produces under Hugging Face's settings (trim_blocks, lstrip_blocks).
 * "strip"/"trim" in the templates remove ASCII whitespace here.
 *
 * Where a family's template raises an exception (roles that do not
 * alternate, a role it does not know), chat_render fails with
 * KILN_ERR_INVALID_ARG naming the problem. Two deliberate deviations, both
 * what users of these models expect: Gemma's older templates reject a
 * system message, Kiln merges it into the first user turn as Gemma 3's
 * template does; Phi-3 templates that drop system messages get them as a
 * <|system|> turn, as the newer Phi-3 templates render them.
 *
 * Everything here is pure and thread-safe.
 */
#ifndef KILN_TEXT_CHAT_H
#define KILN_TEXT_CHAT_H

#include "kiln.h"

#include <stdbool.h>
#include <stddef.h>

enum chat_family {
    CHAT_UNKNOWN = 0,
    CHAT_CHATML,
    CHAT_LLAMA2,
    CHAT_LLAMA3,
    CHAT_MISTRAL_LEGACY, /* Mistral/Mixtral v0.1-v0.2: no system message */
    CHAT_MISTRAL_V1,
    CHAT_MISTRAL_V3,
    CHAT_MISTRAL_V3_TEKKEN,
    CHAT_MISTRAL_V7,
    CHAT_MISTRAL_V7_TEKKEN,
    CHAT_GEMMA,
    CHAT_PHI3,
    CHAT_ZEPHYR,
    CHAT_FAMILY_COUNT
};

/* A recognised template: its family and the details that vary within it. */
struct chat_template {
    enum chat_family family;
    bool bos;             /* starts with bos_token */
    bool eos_at_end;      /* phi3: eos_token when no generation prompt is asked for */
    bool llama31;         /* llama3: the 3.1+ system block with the knowledge/today dates */
    char date[32];        /* llama31: "Today Date" */
    char def_system[512]; /* chatml: a default system prompt, used without a system message */
    size_t def_system_len;
    bool has_def_system;
};

/* Recognises tmpl[0..len). KILN_ERR_UNSUPPORTED (saying so, with a hint to
 * name a family) when no family matches. */
kiln_status chat_template_detect(const char *tmpl, size_t len, struct chat_template *out);

/* The family called name ("chatml", "llama3", ...; see kiln.h), with that
 * family's most common details. KILN_ERR_NOT_FOUND listing the names. */
kiln_status chat_template_named(const char *name, struct chat_template *out);

/* The family's canonical name ("chatml"), or NULL for CHAT_UNKNOWN. */
const char *chat_family_name(enum chat_family f);

/* End-of-turn markers of the family, NULL-terminated (see kiln.h). */
const char *const *chat_family_stops(enum chat_family f);

/* Renders msgs[0..n) with bos/eos the texts of the model's BOS/EOS tokens
 * ("" when it has none). *out is malloc'd (caller frees), NUL-terminated,
 * *len bytes. KILN_ERR_INVALID_ARG naming the problem for a conversation
 * the template cannot render; KILN_ERR_NOMEM. */
kiln_status chat_render(const struct chat_template *t, const kiln_chat_message *msgs, size_t n,
                        bool add_assistant, const char *bos, const char *eos, char **out,
                        size_t *len);

/* Bytes [off, off + len) of a rendered prompt. */
struct chat_span {
    size_t off, len;
};

/* chat_render that also reports where the messages' contents landed: the
 * bytes that came from a content (a system message folded into a user
 * turn included), sorted, disjoint and non-empty, as *spans[0..*n_spans)
 * (malloc'd, caller frees; NULL when there are none). Every other byte is
 * the template's markup: its literals, the roles, bos/eos, a default system
 * prompt, a date. Contents that touch are one span. */
kiln_status chat_render_spans(const struct chat_template *t, const kiln_chat_message *msgs,
                              size_t n, bool add_assistant, const char *bos, const char *eos,
                              char **out, size_t *len, struct chat_span **spans, size_t *n_spans);

#endif
