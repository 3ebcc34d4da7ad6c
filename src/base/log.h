/* log.h - leveled logging to stderr. The level comes from KILN_LOG
 * (error|warn|info|debug; default info) the first time it is read. */
#ifndef KILN_BASE_LOG_H
#define KILN_BASE_LOG_H

enum kiln_log_level { KILN_LOG_ERROR, KILN_LOG_WARN, KILN_LOG_INFO, KILN_LOG_DEBUG };

void kiln_log(enum kiln_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define KILN_LOGE(...) kiln_log(KILN_LOG_ERROR, __VA_ARGS__)
#define KILN_LOGW(...) kiln_log(KILN_LOG_WARN, __VA_ARGS__)
#define KILN_LOGI(...) kiln_log(KILN_LOG_INFO, __VA_ARGS__)
#define KILN_LOGD(...) kiln_log(KILN_LOG_DEBUG, __VA_ARGS__)

#endif
