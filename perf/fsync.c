/*
 * The disk's floor: how long one fdatasync of a fresh append takes, the
 * least a confirm that waits for the disk can cost on this machine.
 *
 *     fsync DIR COUNT
 *         appends COUNT records of 1 KiB to a new file in DIR, each
 *         followed by fdatasync, and prints one JSON object of the
 *         fdatasync latencies in microseconds; the file is removed.
 *
 * perf/run.py compiles this with the system gcc into target/ and runs it
 * in the directory that warren's data directory is in, pinned to the
 * brokers' CPU, so that the confirm-latency scenario's percentiles can be
 * read as multiples of it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RECORD 1024

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static double percentile(const uint64_t *sorted, size_t count, double p) {
    size_t index = (size_t)(p / 100.0 * (double)(count - 1) + 0.5);
    return (double)sorted[index] / 1000.0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fsync DIR COUNT\n");
        return 2;
    }
    size_t count = strtoul(argv[2], NULL, 10);
    if (count == 0) {
        fprintf(stderr, "fsync: COUNT must be at least 1\n");
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/perf-fsync-%d", argv[1], (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror("fsync: open");
        return 1;
    }
    unlink(path);
    uint64_t *latencies = calloc(count, sizeof *latencies);
    char record[RECORD];
    memset(record, 'w', sizeof record);
    for (size_t i = 0; i < count; i++) {
        if (write(fd, record, sizeof record) != (ssize_t)sizeof record) {
            perror("fsync: write");
            return 1;
        }
        uint64_t start = now_ns();
        if (fdatasync(fd) != 0) {
            perror("fsync: fdatasync");
            return 1;
        }
        latencies[i] = now_ns() - start;
    }
    close(fd);
    qsort(latencies, count, sizeof *latencies, compare);
    printf("{\"count\": %zu, \"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}\n", count,
           percentile(latencies, count, 50), percentile(latencies, count, 99),
           (double)latencies[count - 1] / 1000.0);
    free(latencies);
    return 0;
}
