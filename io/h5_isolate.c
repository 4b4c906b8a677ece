/*
 * h5_probe.c -- runs libhdf5 on an untrusted file in a child process first.
 *
 * libhdf5 1.10 crashes, hangs or corrupts its heap on some damaged or
 * crafted files (the CVE proof-of-concept files of the conformance suite:
 * docs/hdf5.md lists them), mostly while it opens the file or a dataset
 * and reads their metadata. sl__h5_probe() forks, and the child does that
 * work (a function of the caller) on its own copy of the process; the
 * parent waits for its answer:
 *   - the child answers: the function's result and message (the caller
 *     then does the same work for real, or reports the message as is);
 *   - the child dies (a signal; under a sanitizer, a report and exit 1)
 *     or exits without a complete answer: SL__PROBE_CRASH;
 *   - no answer within the timeout: the child is killed, SL__PROBE_HANG.
 * The fork happens under the HDF5 lock, so no other thread of the parent
 * is inside libhdf5 and the child's copy of its state is consistent. The
 * child holds the lock (its copy) throughout, calls nothing of the engine
 * (another thread may have held one of its locks at the fork), writes no
 * core file, has its address space limited to the parent's plus
 * SL__PROBE_MEMORY (a file that makes libhdf5 allocate without bound
 * fails in the child, with libhdf5's own error), and ends with _exit
 * (no atexit handlers, no stdio flush: the parent's buffers are not
 * written twice).
 *
 * Cost: one fork per probed file (a few milliseconds: private memory is
 * copied on write, shared mappings are not copied at all) plus opening the
 * file twice.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "h5_internal.h"

/* The child's address-space size now, from /proc/self/statm; 0 unknown. */
static uint64_t vm_size(void) {
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[128];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  unsigned long long pages = 0;
  if (sscanf(buf, "%llu", &pages) != 1) return 0;
  long pg = sysconf(_SC_PAGESIZE);
  return (uint64_t)pages * (uint64_t)(pg > 0 ? pg : 4096);
}

static void write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t k = write(fd, c, n);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return;
    c += k;
    n -= (size_t)k;
  }
}

/* In the child: limits, the work, the answer (status, then the message
 * with its NUL), _exit. */
static _Noreturn void child(int wfd, sl__probe_fn fn, void *ctx) {
  signal(SIGINT, SIG_DFL); /* not the parent's handlers (cancellation) */
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
  uint64_t vm = vm_size();
  if (vm) {
    rl.rlim_cur = rl.rlim_max = (rlim_t)(vm + SL__PROBE_MEMORY);
    struct rlimit old;
    if (getrlimit(RLIMIT_AS, &old) == 0 &&
        (old.rlim_max == RLIM_INFINITY || old.rlim_max > rl.rlim_max))
      setrlimit(RLIMIT_AS, &rl);
  }
  char msg[SL__PROBE_MSG];
  msg[0] = '\0';
  int32_t rc = fn(ctx, msg, sizeof msg) < 0 ? 1 : 0;
  msg[sizeof msg - 1] = '\0';
  char out[sizeof rc + SL__PROBE_MSG];
  size_t len = strlen(msg) + 1;
  memcpy(out, &rc, sizeof rc);
  memcpy(out + sizeof rc, msg, len);
  write_all(wfd, out, sizeof rc + len);
  _exit(0);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int sl__h5_probe(sl__probe_fn fn, void *ctx, double timeout, char *msg,
                 size_t len, int *detail) {
  *detail = 0;
  if (len) msg[0] = '\0';
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return -errno;
  sl__h5_lock();
  pid_t pid = fork();
  if (pid == 0) {
    close(p[0]);
    child(p[1], fn, ctx);
  }
  int err = errno;
  sl__h5_unlock();
  close(p[1]);
  if (pid < 0) {
    close(p[0]);
    return -err;
  }
  /* Read the answer until EOF (the child's exit closes the pipe). */
  char buf[sizeof(int32_t) + SL__PROBE_MSG];
  size_t got = 0;
  bool hung = false;
  double end = now_s() + timeout;
  for (;;) {
    double left = end - now_s();
    if (left <= 0) {
      hung = true;
      break;
    }
    struct pollfd pf = {p[0], POLLIN, 0};
    int r = poll(&pf, 1, left > 3600 ? 3600000 : (int)(left * 1000) + 1);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue; /* the loop sees the time is up */
    if (r < 0) {
      hung = true; /* cannot wait: treat as no answer */
      break;
    }
    ssize_t k = read(p[0], buf + got, sizeof buf - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
    if (got == sizeof buf) break;
  }
  close(p[0]);
  if (hung) kill(pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (hung) {
    *detail = (int)(timeout * 1000);
    return SL__PROBE_HANG;
  }
  bool answered = got > sizeof(int32_t) && memchr(buf + sizeof(int32_t), '\0',
                                                   got - sizeof(int32_t));
  if (!answered || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    *detail = WIFSIGNALED(st) ? WTERMSIG(st) : 0;
    if (!WIFSIGNALED(st) && len)
      snprintf(msg, len, "exit status %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return SL__PROBE_CRASH;
  }
  int32_t rc;
  memcpy(&rc, buf, sizeof rc);
  if (len) snprintf(msg, len, "%s", buf + sizeof rc);
  return rc ? SL__PROBE_ERROR : SL__PROBE_OK;
}
