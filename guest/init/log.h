/* The serial console: the only place early failures can be seen. */
#ifndef CELLA_LOG_H
#define CELLA_LOG_H

void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
