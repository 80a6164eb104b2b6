/*
 * The machine's floor: a plain blocking TCP echo over loopback, the least
 * any broker's publish -> deliver round trip can cost on this machine
 * (two wake-ups and two loopback hops, no broker work at all).
 *
 *     echo server [DIR]      listens on 127.0.0.1, an ephemeral port that
 *                            it prints; echoes one connection, then exits.
 *                            With DIR, the durable echo: each read is
 *                            appended to a new file in DIR and fdatasynced
 *                            before it is echoed: what a confirm that
 *                            waits for the disk costs with the simplest
 *                            server (one group commit per read, no
 *                            broker work at all)
 *     echo client PORT RATE SECONDS [SIZE]
 *                            sends SIZE-byte messages (16 unless given,
 *                            at most 4096) at RATE msg/s for SECONDS,
 *                            prints one JSON object of round-trip
 *                            latencies in microseconds
 *
 * The client works like loadgen at a fixed rate (wrk2-style): message n is
 * due at start + n/RATE and carries that scheduled time, not the time it
 * was written, so a late send shows up as latency instead of being hidden
 * (no coordinated omission). A sender thread writes what is due, one write
 * for all of it, and sleeps until the next is due; a receiver thread reads
 * the echoes and takes one timestamp per read. TCP_NODELAY on both ends.
 * perf/run.py compiles this with the system gcc into target/ and pins the
 * server to CPU 0 and the client to CPU 1, as it pins broker and loadgen.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Message size when the client is not given one; a message holds at
 * least its sequence number and scheduled send time. */
#define MESSAGE_DEFAULT 16
#define MESSAGE_MIN 16
#define MESSAGE_MAX 4096
/* Most messages one write carries when the sender is behind. */
#define BATCH_MAX 256
/* How long the client waits for the last echoes. */
#define DRAIN_NS 5000000000ull

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void set_nodelay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        die("setsockopt TCP_NODELAY");
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* With `log` >= 0 each read is appended to that file and fdatasynced
 * before it is echoed: the simplest durable server, one group commit per
 * read, nothing in flight while it syncs (a server that overlaps syncs can
 * answer sooner on average). */
static int server(int log) {
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(listener, 1) != 0 || getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        die("listen");
    printf("%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int fd = accept(listener, NULL, NULL);
    if (fd < 0)
        die("accept");
    set_nodelay(fd);
    static char buf[64 * 1024];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        if (log >= 0 && (write_all(log, buf, (size_t)n) != 0 || fdatasync(log) != 0))
            die("log");
        if (write_all(fd, buf, (size_t)n) != 0)
            return 0;
    }
}

static int durable_server(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/perf-echo-%d", dir, (int)getpid());
    int log = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (log < 0)
        die("open the log");
    unlink(path);
    return server(log);
}

struct receiver {
    int fd;
    size_t message;
    uint64_t expected; /* set by the sender when it is done; 0 until then */
    uint64_t received;
    uint64_t *latencies;
    size_t capacity;
};

static void record(struct receiver *r, uint64_t latency_ns) {
    if (r->received == r->capacity) {
        r->capacity *= 2;
        r->latencies = realloc(r->latencies, r->capacity * sizeof *r->latencies);
        if (!r->latencies)
            die("realloc");
    }
    r->latencies[r->received] = latency_ns;
    /* The sender's thread reads the count to know when the echoes are in. */
    __atomic_store_n(&r->received, r->received + 1, __ATOMIC_RELEASE);
}

