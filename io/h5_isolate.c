/*
 * h5_isolate.c -- a child process that runs libhdf5 on an untrusted file.
 *
 * libhdf5 1.10 crashes, hangs or corrupts its heap on some damaged or
 * crafted files (the CVE proof-of-concept files of the conformance suite:
 * docs/hdf5.md lists them). h5.read (isolate=true, the default) therefore
 * never calls libhdf5 on its input in the sluice process: a child forked
 * for the file opens it, plans the read and then answers requests (a
 * chunk's stored size, a raw chunk, a block of converted values) over a
 * socket; the bytes go straight into the item's arena block, whose
 * segment each request carries (sl__h5_child_send_fd). When the child
 * dies or does not answer in time, the parent kills and reaps it and fails
 * the source with a message saying how: one file's error, not a dead run.
 *
 * This file has the process mechanics; h5_read.c has the protocol.
 *   - The fork happens under the HDF5 lock, so no other thread of the
 *     parent is inside libhdf5 and the child's copy of its state is
 *     consistent. The child then holds the lock (its copy) for good: it
 *     must call libhdf5 directly and never take the lock.
 *   - The child calls nothing of the engine (another thread may have held
 *     one of its locks at the fork), writes no core file, has the default
 *     action for SIGINT/SIGTERM/SIGPIPE (not the CLI's handlers), and its
 *     address space is limited (soft limit) to the parent's plus
 *     SL__ISO_MEMORY, raised with sl__h5_child_allow once the read is
 *     planned: a file that makes libhdf5 allocate without bound fails in
 *     the child with libhdf5's own "memory allocation failed". It ends
 *     with _exit (no atexit handlers, no stdio flush: the parent's buffers
 *     are not written twice), when the parent closes its end or kills it.
 *   - Both ends are close-on-exec. A fork copies private memory lazily and
 *     shared mappings (the arena) not at all: a few milliseconds.
 */
#define _GNU_SOURCE /* for the socket flags */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "h5_internal.h"

/* Our address-space size now, from /proc/self/statm; 0 when unknown. */
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

/* In the child, right after the fork. */
static void child_setup(void) {
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_DFL);
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
  sl__h5_child_allow(SL__ISO_MEMORY);
}

void sl__h5_child_allow(uint64_t extra) {
  uint64_t vm = vm_size();
  struct rlimit rl;
  if (!vm || extra > UINT64_MAX - vm || getrlimit(RLIMIT_AS, &rl) != 0) return;
  rlim_t cap = (rlim_t)(vm + extra);
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < cap) cap = rl.rlim_max;
  rl.rlim_cur = cap; /* the soft limit only: it can be raised again */
  setrlimit(RLIMIT_AS, &rl);
}

int sl__h5_child_fork(sl__h5_child *c) {
  c->fd = -1;
  c->pid = -1;
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return -errno;
  sl__h5_lock();
  pid_t pid = fork();
  if (pid == 0) {
    close(sv[0]);
    child_setup();
    c->fd = sv[1];
    return 1;
  }
  int err = errno;
  sl__h5_unlock();
  close(sv[1]);
  if (pid < 0) {
    close(sv[0]);
    return -err;
  }
  c->fd = sv[0];
  c->pid = (int)pid;
  return 0;
}

int sl__h5_child_send(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

/* SCM_RIGHTS: one descriptor rides with the first byte of a message. */
typedef union fd_msg {
  char buf[CMSG_SPACE(sizeof(int))];
  struct cmsghdr align;
} fd_msg;

/* A message of n bytes at p with room for one descriptor. */
static void fd_msghdr(struct msghdr *m, struct iovec *iov, fd_msg *u, const void *p, size_t n) {
  memset(u, 0, sizeof *u);
  memset(m, 0, sizeof *m);
  iov->iov_base = (void *)p;
  iov->iov_len = n;
  m->msg_iov = iov;
  m->msg_iovlen = 1;
  m->msg_control = u->buf;
  m->msg_controllen = sizeof u->buf;
}

int sl__h5_child_send_fd(int fd, int pass, const void *p, size_t n) {
  if (pass < 0) return sl__h5_child_send(fd, p, n);
  fd_msg u;
  struct iovec iov;
  struct msghdr m;
  fd_msghdr(&m, &iov, &u, p, n);
  struct cmsghdr *c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &pass, sizeof pass);
  ssize_t k;
  do k = sendmsg(fd, &m, MSG_NOSIGNAL);
  while (k < 0 && errno == EINTR);
  if (k <= 0) return -1;
  return (size_t)k == n ? 0 : sl__h5_child_send(fd, (const char *)p + k, n - (size_t)k);
}

int sl__h5_child_recv_fd(int fd, int *got, void *p, size_t n) {
  *got = -1;
  fd_msg u;
  struct iovec iov;
  struct msghdr m;
  fd_msghdr(&m, &iov, &u, p, n);
  ssize_t k;
  do k = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
  while (k < 0 && errno == EINTR);
  if (k <= 0) return SL__ISO_GONE;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
        c->cmsg_len == CMSG_LEN(sizeof(int)))
      memcpy(got, CMSG_DATA(c), sizeof(int));
  if ((size_t)k == n) return 0;
  return sl__h5_child_recv(fd, (char *)p + k, n - (size_t)k, -1);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int sl__h5_child_recv(int fd, void *p, size_t n, double timeout) {
  char *c = p;
  double end = timeout < 0 ? 0 : now_s() + timeout;
  while (n > 0) {
    if (timeout >= 0) {
      double left = end - now_s();
      if (left <= 0) return SL__ISO_LATE;
      struct pollfd pf = {fd, POLLIN, 0};
      int r = poll(&pf, 1, left > 3600 ? 3600000 : (int)(left * 1000) + 1);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return SL__ISO_GONE;
      if (r == 0) continue; /* the loop sees whether time is up */
    }
    ssize_t k = recv(fd, c, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return SL__ISO_GONE;
    c += k;
    n -= (size_t)k;
  }
  return 0;
}

static const char *signal_text(int sig) {
  switch (sig) {
  case SIGSEGV: return "SIGSEGV, a bad memory access";
  case SIGBUS: return "SIGBUS, a bad memory access";
  case SIGABRT: return "SIGABRT: it aborted (a failed check, or a corrupted heap)";
  case SIGFPE: return "SIGFPE, an arithmetic fault";
  case SIGILL: return "SIGILL, an illegal instruction";
  case SIGKILL: return "SIGKILL: killed, e.g. out of memory";
  default: return "a signal";
  }
}

void sl__h5_child_end(sl__h5_child *c, int how, double timeout, char *why, size_t len) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  if (c->pid <= 0) return;
  pid_t pid = (pid_t)c->pid;
  c->pid = -1;
  /* Always: a child that is late or simply done must go, and one that
   * already died keeps the status it died with. */
  kill(pid, SIGKILL);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!why || !len) return;
  if (how == SL__ISO_LATE)
    snprintf(why, len, "no answer within %g s (a damaged or crafted file can make "
             "libhdf5 loop)", timeout);
  else if (WIFSIGNALED(st))
    snprintf(why, len, "signal %d, %s", WTERMSIG(st), signal_text(WTERMSIG(st)));
  else
    snprintf(why, len, "exit status %d, without an answer",
             WIFEXITED(st) ? WEXITSTATUS(st) : -1);
}
