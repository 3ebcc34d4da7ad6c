/* test_chat.c - chat templates: for each family, a real template string is
 * recognised and renders a conversation (system, user, assistant, user,
 * assistant, user) exactly as the reference Jinja template does (expected
 * strings derived from the templates, cross-checked against llama.cpp's
 * test-chat-template expectations); templates that cannot be applied fail
 * naming the problem. With the shared data: control-token tokenization and
 * KV-cache reuse across chat turns on stories260K. */
#include "testutil.h"

#include "kiln.h"
#include "text/chat.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const kiln_chat_message conv[] = {
    {"system", "You are a helpful assistant"},
    {"user", "Hello"},
    {"assistant", "Hi there"},
    {"user", "Who are you"},
    {"assistant", "   I am an assistant   "},
    {"user", "Another question"},
};
enum { N_CONV = 6 };

/* Detects tmpl, checks the family and renders msgs exactly as want. */
static void check(const char *tmpl, const char *family, const kiln_chat_message *msgs, size_t n,
                  bool add, const char *bos, const char *eos, const char *want) {
    struct chat_template t;
    assert_int_equal(chat_template_detect(tmpl, strlen(tmpl), &t), KILN_OK);
    assert_string_equal(chat_family_name(t.family), family);
    char *out;
    size_t len;
    kiln_status st = chat_render(&t, msgs, n, add, bos, eos, &out, &len);
    if (st) print_message("  %s: %s\n", family, kiln_last_error());
    assert_int_equal(st, KILN_OK);
    if (strcmp(out, want)) print_message("  %s:\n  got  [%s]\n  want [%s]\n", family, out, want);
    assert_string_equal(out, want);
    assert_int_equal(len, strlen(want));
    free(out);
}

/* Expects rendering to fail with st and a message containing what. */
static void check_fails(const char *tmpl, const kiln_chat_message *msgs, size_t n, kiln_status want,
                        const char *what) {
    struct chat_template t;
    char *out;
    size_t len;
    assert_int_equal(chat_template_detect(tmpl, strlen(tmpl), &t), KILN_OK);
    assert_int_equal(chat_render(&t, msgs, n, true, "<s>", "</s>", &out, &len), want);
    assert_null(out);
    if (!strstr(kiln_last_error(), what)) print_message("  message: %s\n", kiln_last_error());
    assert_non_null(strstr(kiln_last_error(), what));
}

