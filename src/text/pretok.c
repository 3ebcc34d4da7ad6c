/* pretok.c - BPE pre-tokenizer regexes and the sequential split (see pretok.h).
 *
 * The table below lists, per pre-tokenizer, the regexes llama.cpp c392e509
 * applies and the flags it attaches to the name; the regexes are the ones
 * from each model's tokenizer.json as llama.cpp adapted them (case-insensitive
 * contractions spelled out as [sS] etc.). Non-ASCII characters are written
 * as \x{...} so this file stays ASCII.
 *
 * Invariants: a pretok holds n_re compiled codes, all non-NULL. During a
 * split, `mt` is the text the regexes see (UTF-8, non-ASCII whitespace shown
 * as U+000B) and boff[i] the byte offset of code point i in it (boff[n] =
 * its length); pieces are always expressed as code point end indices.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "text/pretok.h"
#include "base/status.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define PRETOK_MAX_RE 6

/* GPT-2's split: contractions, letters, numbers, other symbols, spaces. */
#define RE_GPT2         "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_LLAMA3                                                                                  \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"   \
                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2                                                                                   \
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"        \
                    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* CJK ideographs (U+4E00-U+9FA5), U+0800-U+4E00 and Hangul (U+AC00-U+D7FF). */
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* Everything up to whitespace or sentence punctuation (… 。 ， 、 । ۔ ،). */
#define RE_BLOOM " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
/* DeepSeek LLM's letter class (Latin, Greek, Cyrillic, Armenian, Georgian,
 * Cherokee, ... letters), from its tokenizer.json. */
#define RE_DEEPSEEK_LETTERS                                                                        \
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-"   \
    "\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}"  \
    "\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-"        \
    "\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-" \
    "\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}"        \
    "\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-"       \
    "\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-"         \
    "\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-"        \
    "\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"         \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-"         \
    "\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}"         \
    "\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}"         \
    "\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"        \
    "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-"       \
    "\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-"            \
    "\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-"         \
    "\\x{1E943}]+"
/* ASCII and full-width punctuation, quotes U+2018-U+201F, U+3000-U+3002. */
#define RE_DEEPSEEK_PUNCT                                                                          \
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+"
#define RE_TEKKEN                                                                                  \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|"                        \
    "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}|"                 \
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

struct pretok_def {
    const char *name;    /* canonical */
    const char *aliases; /* tokenizer.ggml.pre values, each followed by '|' */
    struct pretok_flags flags;
    const char *re[PRETOK_MAX_RE + 1]; /* NULL-terminated */
};

