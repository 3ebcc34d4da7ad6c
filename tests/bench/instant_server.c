/* instant_server.c - an OpenAI-compatible stub that answers every request
 * at once, for measuring kiln bench's own overhead (docs/bench.md): any
 * POST gets a complete, fixed SSE stream (one content event, usage,
 * [DONE]) with a Content-Length, so connections stay alive; GET /v1/models
 * lists "instant". libmicrohttpd, one internal epoll thread. Prints
 * "PORT <n>" and serves until killed; on SIGTERM/SIGINT it prints the CPU
 * it used. Built by tests/bench/overhead.sh, not by CMake (a measurement
 * tool, not part of kiln):
 *   cc -O2 -o instant_server instant_server.c $(pkg-config --cflags --libs libmicrohttpd)
 */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char sse_body[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\n"
    "data: [DONE]\n\n";
static const char models_body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"instant\"}]}";

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **con_cls) {
    (void)cls, (void)url, (void)version, (void)upload;
    static int marker;
    if (!*con_cls) { /* first call: headers only */
        *con_cls = &marker;
        return MHD_YES;
    }
    if (*upload_size) { /* body: discard */
        *upload_size = 0;
        return MHD_YES;
    }
    bool get = !strcmp(method, "GET");
    const char *body = get ? models_body : sse_body;
    size_t len = get ? sizeof models_body - 1 : sizeof sse_body - 1;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, "Content-Type", get ? "application/json" : "text/event-stream");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static volatile sig_atomic_t stop;
static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(void) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_EPOLL_INTERNAL_THREAD, 0, NULL, NULL, handler,
                                            NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                            MHD_OPTION_CONNECTION_LIMIT, 4096u,
                                            MHD_OPTION_CONNECTION_TIMEOUT, 60u, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "instant_server: cannot start\n");
        return 1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("PORT %u\n", info ? info->port : 0);
    fflush(stdout);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    while (!stop) pause();
    MHD_stop_daemon(d);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "instant_server: cpu %.3f s\n",
            ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
                ru.ru_stime.tv_usec * 1e-6);
    return 0;
}
