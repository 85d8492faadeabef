/* The daemon's answer, taken apart as it arrives in pieces of any size: a status byte, the
 * length of what goes to stdout, that much for stdout, the rest for stderr. No allocation,
 * no buffering: bytes go straight to the two sinks. Fuzzed by fuzz_reply.c. */
#ifndef SENDWORX_REPLY_H
#define SENDWORX_REPLY_H
#include <stddef.h>
#include <stdint.h>

typedef void (*reply_sink)(void *context, const unsigned char *data, size_t size);

struct reply {
    int status;             /* -1 until the first byte */
    unsigned header;        /* header bytes seen (status + 4 length bytes) */
    uint32_t stdout_left;   /* stdout bytes still to come */
    reply_sink out, err;
    void *out_context, *err_context;
};

static inline void reply_start(struct reply *r, reply_sink out, void *out_context,
                               reply_sink err, void *err_context) {
    r->status = -1;
    r->header = 0;
    r->stdout_left = 0;
    r->out = out;
    r->out_context = out_context;
    r->err = err;
    r->err_context = err_context;
}

static inline void reply_feed(struct reply *r, const unsigned char *data, size_t size) {
    while (size > 0 && r->header < 5) {
        if (r->header == 0)
            r->status = data[0];
        else
            r->stdout_left = (r->stdout_left << 8) | data[0];
        r->header++;
        data++;
        size--;
    }
    if (size > 0 && r->stdout_left > 0) {
        size_t part = size < r->stdout_left ? size : r->stdout_left;
        r->out(r->out_context, data, part);
        r->stdout_left -= (uint32_t)part;
        data += part;
        size -= part;
    }
    if (size > 0)
        r->err(r->err_context, data, size);
}

/* The exit status, or -1 if the answer was cut short (no whole header, stdout missing). */
static inline int reply_status(const struct reply *r) {
    if (r->header < 5 || r->stdout_left > 0)
        return -1;
    return r->status;
}
#endif
