/* conns.c - the connection guard of `kiln serve`: every open HTTP
 * connection, what it is waiting for, and the deadlines and limits that keep
 * slow or idle clients from starving the others (docs/server.md, "Security
 * and limits").
 *
 * libmicrohttpd's own timeout is an idle timer that every byte resets, so a
 * client trickling a request at 1 byte/s would hold its connection for ever.
 * Here each connection has a phase and the time it entered it:
 *   NEW   accepted, no request line yet      closed after header_timeout
 *   IDLE  keep-alive, between requests        closed after idle_timeout
 *   HEAD  request line read, headers pending  closed after header_timeout
 *   BODY  headers read, body arriving         closed when the body's average
 *                                             rate, after header_timeout,
 *                                             falls under body_min_rate
 *   BUSY  request complete (answering)        not timed here
 * The watcher thread calls conns_reap() every 100 ms; a connection past its
 * deadline is shut down (shutdown(2): libmicrohttpd then sees the end of the
 * stream and closes it), after a canned 408 when a request had begun. Idle
 * connections are also shut down when the server drains or when the open
 * connections pass the soft limit (then the header timeout is 0.25 s), so new
 * clients always get a place.
 *
 * Invariant: a srv_conn is in s->conns while libmicrohttpd holds its socket
 * open; MHD's CLOSED notification (which comes before it closes the socket)
 * unlinks it under s->conn_mu, and conns_reap() touches sockets only under
 * that lock, so it never shuts down a reused descriptor. Phase fields are
 * written by the connection's MHD thread and read by the watcher, both under
 * s->conn_mu. */
#include "base/log.h"
#include "base/time.h"
#include "server/srv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    char addr[64];
    srv_conn_phase phase;
    double t_phase;    /* when it entered the phase */
    uint64_t body_got; /* BODY: bytes received so far */
    bool bad_uri, killed;
};

static void addr_text(const struct sockaddr *sa, char *buf, size_t cap) {
    buf[0] = 0;
    if (!sa) return;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, (socklen_t)cap);
}

void srv_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe) {
    srv *s = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        srv_conn *k = calloc(1, sizeof *k);
        if (!k) return; /* untracked: MHD's own idle timeout still applies */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        addr_text(ci ? ci->client_addr : NULL, k->addr, sizeof k->addr);
        k->phase = SRV_C_NEW;
        k->t_phase = kiln_now_s();
        pthread_mutex_lock(&s->conn_mu);
        k->next = s->conns;
        if (s->conns) s->conns->prev = k;
        s->conns = k;
        s->n_conns++;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = k;
        return;
    }
    srv_conn *k = *socket_context;
    if (!k) return;
    *socket_context = NULL;
    pthread_mutex_lock(&s->conn_mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next) k->next->prev = k->prev;
    s->n_conns--;
    pthread_mutex_unlock(&s->conn_mu);
    free(k);
}

srv_conn *srv_conn_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* True when the raw (still escaped) request target holds a NUL: "%00". */
static bool has_nul_escape(const char *uri) {
    for (const char *p = uri; (p = strchr(p, '%')); p++)
        if (p[1] == '0' && p[2] == '0') return true;
    return false;
}

void *srv_conn_uri(void *cls, const char *uri, struct MHD_Connection *c) {
    srv *s = cls;
    srv_conn *k = srv_conn_of(c);
    if (k) {
        pthread_mutex_lock(&s->conn_mu);
        k->phase = SRV_C_HEAD;
        k->t_phase = kiln_now_s();
        k->bad_uri = has_nul_escape(uri);
        pthread_mutex_unlock(&s->conn_mu);
    }
    return NULL; /* the request object is made by the access handler */
}

bool srv_conn_bad_uri(srv *s, srv_conn *k) {
    if (!k) return false;
    pthread_mutex_lock(&s->conn_mu);
    bool bad = k->bad_uri;
    pthread_mutex_unlock(&s->conn_mu);
    return bad;
}

void srv_conn_phase_set(srv *s, srv_conn *k, srv_conn_phase phase) {
    if (!k) return;
    pthread_mutex_lock(&s->conn_mu);
    if (k->phase != phase) {
        k->phase = phase;
        k->t_phase = kiln_now_s();
        k->body_got = 0;
    }
    pthread_mutex_unlock(&s->conn_mu);
}

void srv_conn_body(srv *s, srv_conn *k, size_t n) {
    if (!k) return;
    pthread_mutex_lock(&s->conn_mu);
    k->body_got += n;
    pthread_mutex_unlock(&s->conn_mu);
}

int srv_conn_count(srv *s) {
    pthread_mutex_lock(&s->conn_mu);
    int n = s->n_conns;
    pthread_mutex_unlock(&s->conn_mu);
    return n;
}

/* ---- the reaper */

/* Why k must close now, or NULL. Over the connection limit, idle
 * connections make room at once and the header timeout shrinks to 0.25 s, so
 * slow clients cannot hold every place; while draining, idle ones close
 * after 2 s (time for a last request on them to read /health's
 * "draining"). */
static const char *overdue(const srv *s, const srv_conn *k, double now, bool full, bool draining) {
    double age = now - k->t_phase;
    double head_limit = full ? 0.25 : s->header_timeout;
    switch (k->phase) {
    case SRV_C_NEW:
        return age > head_limit ? "no request within the header timeout" : NULL;
    case SRV_C_IDLE:
        if (full) return "idle keep-alive connection closed (connection limit)";
        if (draining && age > 2.0) return "idle keep-alive connection closed (draining)";
        return age > s->idle_timeout ? "idle keep-alive connection timed out" : NULL;
    case SRV_C_HEAD:
        return age > head_limit ? "request head not received within the header timeout" : NULL;
    case SRV_C_BODY:
        if (age <= head_limit) return NULL;
        return (double)k->body_got < s->body_min_rate * age
                   ? "request body arriving slower than the minimum rate"
                   : NULL;
    default:
        return NULL;
    }
}

static void send_408(int fd) {
    static const char body[] =
        "{\"error\":{\"message\":\"the request was not received in time (slow client); see "
        "--header-timeout and --body-min-rate\",\"type\":\"invalid_request_error\",\"param\":"
        "null,\"code\":\"request_timeout\"}}";
    char msg[512];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof body - 1, body);
    if (n > 0 && (size_t)n < sizeof msg)
        (void)!send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
}

void srv_conns_reap(srv *s) {
    double now = kiln_now_s();
    int killed = 0;
    const char *why_last = NULL;
    char addr_last[64] = "";
    pthread_mutex_lock(&s->conn_mu);
    bool full = s->n_conns > s->max_conns, draining = atomic_load(&s->stopping);
    for (srv_conn *k = s->conns; k; k = k->next) {
        if (k->killed || k->fd < 0) continue;
        const char *why = overdue(s, k, now, full, draining);
        if (!why) continue;
        if (k->phase == SRV_C_HEAD || k->phase == SRV_C_BODY) send_408(k->fd);
        shutdown(k->fd, SHUT_RDWR);
        k->killed = true;
        killed++;
        if (k->phase != SRV_C_IDLE) {
            why_last = why;
            snprintf(addr_last, sizeof addr_last, "%s", k->addr);
        }
    }
    pthread_mutex_unlock(&s->conn_mu);
    if (why_last)
        srv_log_limited(s, "kiln serve: closed %d connection(s), e.g. from %s: %s", killed,
                        addr_last, why_last);
}
