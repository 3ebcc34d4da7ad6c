/* openai.h - OpenAI request bodies to engine parameters: parsing and
 * validation of /v1/chat/completions, /v1/completions and /v1/embeddings
 * bodies, with errors that name the parameter (as OpenAI's do). Pure
 * functions of the body: no model, no engine (checks that need the model's
 * vocabulary are done by the caller). */
#ifndef KILN_SERVER_OPENAI_H
#define KILN_SERVER_OPENAI_H

#include "kiln.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SRV_MAX_STOP 16   /* stop strings a request may give */
#define SRV_MAX_BIAS 1024 /* logit_bias entries */
#define SRV_ECHO_MAX 64   /* bytes of a client's string an error message repeats */

/* Cuts s (NUL-terminated) at its first byte that is not valid UTF-8, such
 * as a sequence a length limit cut in two (util.c). */
void srv_utf8_trim(char *s);

/* A validation failure: HTTP status, OpenAI error type/param/code, message. */
typedef struct srv_perr {
    unsigned status;
    const char *type, *param, *code; /* param/code may be NULL */
    char msg[512];
    char param_buf[SRV_ECHO_MAX + 4]; /* a long param, cut */
} srv_perr;

/* A parsed generation request. Strings point into root (owned). */
typedef struct srv_gen_req {
    json_t *root;
    const char *model; /* NULL when absent */
    bool chat, stream, include_usage;
    kiln_gen_params gen; /* gen.stop -> stop[], gen.sampling.logit_bias -> bias */
    bool seed_set;
    bool max_tokens_set;                /* max_tokens / max_completion_tokens given */
    const char *stop[SRV_MAX_STOP + 8]; /* room for the chat family's stop strings */
    kiln_logit_bias *bias;
    /* chat */
    kiln_chat_message *msgs;
    size_t n_msgs;
    char **owned; /* contents joined from parts, freed with the request */
    size_t n_owned;
    /* completions: text, or ids when prompt_ids is not NULL */
    const char *prompt;
    size_t prompt_len;
    int32_t *prompt_ids;
    int32_t n_prompt_ids;
    bool parse_special; /* completions: control-token text in prompt becomes those tokens */
} srv_gen_req;

/* Parses a chat (chat = true) or completions body. false and *e on a bad
 * request. Free g with srv_gen_req_free either way. */
bool srv_parse_gen(const char *body, size_t len, bool chat, srv_gen_req *g, srv_perr *e);
void srv_gen_req_free(srv_gen_req *g);

/* A parsed embeddings request. */
typedef struct srv_emb_req {
    json_t *root;
    const char *model;
    kiln_embed_input *in; /* texts point into root; ids are owned (ids_buf) */
    int32_t n;
    int32_t *ids_buf;
    int32_t dim; /* 0: the model's */
    bool b64;    /* encoding_format "base64" */
} srv_emb_req;

bool srv_parse_emb(const char *body, size_t len, srv_emb_req *q, srv_perr *e);
void srv_emb_req_free(srv_emb_req *q);

#endif
