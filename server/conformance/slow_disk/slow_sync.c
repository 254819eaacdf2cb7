/* An LD_PRELOAD shim that makes fdatasync and fsync slow or failing: before each call it reads a
 * number of milliseconds from the file named by KEEL_SLOW_SYNC_FILE (missing, empty or
 * 0: no delay) and sleeps that long. The file can be rewritten while the process runs,
 * so a test can slow down one member's disk at a moment of its choosing. Used by
 * slow_disk.sh against keel's real binary (Rust's File::sync_data calls libc's
 * fdatasync). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void stall(void) {
    const char *path = getenv("KEEL_SLOW_SYNC_FILE");
    if (!path) return;
    FILE *f = fopen(path, "r");
    if (!f) return;
    long ms = 0;
    if (fscanf(f, "%ld", &ms) != 1) ms = 0;
    fclose(f);
    if (ms <= 0) return;
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0) {}
}

/* Whether the file named by KEEL_FAIL_SYNC_FILE says 1: syncs then fail with EIO, as
 * Linux reports a failed writeback. */
static int failing(void) {
    const char *path = getenv("KEEL_FAIL_SYNC_FILE");
    if (!path) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int on = 0;
    if (fscanf(f, "%d", &on) != 1) on = 0;
    fclose(f);
    return on == 1;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    stall();
    if (failing()) { errno = EIO; return -1; }
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    stall();
    if (failing()) { errno = EIO; return -1; }
    return real(fd);
}