/* teknium/OpenHermes-2.5-Mistral-7B */
static const char chatml_tmpl[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\\n' }}{% endif %}";

/* Qwen1.5/Qwen2: a default system prompt when the conversation has none */
static const char qwen_tmpl[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\\nYou are a helpful assistant<|im_end|>\\n' }}{% endif "
    "%}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

static void test_chatml(void **state) {
    (void)state;
    const char *want = "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
                       "<|im_start|>user\nHello<|im_end|>\n"
                       "<|im_start|>assistant\nHi there<|im_end|>\n"
                       "<|im_start|>user\nWho are you<|im_end|>\n"
                       "<|im_start|>assistant\n   I am an assistant   <|im_end|>\n"
                       "<|im_start|>user\nAnother question<|im_end|>\n"
                       "<|im_start|>assistant\n";
    check(chatml_tmpl, "chatml", conv, N_CONV, true, "<s>", "</s>", want);
    check(qwen_tmpl, "chatml", conv, N_CONV, true, "<s>", "</s>", want);
    check(qwen_tmpl, "chatml", conv + 1, 1, true, "", "",
          "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n"
          "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    check(chatml_tmpl, "chatml", conv + 1, 1, false, "", "", "<|im_start|>user\nHello<|im_end|>\n");
}

/* meta-llama/Llama-2-7b-chat-hf */
static const char llama2_tmpl[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if "
    "(message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
    "roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 "
    "and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% "
    "endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' "
    "[/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}";

static void test_llama2(void **state) {
    (void)state;
    check(llama2_tmpl, "llama2", conv, N_CONV, true, "<s>", "</s>",
          "<s>[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST] Hi there "
          "</s><s>[INST] Who are you [/INST] I am an assistant </s><s>[INST] Another question "
          "[/INST]");
    check(llama2_tmpl, "llama2", conv + 1, 1, true, "<s>", "</s>", "<s>[INST] Hello [/INST]");
    const kiln_chat_message bad[] = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    check_fails(llama2_tmpl, bad, 3, KILN_ERR_INVALID_ARG, "alternate");
    const kiln_chat_message bad2[] = {{"assistant", "a"}};
    check_fails(llama2_tmpl, bad2, 1, KILN_ERR_INVALID_ARG, "message 0 is 'assistant'");
    const kiln_chat_message bad3[] = {{"user", "a"}, {"tool", "b"}};
    check_fails(llama2_tmpl, bad3, 2, KILN_ERR_INVALID_ARG, "role 'tool'");
}

/* meta-llama/Meta-Llama-3-8B-Instruct */
static const char llama3_tmpl[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif "
    "%}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/* the system-block part of meta-llama/Llama-3.1-8B-Instruct (tools elided) */
static const char llama31_tmpl[] =
    "{{- bos_token }}\n{%- if not date_string is defined %}\n    {%- set date_string = \"26 Jul "
    "2024\" %}\n{%- endif %}\n{%- if messages[0]['role'] == 'system' %}\n    {%- set "
    "system_message = messages[0]['content']|trim %}\n    {%- set messages = messages[1:] %}\n{%- "
    "else %}\n    {%- set system_message = \"\" %}\n{%- endif %}\n{{- "
    "\"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n{{- \"Cutting Knowledge Date: "
    "December 2023\\n\" }}\n{{- \"Today Date: \" + date_string + \"\\n\\n\" }}\n{{- "
    "system_message }}\n{{- \"<|eot_id|>\" }}\n{%- for message in messages %}\n    {{- "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | "
    "trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- "
    "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n";

static void test_llama3(void **state) {
    (void)state;
    const char *turns = "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nWho are you<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nI am an "
                        "assistant<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nAnother question<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n";
    char want[2048];
    snprintf(want, sizeof want,
             "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
             "assistant<|eot_id|>%s",
             turns);
    check(llama3_tmpl, "llama3", conv, N_CONV, true, "<|begin_of_text|>", "<|eot_id|>", want);
    snprintf(want, sizeof want,
             "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge "
             "Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful "
             "assistant<|eot_id|>%s",
             turns);
    check(llama31_tmpl, "llama3", conv, N_CONV, true, "<|begin_of_text|>", "<|eot_id|>", want);
}

/* mistralai/Mistral-7B-Instruct-v0.2 (the original, without a system role) */
static const char mistral_legacy_tmpl[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

/* mistralai 'v1' template with a system prompt (Mistral-7B-Instruct-v0.2, updated) */
static const char mistral_v1_tmpl[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = "
    "messages[0]['content'] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- "
    "set loop_messages = messages %}\n{%- endif %}\n\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\n       "
    " "
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == "
    "'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' "
    "[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else "
    "%}\n            {{- ' [INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n  "
    "  {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + message['content'] + "
    "eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles are "
    "supported, with the exception of an initial optional system message!') }}\n    {%- endif "
    "%}\n{%- endfor %}\n";

/* the message loop of mistralai/Mistral-7B-Instruct-v0.3 ('v3'; tool branches elided) */
static const char mistral_v3_tmpl[] =
    "{%- if messages[0][\"role\"] == \"system\" %}\n    {%- set system_message = "
    "messages[0][\"content\"] %}\n    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    "
    "{%- set loop_messages = messages %}\n{%- endif %}\n{{- bos_token }}\n{%- for message in "
    "loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        {%- if loop.last and "
    "system_message is defined %}\n            {{- \"[INST] \" + system_message + \"\\n\\n\" + "
    "message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- \"[INST] \" + "
    "message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- elif message[\"role\"] "
    "== \"assistant\" %}\n        {{- \" \" + message[\"content\"]|trim + eos_token}}\n    {%- "
    "endif %}\n{%- endfor %}\n";

/* the same for Mistral-Nemo-Instruct-2407 ('v3-tekken') */
static const char mistral_v3t_tmpl[] =
    "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == "
    "\"user\" %}\n        {%- if loop.last and system_message is defined %}\n            {{- "
    "\"[INST]\" + system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        "
    "{%- else %}\n            {{- \"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n        {%- "
    "endif %}\n    {%- elif message[\"role\"] == \"assistant\" %}\n        {{- "
    "message[\"content\"] + eos_token}}\n    {%- endif %}\n{%- endfor %}\n";

/* mistralai/Mistral-Large-Instruct-2411 ('v7') */
static const char mistral_v7_tmpl[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' "
    "+ message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' "
    "+ message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}";

static void test_mistral(void **state) {
    (void)state;
    check(mistral_legacy_tmpl, "mistral-legacy", conv + 1, N_CONV - 1, true, "<s>", "</s>",
          "<s>[INST] Hello [/INST]Hi there</s>[INST] Who are you [/INST]   I am an assistant   "
          "</s>[INST] Another question [/INST]");
    check_fails(mistral_legacy_tmpl, conv, N_CONV, KILN_ERR_INVALID_ARG, "no system message");
    check(mistral_v1_tmpl, "mistral-v1", conv, N_CONV, true, "<s>", "</s>",
          "<s> [INST] You are a helpful assistant\n\nHello [/INST] Hi there</s> [INST] Who are "
          "you [/INST]    I am an assistant   </s> [INST] Another question [/INST]");
    check(mistral_v3_tmpl, "mistral-v3", conv, N_CONV, true, "<s>", "</s>",
          "<s>[INST] Hello[/INST] Hi there</s>[INST] Who are you[/INST] I am an "
          "assistant</s>[INST] You are a helpful assistant\n\nAnother question[/INST]");
    check(mistral_v3t_tmpl, "mistral-v3-tekken", conv, N_CONV, true, "<s>", "</s>",
          "<s>[INST]Hello[/INST]Hi there</s>[INST]Who are you[/INST]   I am an assistant   "
          "</s>[INST]You are a helpful assistant\n\nAnother question[/INST]");
    check(mistral_v7_tmpl, "mistral-v7", conv, N_CONV, true, "<s>", "</s>",
          "<s>[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST] Hi "
          "there</s>[INST] Who are you[/INST]    I am an assistant   </s>[INST] Another "
          "question[/INST]");
    const kiln_chat_message bad[] = {{"user", "a"}, {"assistant", "b"}, {"assistant", "c"}};
    check_fails(mistral_v3_tmpl, bad, 3, KILN_ERR_INVALID_ARG, "message 2 is 'assistant'");
}

/* google/gemma-7b-it */
static const char gemma_tmpl[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% "
    "set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ "
    "'<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor "
    "%}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

static void test_gemma(void **state) {
    (void)state;
    check(gemma_tmpl, "gemma", conv, N_CONV, true, "<bos>", "<eos>",
          "<bos><start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n"
          "<start_of_turn>model\nHi there<end_of_turn>\n"
          "<start_of_turn>user\nWho are you<end_of_turn>\n"
          "<start_of_turn>model\nI am an assistant<end_of_turn>\n"
          "<start_of_turn>user\nAnother question<end_of_turn>\n<start_of_turn>model\n");
    const kiln_chat_message bad[] = {{"user", "a"}, {"system", "b"}};
    check_fails(gemma_tmpl, bad, 2, KILN_ERR_INVALID_ARG, "system message must come first");
}

/* microsoft/Phi-3-small-8k-instruct */
static const char phi3_tmpl[] =
    "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + "
    "message['content'] + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}";

/* HuggingFaceH4/zephyr-7b-beta (newlines between the tags, trimmed by trim_blocks) */
static const char zephyr_tmpl[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' "
    "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

static void test_phi3_zephyr(void **state) {
    (void)state;
    const char *body = "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n"
                       "<|assistant|>\nHi there<|end|>\n<|user|>\nWho are you<|end|>\n"
                       "<|assistant|>\n   I am an assistant   <|end|>\n"
                       "<|user|>\nAnother question<|end|>\n";
    char want[1024];
    snprintf(want, sizeof want, "<s>%s<|assistant|>\n", body);
    check(phi3_tmpl, "phi3", conv, N_CONV, true, "<s>", "<|endoftext|>", want);
    snprintf(want, sizeof want, "<s>%s<|endoftext|>", body);
    check(phi3_tmpl, "phi3", conv, N_CONV, false, "<s>", "<|endoftext|>", want);
    check(zephyr_tmpl, "zephyr", conv, N_CONV, true, "<s>", "</s>",
          "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n"
          "<|assistant|>\nHi there</s>\n<|user|>\nWho are you</s>\n"
          "<|assistant|>\n   I am an assistant   </s>\n<|user|>\nAnother question</s>\n"
          "<|assistant|>\n");
}

static void test_names_and_errors(void **state) {
    (void)state;
    struct chat_template t;
    const char *unknown = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    assert_int_equal(chat_template_detect(unknown, strlen(unknown), &t), KILN_ERR_UNSUPPORTED);
    assert_non_null(strstr(kiln_last_error(), "--chat-template"));
    assert_int_equal(chat_template_named("alpaca", &t), KILN_ERR_NOT_FOUND);
    assert_non_null(strstr(kiln_last_error(), "chatml"));
    for (int f = CHAT_UNKNOWN + 1; f < CHAT_FAMILY_COUNT; f++) {
        assert_int_equal(chat_template_named(chat_family_name((enum chat_family)f), &t), KILN_OK);
        assert_int_equal(t.family, f);
        char *out;
        size_t len;
        /* every family renders a plain user turn */
        assert_int_equal(chat_render(&t, conv + 1, 1, true, "<s>", "</s>", &out, &len), KILN_OK);
        assert_non_null(strstr(out, "Hello"));
        free(out);
    }
    assert_int_equal(chat_template_named("qwen", &t), KILN_OK);
    assert_int_equal(t.family, CHAT_CHATML);
    assert_string_equal(chat_family_stops(CHAT_CHATML)[0], "<|im_end|>");
}

/* ---- with a model ---- */

struct collect {
    char text[512];
    size_t n;
};

static int collect(void *user, int32_t id, const char *text, size_t len) {
    (void)id;
    struct collect *c = user;
    if (c->n + len < sizeof c->text) memcpy(c->text + c->n, text, len), c->n += len;
    c->text[c->n] = 0;
    return 0;
}

static void test_model_chat(void **state) {
    (void)state;
    char buf[1024];
    const char *path = TEST_DATA_OR_SKIP("models/stories260K.gguf", buf);
    kiln_model *m = kiln_model_load(path, NULL);
    assert_non_null(m);
    size_t len;
    assert_null(kiln_model_chat_template(m, &len));
    assert_null(kiln_chat_template_family(m, NULL));
    assert_non_null(strstr(kiln_last_error(), "no chat template"));
    char text[512];
    assert_int_equal(kiln_chat_format(m, NULL, conv, 2, 1, text, sizeof text, &len),
                     KILN_ERR_NOT_FOUND);
    assert_int_equal(kiln_chat_format(m, "chatml", conv, 2, 1, text, 8, &len), KILN_ERR_RANGE);
    assert_int_equal(kiln_chat_format(m, "chatml", conv, 2, 1, text, sizeof text, &len), KILN_OK);
    assert_int_equal(strlen(text), len);

    /* control tokens written as text become the tokens; BOS is not doubled */
    int32_t ids[64], plain[64];
    size_t n, np;
    const char *s = "<s>Hi</s>";
    assert_int_equal(kiln_tokenize_special(m, s, strlen(s), 1, ids, 64, &n), KILN_OK);
    assert_int_equal(kiln_tokenize(m, "Hi", 2, 0, plain, 64, &np), KILN_OK);
    assert_int_equal(n, np + 2);
    assert_int_equal(ids[0], kiln_token_bos(m));
    assert_memory_equal(ids + 1, plain, np * sizeof *ids);
    assert_int_equal(ids[n - 1], kiln_token_eos(m));
    assert_int_equal(kiln_tokenize_special(m, s, strlen(s), 1, ids, 2, &n), KILN_ERR_RANGE);
    assert_int_equal(n, np + 2);
    /* text that only looks like a control token stays text */
    const char *lookalike = "<s Hi</s";
    assert_int_equal(kiln_tokenize_special(m, lookalike, strlen(lookalike), 0, ids, 64, &n),
                     KILN_OK);
    assert_int_equal(kiln_tokenize(m, lookalike, strlen(lookalike), 0, plain, 64, &np), KILN_OK);
    assert_int_equal(n, np);
    assert_memory_equal(ids, plain, np * sizeof *ids);

    /* a follow-up prompt that extends the first reuses the cache and gives the
     * same greedy continuation as a fresh context */
    kiln_ctx_params cp = {.n_ctx = 256, .n_threads = 1};
    kiln_ctx *c = kiln_ctx_create(m, &cp, NULL), *fresh = kiln_ctx_create(m, &cp, NULL);
    kiln_gen_params gp = kiln_gen_default_params();
    gp.sampling.temp = 0;
    gp.n_predict = 8;
    int32_t p1[128], p2[128];
    size_t n1, n2;
    const char *t1 = "Once upon a time", *t2 = "Once upon a time, there was a little girl";
    assert_int_equal(kiln_tokenize(m, t1, strlen(t1), 1, p1, 128, &n1), KILN_OK);
    assert_int_equal(kiln_tokenize(m, t2, strlen(t2), 1, p2, 128, &n2), KILN_OK);
    struct collect a = {.n = 0}, b = {.n = 0};
    kiln_gen_stats st;
    assert_int_equal(kiln_generate_tokens(c, p1, (int32_t)n1, &gp, collect, &a, &st), KILN_OK);
    assert_int_equal(st.n_cached, 0);
    a.n = 0;
    assert_int_equal(kiln_generate_tokens(c, p2, (int32_t)n2, &gp, collect, &a, &st), KILN_OK);
    print_message("  second prompt: %d tokens reused from the cache, %d prefilled\n", st.n_cached,
                  st.n_prompt);
    assert_true(st.n_cached >= (int32_t)n1);
    assert_int_equal(st.n_cached + st.n_prompt, (int32_t)n2);
    assert_int_equal(kiln_generate_tokens(fresh, p2, (int32_t)n2, &gp, collect, &b, &st), KILN_OK);
    assert_string_equal(a.text, b.text);
    /* a prompt that shares only a prefix with the cache keeps that prefix (the
     * longest common one, less the last prompt token, which runs for its logits) */
    assert_int_equal(kiln_generate_tokens(c, p1, (int32_t)n1, &gp, NULL, NULL, &st), KILN_OK);
    assert_int_equal(st.n_cached, (int32_t)n1 - 1);
    assert_int_equal(st.n_prompt, 1);

    /* stop strings: the text ends before the stop string, finish says why */
    gp.n_predict = 32;
    const char *stop[] = {"Lily"};
    gp.stop = stop;
    gp.n_stop = 1;
    a.n = 0;
    assert_int_equal(kiln_generate(c, t1, strlen(t1), &gp, collect, &a, &st), KILN_OK);
    assert_int_equal(st.finish, KILN_FINISH_STOP);
    assert_string_equal(a.text, ", there was a little girl named ");
    kiln_ctx_free(c);
    kiln_ctx_free(fresh);
    kiln_model_free(m);
}

/* A byte-level BPE vocabulary's control token ("<|endoftext|>" in GPT-2's),
 * back to back and between text, becomes its one id each time. */
static void test_tokenize_special_bpe(void **state) {
    (void)state;
    char buf[1024];
    const char *path = TEST_DATA_OR_SKIP("models/mini-qwen2-Q8_0.gguf", buf);
    kiln_model *m = kiln_model_load(path, NULL);
    assert_non_null(m);
    int32_t eot[4], text[64], ids[64];
    size_t ne, nt, n;
    assert_int_equal(kiln_tokenize_special(m, "<|endoftext|>", 13, 0, eot, 4, &ne), KILN_OK);
    assert_int_equal(ne, 1);
    assert_int_equal(kiln_tokenize(m, "user\nHi", 7, 0, text, 64, &nt), KILN_OK);
    assert_true(nt >= 2);
    const char *s = "<|endoftext|><|endoftext|>user\nHi<|endoftext|>";
    assert_int_equal(kiln_tokenize_special(m, s, strlen(s), 0, ids, 64, &n), KILN_OK);
    assert_int_equal(n, nt + 3);
    assert_int_equal(ids[0], eot[0]);
    assert_int_equal(ids[1], eot[0]);
    assert_memory_equal(ids + 2, text, nt * sizeof *ids);
    assert_int_equal(ids[n - 1], eot[0]);
    kiln_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chatml),
        cmocka_unit_test(test_llama2),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_gemma),
        cmocka_unit_test(test_phi3_zephyr),
        cmocka_unit_test(test_names_and_errors),
        cmocka_unit_test(test_model_chat),
        cmocka_unit_test(test_tokenize_special_bpe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
