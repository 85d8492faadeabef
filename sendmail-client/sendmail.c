/*
 * sendmail, mailq, newaliases: the client every local account runs, PHP's mail() for each
 * message. It carries argv and standard input to the sendworx submission daemon over
 * /run/sendworx/submit.sock and prints its answer; it decides nothing and parses nothing
 * (src/sendworx/inject/submission_protocol.py has the protocol, submitd.py the decisions).
 * Who the caller is, the daemon learns from the kernel (SO_PEERCRED), not from us: this
 * program needs no privilege and is installed without setuid or setgid.
 *
 *   request: "SWX1" argc:u32 (len:u32 bytes){argc} stdin...      (big-endian)
 *   reply:   status:u8 stdout_len:u32 stdout stderr...
 *
 * Standard input is sent until it ends or the daemon starts answering (it answers at
 * sendmail's "." line, which only it recognises). Exit status: the daemon's; 75 (EX_TEMPFAIL)
 * when it cannot be reached or gives no answer, so mail() returns false and nothing is lost
 * silently.
 */
#define _GNU_SOURCE
#include "reply.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef SUBMIT_SOCKET
#define SUBMIT_SOCKET "/run/sendworx/submit.sock"
#endif
#define EX_TEMPFAIL 75
#define CHUNK 65536
#define TIMEOUT_MS (600 * 1000)

static const char *program = "sendmail";

static int fail(const char *what, const char *detail) {
    fprintf(stderr, "%s: %s%s%s; nothing was queued\n", program, what, detail ? ": " : "",
            detail ? detail : "");
    return EX_TEMPFAIL;
}

static int write_all(int fd, const void *data, size_t size) {
    const unsigned char *p = data;
    while (size > 0) {
        ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        size -= (size_t)n;
    }
    return 0;
}

static int write_u32(int fd, uint32_t value) {
    unsigned char b[4] = {value >> 24, value >> 16, value >> 8, value};
    return write_all(fd, b, 4);
}

static int send_request(int fd, int argc, char **argv) {
    if (write_all(fd, "SWX1", 4) < 0 || write_u32(fd, (uint32_t)argc) < 0)
        return -1;
    for (int i = 0; i < argc; i++) {
        size_t length = strlen(argv[i]);
        if (length > UINT32_MAX || write_u32(fd, (uint32_t)length) < 0 ||
            write_all(fd, argv[i], length) < 0)
            return -1;
    }
    return 0;
}

/* Standard input to the daemon until it ends or the daemon answers. */
static int pump_input(int sock) {
    static unsigned char buffer[CHUNK];
    struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
    for (;;) {
        int ready = poll(fds, 2, TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return -1;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
            return 0; /* the answer is coming */
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
            ssize_t n = (fds[1].revents & POLLNVAL) ? 0 : read(0, buffer, sizeof buffer);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                shutdown(sock, SHUT_WR);
                return 0;
            }
            if (write_all(sock, buffer, (size_t)n) < 0)
                return 0; /* it stopped reading: it has answered */
        }
    }
}

static void to_fd(void *context, const unsigned char *data, size_t size) {
    int fd = *(int *)context;
    while (size > 0) {
        ssize_t n = write(fd, data, size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        data += n;
        size -= (size_t)n;
    }
}

int main(int argc, char **argv) {
    static unsigned char buffer[CHUNK];
    int out = 1, err = 2;
    if (argc > 0 && argv[0][0]) {
        const char *slash = strrchr(argv[0], '/');
        program = slash ? slash + 1 : argv[0];
    }
    signal(SIGPIPE, SIG_IGN);
    const char *path = getenv("SENDWORX_SUBMIT_SOCKET");
    if (!path || !*path)
        path = SUBMIT_SOCKET;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) < sizeof address.sun_path) {
        strcpy(address.sun_path, path);
    } else {
        /* A deep path (a developer's instance): through its directory, as the daemon binds. */
        const char *slash = strrchr(path, '/');
        char directory[4096];
        if (!slash || (size_t)(slash - path) >= sizeof directory)
            return fail("the submission socket's path is too long", path);
        memcpy(directory, path, (size_t)(slash - path));
        directory[slash - path] = '\0';
        int dir = open(directory[0] ? directory : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        int n = dir < 0 ? -1 : snprintf(address.sun_path, sizeof address.sun_path,
                                         "/proc/self/fd/%d/%s", dir, slash + 1);
        if (n < 0 || (size_t)n >= sizeof address.sun_path)
            return fail("the submission socket's path is too long", path);
    }
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return fail("cannot make a socket", strerror(errno));
    if (connect(sock, (struct sockaddr *)&address, sizeof address) < 0) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s: %s", path, strerror(errno));
        return fail("the local mail submission service does not answer", detail);
    }
    if (send_request(sock, argc > 0 ? argc : 0, argv) < 0 && errno != EPIPE)
        return fail("cannot reach the submission service", strerror(errno));
    if (pump_input(sock) < 0)
        return fail("the submission service did not answer in time", NULL);
    struct reply reply;
    reply_start(&reply, to_fd, &out, to_fd, &err);
    for (;;) {
        struct pollfd fd = {.fd = sock, .events = POLLIN};
        int ready = poll(&fd, 1, TIMEOUT_MS);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            return fail("the submission service did not answer in time", NULL);
        ssize_t n = read(sock, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        reply_feed(&reply, buffer, (size_t)n);
    }
    int status = reply_status(&reply);
    if (status < 0)
        return fail("the submission service gave no answer", NULL);
    return status;
}
