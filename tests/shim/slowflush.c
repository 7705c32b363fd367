/* The slow-flush model of an SD card, for tests and scripts/bench: every
 * fsync, fdatasync and syncfs of every process that preloads this waits
 * SLOWFLUSH_MS milliseconds on one machine-wide lock (an flock on
 * SLOWFLUSH_LOCK), as a card that does one cache flush at a time.
 *
 * SLOWFLUSH_LOG, if set, gets one line per flush and per rename, appended
 * with one write(2) (atomic for lines this short):
 *   <call> <rc> <began> <ended>        (seconds since the epoch, ns precision)
 *   rename 0 <time> <time> <new path>
 * so a test can check that each acknowledged message had a successful flush
 * that began after its file was renamed into place, and a benchmark can
 * count flushes per message without strace.
 *
 * SLOWFLUSH_FAIL, if set and the file it names exists when a flush begins,
 * makes that flush fail with EIO without flushing anything.
 *
 * Built by tests/support (cc -shared -fPIC); no dependencies beyond libc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void log_line(const char *call, int rc, double began, double ended, const char *path) {
    const char *log = getenv("SLOWFLUSH_LOG");
    if (!log) return;
    char line[4352];
    int n = snprintf(line, sizeof line, "%s %d %.6f %.6f%s%s\n", call, rc, began, ended,
                     path ? " " : "", path ? path : "");
    if (n <= 0 || n >= (int)sizeof line) return;
    int saved = errno;
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        ssize_t ignored = write(fd, line, (size_t)n);
        (void)ignored;
        close(fd);
    }
    errno = saved;
}

static int flush(const char *call, int fd) {
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, call);
    const char *lock = getenv("SLOWFLUSH_LOCK");
    const char *ms = getenv("SLOWFLUSH_MS");
    const char *fail = getenv("SLOWFLUSH_FAIL");
    int lfd = lock ? open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666) : -1;
    if (lfd >= 0) flock(lfd, LOCK_EX);
    double began = now();
    int failing = fail && access(fail, F_OK) == 0;
    long delay = ms ? atol(ms) : 0;
    if (delay > 0) {
        struct timespec d = {delay / 1000, (delay % 1000) * 1000000L};
        while (nanosleep(&d, &d) != 0 && errno == EINTR) {
        }
    }
    int rc;
    if (failing) {
        rc = -1;
        errno = EIO;
    } else {
        rc = real(fd);
    }
    int saved = errno;
    log_line(call, rc, began, now(), NULL);
    if (lfd >= 0) {
        flock(lfd, LOCK_UN);
        close(lfd);
    }
    errno = saved;
    return rc;
}

int fsync(int fd) { return flush("fsync", fd); }
int fdatasync(int fd) { return flush("fdatasync", fd); }
int syncfs(int fd) { return flush("syncfs", fd); }

int rename(const char *from, const char *to) {
    int (*real)(const char *, const char *) =
        (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int rc = real(from, to);
    double t = now();
    log_line("rename", rc, t, t, to);
    return rc;
}
