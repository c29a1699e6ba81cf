/*
 * shipline-step: the `shipline` that steps find first on PATH while the engine's step server runs.
 *
 * It does what `shipline.launch.call_step_server` does, without starting Python (about 8 ms of CPU
 * per call, most of what a served `shipline step` costs): it sends its arguments, working folder,
 * environment and standard streams to the step server named in $SHIPLINE_STEP_SOCKET, waits for
 * the command's exit code and exits with it.  Anything else (not `shipline step ...`, no server to
 * reach, a request the server refuses) is handed to the installed `shipline` named in
 * $SHIPLINE_STEP_FALLBACK, unchanged.  The protocol is in src/shipline/launch.py.
 *
 * Built by `make install` when a C compiler is there (`cc -O2 -o .venv/bin/shipline-step`); without
 * it, steps reach the server through a Python client, which works the same.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const char PROTOCOL[] = "shipline-step/1";

static void fallback(char **argv) {
    const char *real = getenv("SHIPLINE_STEP_FALLBACK");
    if (real == NULL || *real == '\0') {
        fputs("shipline: no step server answered and $SHIPLINE_STEP_FALLBACK is not set: cannot run this command\n", stderr);
        exit(127);
    }
    argv[0] = (char *)real;
    execv(real, argv);
    fprintf(stderr, "shipline: cannot run %s: ", real);
    perror(NULL);
    exit(127);
}

static int send_all(int sock, const char *data, size_t size) {
    while (size > 0) {
        ssize_t sent = send(sock, data, size, MSG_NOSIGNAL);
        if (sent <= 0) return -1;
        data += sent;
        size -= (size_t)sent;
    }
    return 0;
}

/* The request: a 4-byte big-endian length, then NUL-separated fields (protocol, cwd, argc, argv..., NAME=VALUE...). */
static char *request(int argc, char **argv, size_t *size) {
    char cwd[PATH_MAX], count[16];
    if (getcwd(cwd, sizeof cwd) == NULL) return NULL;
    snprintf(count, sizeof count, "%d", argc);
    const char *fixed[] = {PROTOCOL, cwd, count};
    size_t length = 0, fields = 0;
    for (size_t i = 0; i < 3; i++, fields++) length += strlen(fixed[i]);
    for (int i = 0; i < argc; i++, fields++) length += strlen(argv[i]);
    for (char **e = environ; *e != NULL; e++, fields++) length += strlen(*e);
    length += fields - 1; /* the separators */
    if (length > 0x7fffffff) return NULL;
    char *buffer = malloc(4 + length + 1), *at = buffer + 4;
    if (buffer == NULL) return NULL;
    buffer[0] = (char)(length >> 24), buffer[1] = (char)(length >> 16), buffer[2] = (char)(length >> 8), buffer[3] = (char)length;
    for (size_t i = 0; i < 3; i++) at = stpcpy(at, fixed[i]) + 1;
    for (int i = 0; i < argc; i++) at = stpcpy(at, argv[i]) + 1;
    for (char **e = environ; *e != NULL; e++) at = stpcpy(at, *e) + 1;
    *size = 4 + length;
    return buffer;
}

int main(int argc, char **argv) {
    const char *address = getenv("SHIPLINE_STEP_SOCKET");
    if (address == NULL || *address == '\0' || argc < 2 || strcmp(argv[1], "step") != 0) fallback(argv);

    struct sockaddr_un where = {.sun_family = AF_UNIX};
    size_t name = strlen(address);
    if (name + 1 > sizeof where.sun_path) fallback(argv);
    memcpy(where.sun_path + 1, address, name); /* sun_path[0] == 0: an abstract socket */
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || connect(sock, (struct sockaddr *)&where, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + name)) != 0)
        fallback(argv);

    size_t size = 0;
    char *data = request(argc, argv, &size);
    if (data == NULL) fallback(argv);
    /* The first part goes with the three descriptors; the rest, if any, after it. */
    int fds[3] = {0, 1, 2};
    char control[CMSG_SPACE(sizeof fds)];
    memset(control, 0, sizeof control);
    struct iovec part = {.iov_base = data, .iov_len = size};
    struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control};
    struct cmsghdr *rights = CMSG_FIRSTHDR(&message);
    rights->cmsg_level = SOL_SOCKET;
    rights->cmsg_type = SCM_RIGHTS;
    rights->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(rights), fds, sizeof fds);
    ssize_t sent = sendmsg(sock, &message, MSG_NOSIGNAL);
    if (sent <= 0) fallback(argv); /* nothing reached the server: nothing ran */
    if (send_all(sock, data + sent, size - (size_t)sent) != 0) {
        fputs("shipline: the step server stopped reading this command's request; see the engine's log\n", stderr);
        return 1;
    }
    free(data);

    /* From here the command may run: a server that goes away is this call's failure, never a reason to run it twice. */
    char reply[64];
    size_t got = 0;
    while (got < sizeof reply - 1) {
        ssize_t n = recv(sock, reply + got, sizeof reply - 1 - got, 0);
        if (n <= 0) break;
        got += (size_t)n;
        if (reply[got - 1] == '\n') break;
    }
    reply[got] = '\0';
    struct timespec cpu;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu) == 0) { /* this process's CPU time, for the server's account */
        char report[32];
        int length = snprintf(report, sizeof report, "%ld.%06ld", (long)cpu.tv_sec, cpu.tv_nsec / 1000);
        send_all(sock, report, (size_t)length);
    }
    close(sock);
    if (strcmp(reply, "refused") == 0) fallback(argv);
    char *end = NULL;
    long code = strtol(reply, &end, 10);
    if (got == 0 || end == reply || (*end != '\n' && *end != '\0') || code < 0 || code > 255) {
        fputs("shipline: the step server ended before this command did; see the engine's log\n", stderr);
        return 1;
    }
    return (int)code;
}