static void *receive(void *arg) {
    struct receiver *r = arg;
    static char buf[64 * 1024];
    size_t have = 0;
    for (;;) {
        ssize_t n = read(r->fd, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        uint64_t now = now_ns();
        have += (size_t)n;
        size_t whole = have / r->message * r->message;
        for (size_t at = 0; at < whole; at += r->message) {
            uint64_t scheduled;
            memcpy(&scheduled, buf + at + 8, 8);
            record(r, now > scheduled ? now - scheduled : 0);
        }
        memmove(buf, buf + whole, have - whole);
        have -= whole;
        uint64_t expected = __atomic_load_n(&r->expected, __ATOMIC_ACQUIRE);
        if (expected && r->received >= expected)
            return NULL;
    }
}

/* Sends at `rate` for `duration_ns`; returns how many were sent. */
static uint64_t send_at_rate(int fd, size_t message, double rate, uint64_t duration_ns) {
    static char buf[BATCH_MAX * MESSAGE_MAX];
    double interval_ns = 1e9 / rate;
    uint64_t start = now_ns(), sent = 0;
    for (;;) {
        uint64_t now = now_ns();
        if (now - start >= duration_ns)
            return sent;
        uint64_t due = (uint64_t)((double)(now - start) / interval_ns) + 1;
        uint64_t n = due > sent ? due - sent : 0;
        if (n > BATCH_MAX)
            n = BATCH_MAX;
        if (n == 0) {
            uint64_t next = start + (uint64_t)((double)sent * interval_ns);
            struct timespec at = {.tv_sec = next / 1000000000ull,
                                  .tv_nsec = next % 1000000000ull};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
            continue;
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t sequence = sent + i;
            uint64_t scheduled = start + (uint64_t)((double)sequence * interval_ns);
            memcpy(buf + i * message, &sequence, 8);
            memcpy(buf + i * message + 8, &scheduled, 8);
        }
        if (write_all(fd, buf, n * message) != 0)
            die("write");
        sent += n;
    }
}

static int compare_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The value at quantile q, by nearest rank, in whole microseconds. */
static uint64_t at_quantile(const uint64_t *sorted, uint64_t n, double q) {
    uint64_t rank = (uint64_t)(q * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    return sorted[(rank > n ? n : rank) - 1] / 1000;
}

static void print_json(double rate, double seconds, uint64_t sent, struct receiver *r) {
    static const struct {
        const char *label;
        double q;
    } quantiles[] = {{"p50", 0.5},   {"p75", 0.75},   {"p90", 0.9},       {"p95", 0.95},
                     {"p99", 0.99},  {"p99.9", 0.999}, {"p99.99", 0.9999}};
    uint64_t n = r->received;
    qsort(r->latencies, n, sizeof *r->latencies, compare_u64);
    printf("{\"rate\": %.0f, \"duration_s\": %.3f, \"sent\": %llu, \"received\": %llu, "
           "\"latency_us\": {\"count\": %llu",
           rate, seconds, (unsigned long long)sent, (unsigned long long)n,
           (unsigned long long)n);
    if (n > 0) {
        for (size_t i = 0; i < sizeof quantiles / sizeof quantiles[0]; i++)
            printf(", \"%s\": %llu", quantiles[i].label,
                   (unsigned long long)at_quantile(r->latencies, n, quantiles[i].q));
        printf(", \"min\": %llu, \"max\": %llu", (unsigned long long)(r->latencies[0] / 1000),
               (unsigned long long)(r->latencies[n - 1] / 1000));
    }
    printf("}}\n");
}

static int client(int port, double rate, double seconds, size_t message) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("connect");
    set_nodelay(fd);
    struct receiver r = {.fd = fd, .message = message, .capacity = 1 << 16};
    r.latencies = malloc(r.capacity * sizeof *r.latencies);
    pthread_t thread;
    if (!r.latencies || pthread_create(&thread, NULL, receive, &r) != 0)
        die("start the receiver");
    uint64_t sent = send_at_rate(fd, message, rate, (uint64_t)(seconds * 1e9));
    __atomic_store_n(&r.expected, sent ? sent : 1, __ATOMIC_RELEASE);
    /* The receiver stops once it has every echo; a deadline covers a lost one. */
    uint64_t deadline = now_ns() + DRAIN_NS;
    while (__atomic_load_n(&r.received, __ATOMIC_ACQUIRE) < sent && now_ns() < deadline)
        usleep(1000);
    shutdown(fd, SHUT_RDWR);
    pthread_join(thread, NULL);
    print_json(rate, seconds, sent, &r);
    return r.received == sent ? 0 : 3;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "server") == 0)
        return server(-1);
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return durable_server(argv[2]);
    if ((argc == 5 || argc == 6) && strcmp(argv[1], "client") == 0) {
        double rate = atof(argv[3]), seconds = atof(argv[4]);
        size_t message = argc == 6 ? strtoul(argv[5], NULL, 10) : MESSAGE_DEFAULT;
        if (rate > 0 && seconds > 0 && message >= MESSAGE_MIN && message <= MESSAGE_MAX)
            return client(atoi(argv[2]), rate, seconds, message);
    }
    fprintf(stderr, "usage: echo server [DIR] | echo client PORT RATE SECONDS [SIZE]\n");
    return 2;
}