/* {add_bos, ignore_merges, clean_spaces, no_bos} */
static const struct pretok_def defs[] = {
    {"default",
     "default|",
     {0, 0, 1, 0},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"llama3", "llama3|llama-v3|llama-bpe|falcon3|", {1, 1, 1, 0}, {RE_LLAMA3}},
    {"dbrx", "dbrx|smaug-bpe|", {0, 0, 1, 0}, {RE_LLAMA3}},
    {"chatglm4", "chatglm-bpe|", {0, 0, 1, 1}, {RE_LLAMA3}},
    {"deepseek-llm",
     "deepseek-llm|",
     {0, 0, 0, 0},
     {"[\\r\\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_CJK, "\\p{N}+"}},
    {"deepseek-coder",
     "deepseek-coder|",
     {0, 0, 0, 0},
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"}},
    {"falcon", "falcon|", {0, 0, 1, 0}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"starcoder",
     "starcoder|refact|codeshell|exaone|minerva-7b|",
     {0, 0, 1, 0},
     {"\\p{N}", RE_GPT2}},
    {"command-r", "command-r|smollm|", {0, 0, 0, 0}, {"\\p{N}", RE_GPT2}},
    {"gpt2",
     "gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v1-en|jina-v2-es|jina-v2-de|jina-v2-code|"
     "roberta-bpe|mpt|olmo|jais|",
     {0, 0, 1, 0},
     {RE_GPT2}},
    {"qwen2", "qwen2|", {0, 0, 0, 0}, {RE_QWEN2}},
    {"stablelm2", "stablelm2|megrez|", {0, 0, 1, 0}, {RE_QWEN2}},
    {"poro", "poro-chat|", {0, 0, 0, 0}, {RE_BLOOM}},
    {"bloom", "bloom|gpt3-finnish|", {0, 0, 1, 0}, {RE_BLOOM}},
    {"viking", "viking|", {0, 0, 0, 0}, {RE_BLOOM, "\\p{N}"}},
    {"tekken", "tekken|", {1, 1, 0, 0}, {RE_TEKKEN}},
    {"chameleon",
     "chameleon|",
     {1, 0, 0, 0},
     {"<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )", "\\p{N}",
      "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2}},
};

struct pretok {
    const struct pretok_def *def;
    int n_re;
    pcre2_code *re[PRETOK_MAX_RE];
};

static bool alias_match(const char *aliases, const char *name, size_t len) {
    for (const char *a = aliases; *a;) {
        const char *bar = strchr(a, '|');
        if ((size_t)(bar - a) == len && !memcmp(a, name, len)) return true;
        a = bar + 1;
    }
    return false;
}

static const struct pretok_def *find_def(const char *name, size_t len) {
    if (!name || len == 0) return &defs[0];
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (alias_match(defs[i].aliases, name, len)) return &defs[i];
    return NULL;
}

pretok *pretok_create(const char *name, size_t len, struct pretok_flags *flags, kiln_status *st) {
    kiln_status s = KILN_OK;
    pretok *p = NULL;
    const struct pretok_def *d = find_def(name, len);
    if (!d) {
        s = kiln_fail(KILN_ERR_UNSUPPORTED, "unknown BPE pre-tokenizer '%.*s' (tokenizer.ggml.pre)",
                      (int)(len > 64 ? 64 : len), name);
        goto fail;
    }
    if (!(p = calloc(1, sizeof *p))) {
        s = kiln_fail(KILN_ERR_NOMEM, "pre-tokenizer %s: out of memory", d->name);
        goto fail;
    }
    p->def = d;
    for (; p->n_re < PRETOK_MAX_RE && d->re[p->n_re]; p->n_re++) {
        int err;
        PCRE2_SIZE off;
        pcre2_code *c = pcre2_compile((PCRE2_SPTR)d->re[p->n_re], PCRE2_ZERO_TERMINATED,
                                      PCRE2_UTF | PCRE2_DOLLAR_ENDONLY, &err, &off, NULL);
        if (!c) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(err, msg, sizeof msg);
            s = kiln_fail(KILN_ERR_INTERNAL,
                          "pre-tokenizer %s: regex %d does not compile at %zu: %s", d->name,
                          p->n_re, (size_t)off, (const char *)msg);
            goto fail;
        }
        p->re[p->n_re] = c;
        pcre2_jit_compile(c, PCRE2_JIT_COMPLETE); /* without JIT the interpreter runs */
    }
    if (flags) *flags = d->flags;
    if (st) *st = KILN_OK;
    return p;
fail:
    pretok_free(p);
    if (st) *st = s;
    return NULL;
}

void pretok_free(pretok *p) {
    if (!p) return;
    for (int i = 0; i < p->n_re; i++) pcre2_code_free(p->re[i]);
    free(p);
}

const char *pretok_name(const pretok *p) {
    return p->def->name;
}

/* ---- splitting ---- */

/* llama.cpp's non-ASCII whitespace, which the regexes see as U+000B. */
static bool wide_space(uint32_t c) {
    return c == 0x85 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
           c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static size_t put_utf8(uint32_t c, char *o) {
    if (c < 0x80) {
        o[0] = (char)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = (char)(0xc0 | (c >> 6));
        o[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        o[0] = (char)(0xe0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        o[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3f));
    o[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

struct split {
    const pretok *p;
    const char *mt;
    const size_t *boff;
    size_t *out, n_out, cursor; /* cursor: a code point index, only moves forward */
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
    kiln_status err; /* why match() returned -1 */
};

/* Ends a piece at byte offset b of the match text (b > the last end). */
static void emit_end(struct split *s, size_t b) {
    while (s->boff[s->cursor] < b) s->cursor++;
    s->out[s->n_out++] = s->cursor;
}

/* One match of regex ri in subj[0..len) at or after pos: 1 found, 0 none, -1 error. */
static int match(struct split *s, int ri, const char *subj, size_t len, size_t pos, size_t *ms,
                 size_t *me) {
    int rc =
        pcre2_match(s->p->re[ri], (PCRE2_SPTR)subj, len, pos, PCRE2_NO_UTF_CHECK, s->md, s->mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !s->js) { /* deep backtracking: a bigger JIT stack */
        s->js = pcre2_jit_stack_create(64 * 1024, 64 * 1024 * 1024, NULL);
        s->mc = pcre2_match_context_create(NULL);
        if (!s->js || !s->mc) {
            s->err = kiln_fail(KILN_ERR_NOMEM, "pre-tokenizer %s: no memory for a regex stack",
                               s->p->def->name);
            return -1;
        }
        pcre2_jit_stack_assign(s->mc, NULL, s->js);
        rc =
            pcre2_match(s->p->re[ri], (PCRE2_SPTR)subj, len, pos, PCRE2_NO_UTF_CHECK, s->md, s->mc);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[128];
        pcre2_get_error_message(rc, msg, sizeof msg);
        s->err = kiln_fail(KILN_ERR_INTERNAL, "pre-tokenizer %s: regex %d failed on %zu bytes: %s",
                           s->p->def->name, ri, len, (const char *)msg);
        return -1;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(s->md); /* rc == 0: groups did not fit */
    *ms = ov[0];
    *me = ov[1] > ov[0] ? ov[1] : ov[0];
    return 1;
}

static size_t utf8_char_len(unsigned char c) {
    return c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
}

/* Splits the pieces `in` (code point ends) with regex ri into s->out. */
static kiln_status split_with(struct split *s, int ri, const size_t *in, size_t n_in) {
    s->n_out = 0;
    s->cursor = 0;
    size_t start = 0;
    for (size_t k = 0; k < n_in; k++) {
        size_t b0 = s->boff[start], len = s->boff[in[k]] - b0;
        const char *subj = s->mt + b0;
        size_t pos = 0, last = 0, ms, me;
        while (pos < len) {
            int r = match(s, ri, subj, len, pos, &ms, &me);
            if (r < 0) return s->err;
            if (r == 0) break;
            if (ms > last) emit_end(s, b0 + ms);
            if (me > ms) emit_end(s, b0 + me);
            last = me > ms ? me : ms;
            pos = me > ms ? me : ms + (ms < len ? utf8_char_len((unsigned char)subj[ms]) : 1);
        }
        if (len > last) emit_end(s, b0 + len);
        start = in[k];
    }
    return KILN_OK;
}

kiln_status pretok_split(const pretok *p, const uint32_t *cp, size_t n, size_t *ends,
                         size_t *n_words) {
    *n_words = 0;
    if (n == 0) return KILN_OK;
    kiln_status st = KILN_OK;
    struct split s = {.p = p};
    char *mt = malloc(4 * n);
    size_t *boff = malloc((n + 1) * sizeof *boff), *tmp = malloc(n * sizeof *tmp);
    s.md = pcre2_match_data_create(1, NULL);
    if (!mt || !boff || !tmp || !s.md) {
        st = kiln_fail(KILN_ERR_NOMEM, "pre-tokenizer: no memory for %zu characters", n);
        goto done;
    }
    size_t b = 0;
    for (size_t i = 0; i < n; i++) {
        boff[i] = b;
        uint32_t c = cp[i] >= PRETOK_RAW_BYTE ? 0xfffd : cp[i];
        b += wide_space(c) ? (mt[b] = '\v', 1) : put_utf8(c, mt + b);
    }
    boff[n] = b;
    s.mt = mt;
    s.boff = boff;
    /* ping-pong between ends and tmp so the last regex writes into ends */
    size_t *bufs[2] = {ends, tmp}, n_cur = 1;
    int cur = p->n_re % 2; /* the buffer holding the current pieces */
    bufs[cur][0] = n;
    for (int ri = 0; ri < p->n_re; ri++) {
        s.out = bufs[!cur];
        if ((st = split_with(&s, ri, bufs[cur], n_cur))) goto done;
        n_cur = s.n_out;
        cur = !cur;
    }
    KILN_ASSERT(bufs[cur] == ends);
    *n_words = n_cur;
done:
    pcre2_match_data_free(s.md);
    pcre2_match_context_free(s.mc);
    pcre2_jit_stack_free(s.js);
    free(mt);
    free(boff);
    free(tmp);
    return st;
}
