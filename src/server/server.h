/* server.h - the OpenAI-compatible HTTP server behind `kiln serve`: its
 * configuration and lifecycle. The server owns a libmicrohttpd daemon, a
 * kiln_registry of models (loaded in a background thread at start), and a
 * metrics registry; it talks to the engine only through kiln.h. */
#ifndef KILN_SERVER_SERVER_H
#define KILN_SERVER_SERVER_H

#include "kiln.h"

#include <stddef.h>
#include <stdint.h>

typedef struct srv_model_cfg {
    const char *name; /* the request's "model" value */
    const char *path; /* GGUF file */
    int pin;          /* never unloaded */
} srv_model_cfg;

typedef struct srv_config {
    const char *host;          /* address to bind: "127.0.0.1", "0.0.0.0", "::1" ... */
    int port;                  /* 0: a free port (see srv_port) */
    int http_threads;          /* MHD worker threads; 0: 4 */
    const char *api_key;       /* NULL: no authentication */
    size_t max_body;           /* request body limit in bytes (413 above it); 0: 8 MiB */
    double conn_timeout_s;     /* keep-alive idle timeout; 0: 60 s */
    double header_timeout_s;   /* a request line and headers must arrive within; 0: 10 s */
    double body_min_rate;      /* bytes/s a body must average after header_timeout_s; 0: 1024,
                                  < 0: no minimum */
    int max_conns;             /* open connections before 503 + idle eviction; 0: 1024 */
    int max_conns_per_ip;      /* connections from one address; 0: 64, < 0: no limit */
    const char *metrics_key;   /* key /metrics requires; NULL: the API key unless public_metrics */
    int public_metrics;        /* 1: /metrics open even with api_key */
    int diagnostics;           /* 1: serve the diagnostics endpoints (api_diag.c) */
    const char *const *cors;   /* allowed origins ("*" for any); NULL-terminated or NULL: off */
    const char *chat_template; /* family for every chat model; NULL: the model's (chatml when it has
                                  none) */
    double log_stats_interval_s; /* a stats line this often while busy; 0: none */
    double slow_request_ms;      /* log and count requests slower end-to-end; 0: off */
    kiln_registry_params reg;    /* registry, scheduler and batcher parameters */
    const srv_model_cfg *models;
    int n_models;
} srv_config;

typedef struct srv srv;

/* Creates the server: registers the models (each file is checked now),
 * binds and starts answering, and starts loading the models in a background
 * thread (/health answers 503 until they are loaded). Strings in c are
 * copied. NULL and *st on failure with kiln_last_error() saying why (a
 * model file, the address in use). */
srv *srv_create(const srv_config *c, kiln_status *st);

/* The port the server listens on (the actual one when c->port was 0). */
int srv_port(const srv *s);

/* Graceful stop: stops accepting connections, lets requests in flight
 * finish for up to deadline_s seconds, then cancels the rest and stops the
 * HTTP daemon. Call once, from one thread. */
void srv_shutdown(srv *s, double deadline_s);

/* Frees everything (calls srv_shutdown(s, 0) when it was not called).
 * NULL is a no-op. */
void srv_destroy(srv *s);

#endif
