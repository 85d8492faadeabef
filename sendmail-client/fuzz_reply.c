/* libFuzzer target: any bytes, cut into pieces of any size, as the daemon's answer. It must
 * never read or write out of bounds, and every byte must reach exactly one sink, in order. */
#include "reply.h"

#include <stdlib.h>
#include <string.h>

struct collect {
    unsigned char *data;
    size_t size;
};

static void collect(void *context, const unsigned char *data, size_t size) {
    struct collect *c = context;
    memcpy(c->data + c->size, data, size);
    c->size += size;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    if (size < 1)
        return 0;
    size_t step = (size_t)data[0] % 7 + 1; /* the first byte chooses the piece size */
    data++;
    size--;
    unsigned char *out = malloc(size + 1), *err = malloc(size + 1);
    struct collect o = {out, 0}, e = {err, 0};
    struct reply reply;
    reply_start(&reply, collect, &o, collect, &e);
    for (size_t at = 0; at < size; at += step)
        reply_feed(&reply, data + at, size - at < step ? size - at : step);
    size_t body = size > 5 ? size - 5 : 0;
    if (o.size + e.size != body)
        abort();
    if (size > 5 && (memcmp(out, data + 5, o.size) || memcmp(err, data + 5 + o.size, e.size)))
        abort();
    int status = reply_status(&reply);
    if (status >= 256 || (size >= 5 && status >= 0 && status != data[0]))
        abort();
    free(out);
    free(err);
    return 0;
}
