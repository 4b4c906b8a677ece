/*
 * dist.c -- distributed runs: one pipeline on the N ranks of an MPI job.
 *
 * The model (see sluice.h, "Distributed runs"): items are dealt to ranks by
 * seq % N as they leave a source; every rank runs the whole chain on its
 * share; reducing stages send one partial result per item to rank 0, which
 * merges them in seq order with its own, so the reduced result is the same
 * for any N. Only two kinds of message exist, both from a rank k > 0 to
 * rank 0 on one tag, so MPI's non-overtaking rule delivers them in the order
 * they were sent:
 *
 *   PARTIAL(stage, seq, bytes)  a partial result of item seq
 *   DONE(stage, failed)         rank k sent all its partials of the stage;
 *                               `failed` items failed there
 *
 * Threads. MPI is initialised with MPI_THREAD_SERIALIZED and every MPI call
 * is made under d->mu, so worker threads may send concurrently. Rank 0
 * receives on a communication thread that polls (MPI_Iprobe, then a 50 us
 * nap) rather than blocking in MPI_Recv, which would hold the lock.
 *
 * Failures. A rank that stops on a fatal error calls sl_dist_abort (the CLI
 * does), which ends every rank: nobody waits forever for a DONE that will
 * never come. A rank killed by a signal makes mpirun end the job.
 *
 * Without MPI (SLUICE_HAVE_MPI undefined) sl_dist_init reports a launch by
 * mpirun as unsupported and every other function is the trivial job of one.
 */
#include "run_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef SLUICE_HAVE_MPI
#include <mpi.h>
#endif

enum { MSG_PARTIAL = 1, MSG_DONE = 2 };
#define DIST_TAG 0x51u
#define DIST_MAX_PARTIAL ((size_t)1 << 30)

/* Header of every message; the partial's bytes follow. */
typedef struct msg_head {
  uint32_t type, stage;
  uint64_t seq;   /* PARTIAL: the item; DONE: unused */
  uint64_t extra; /* DONE: items that failed on the sender */
} msg_head;

struct sl_dist {
  int rank, size;
  pthread_mutex_t mu;
};

/* True when a known MPI launcher started this process. */
static bool launched_by_mpi(void) {
  static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                                     "PMI_SIZE", "MPI_LOCALNRANKS"};
  for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
    if (getenv(vars[i])) return true;
  return false;
}

int sl_dist_init(int *argc, char ***argv, sl_dist **out) {
  *out = NULL;
  if (!launched_by_mpi()) return 0;
#ifdef SLUICE_HAVE_MPI
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
    return SL_EIO;
  if (provided < MPI_THREAD_SERIALIZED) {
    MPI_Finalize();
    return SL_EUNSUPPORTED;
  }
  /* Errors come back as codes (turned into messages), not as aborts. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  sl_dist *d = calloc(1, sizeof *d);
  if (!d) {
    MPI_Finalize();
    return SL_ENOMEM;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &d->size);
  sl__mutex_init(&d->mu);
  *out = d;
  return 0;
#else
  (void)argc, (void)argv;
  return SL_EUNSUPPORTED;
#endif
}

unsigned sl_dist_rank(const sl_dist *d) { return d ? (unsigned)d->rank : 0; }
unsigned sl_dist_size(const sl_dist *d) { return d ? (unsigned)d->size : 1; }

void sl_dist_abort(sl_dist *d, int code) {
#ifdef SLUICE_HAVE_MPI
  if (d) MPI_Abort(MPI_COMM_WORLD, code);
#else
  (void)d;
#endif
  exit(code);
}

void sl_dist_finalize(sl_dist *d) {
  if (!d) return;
#ifdef SLUICE_HAVE_MPI
  /* Wait for every rank first: mpirun ends the whole job as soon as one
   * process exits with a non-zero status (say 1: some items failed), which
   * would cut the other ranks' runs short. */
  MPI_Barrier(MPI_COMM_WORLD);
  MPI_Finalize();
#endif
  pthread_mutex_destroy(&d->mu);
  free(d);
}

int sl_dist_share(sl_dist *d, char **text) {
  if (sl_dist_size(d) <= 1) return 0;
#ifdef SLUICE_HAVE_MPI
  unsigned long long len = d->rank == 0 ? strlen(*text) : 0;
  sl__mutex_lock(&d->mu);
  int rc = MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
  char *buf = NULL;
  if (rc == MPI_SUCCESS && len > (1u << 30)) rc = MPI_ERR_COUNT;
  if (rc == MPI_SUCCESS) {
    buf = d->rank == 0 ? *text : malloc((size_t)len + 1);
    if (!buf) {
      sl__mutex_unlock(&d->mu);
      sl_dist_abort(d, 2); /* the others wait in the Bcast: end them too */
    }
    rc = MPI_Bcast(buf, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD);
  }
  sl__mutex_unlock(&d->mu);
  if (rc != MPI_SUCCESS) {
    if (buf != *text) free(buf);
    return SL_EIO;
  }
  if (d->rank != 0) {
    buf[len] = '\0';
    free(*text);
    *text = buf;
  }
  return 0;
#else
  (void)text;
  return SL_EUNSUPPORTED;
#endif
}

bool sl_dist_agree(sl_dist *d, bool ok) {
  if (sl_dist_size(d) <= 1) return ok;
#ifdef SLUICE_HAVE_MPI
  int mine = ok, all = 0;
  sl__mutex_lock(&d->mu);
  int rc = MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  sl__mutex_unlock(&d->mu);
  if (rc != MPI_SUCCESS) sl_dist_abort(d, 2); /* the others would wait */
  return all != 0;
#else
  return ok;
#endif
}

/* ---------------------------------------------------------------------- */
/* messages                                                                */

/* Sends head + body to rank 0. @return 0 or SL_EIO / SL_ELIMIT / SL_ENOMEM. */
static int send_to_root(sl_dist *d, const msg_head *h, const void *body,
                        size_t len) {
#ifdef SLUICE_HAVE_MPI
  if (len > DIST_MAX_PARTIAL) return SL_ELIMIT;
  unsigned char *buf = malloc(sizeof *h + len);
  if (!buf) return SL_ENOMEM;
  memcpy(buf, h, sizeof *h);
  if (len) memcpy(buf + sizeof *h, body, len);
  sl__mutex_lock(&d->mu);
  int rc = MPI_Send(buf, (int)(sizeof *h + len), MPI_BYTE, 0, DIST_TAG, MPI_COMM_WORLD);
  sl__mutex_unlock(&d->mu);
  free(buf);
  return rc == MPI_SUCCESS ? 0 : SL_EIO;
#else
  (void)d, (void)h, (void)body, (void)len;
  return SL_EUNSUPPORTED;
#endif
}

/* Takes the next message if one is waiting. @return 1 with *buf (malloc'd,
 * starting with a msg_head), *len and *from; 0 when none; SL_EIO. */
static int poll_message(sl_dist *d, unsigned char **buf, size_t *len, int *from) {
#ifdef SLUICE_HAVE_MPI
  int flag = 0, count = 0, rc;
  MPI_Status st;
  sl__mutex_lock(&d->mu);
  rc = MPI_Iprobe(MPI_ANY_SOURCE, DIST_TAG, MPI_COMM_WORLD, &flag, &st);
  if (rc == MPI_SUCCESS && flag) rc = MPI_Get_count(&st, MPI_BYTE, &count);
  unsigned char *b = NULL;
  if (rc == MPI_SUCCESS && flag) {
    b = malloc(count > 0 ? (size_t)count : 1);
    if (!b) rc = MPI_ERR_NO_MEM;
    else rc = MPI_Recv(b, count, MPI_BYTE, st.MPI_SOURCE, DIST_TAG, MPI_COMM_WORLD,
                       MPI_STATUS_IGNORE);
  }
  sl__mutex_unlock(&d->mu);
  if (rc != MPI_SUCCESS || (flag && (size_t)count < sizeof(msg_head))) {
    free(b);
    return SL_EIO;
  }
  if (!flag) return 0;
  *buf = b;
  *len = (size_t)count;
  *from = st.MPI_SOURCE;
  return 1;
#else
  (void)d, (void)buf, (void)len, (void)from;
  return 0;
#endif
}

/* ---------------------------------------------------------------------- */
/* the worker API                                                          */

unsigned sl_worker_rank(const sl_worker *w) { return sl_dist_rank(w->run->opt.dist); }
unsigned sl_worker_ranks(const sl_worker *w) { return sl_dist_size(w->run->opt.dist); }

bool sl_worker_owns(const sl_worker *w, uint64_t seq) {
  unsigned n = sl_worker_ranks(w);
  return n <= 1 || seq % n == sl_worker_rank(w);
}

int sl_worker_send_partial(sl_worker *w, uint64_t seq, const void *data,
                           size_t len) {
  sl_dist *d = w->run->opt.dist;
  if (sl_dist_size(d) <= 1 || d->rank == 0) return 0;
  msg_head h = {MSG_PARTIAL, (uint32_t)w->rt->index, seq, 0};
  int rc = send_to_root(d, &h, data, len);
  return rc < 0 ? rc : 1;
}

bool sl_worker_sees_all(const sl_worker *w) {
  const sl_run *r = w->run;
  return sl_worker_ranks(w) <= 1 || (r->reducer != SIZE_MAX && w->rt->index > r->reducer);
}

uint64_t sl_worker_failed_items(const sl_worker *w) {
  sl_run *r = w->run;
  sl__mutex_lock(&r->mu);
  uint64_t remote = r->dist_failed;
  sl__mutex_unlock(&r->mu);
  return atomic_load(&r->failed) + remote;
}

/* ---------------------------------------------------------------------- */
/* the run's side                                                          */

size_t sl__dist_reducer(const sl_pipeline *p) {
  for (size_t i = 0; i < p->n; i++)
    if (p->stages[i]->def->receive) return i;
  return SIZE_MAX;
}

void sl__dist_stage_done(sl__rt *rt) {
  sl_run *r = rt->run;
  sl_dist *d = r->opt.dist;
  if (sl_dist_size(d) <= 1 || d->rank == 0 || rt->index != r->reducer) return;
  msg_head h = {MSG_DONE, (uint32_t)rt->index, 0, atomic_load(&r->failed)};
  if (send_to_root(d, &h, NULL, 0) < 0)
    sl__run_stop(r, "cannot send to rank 0 (MPI error)");
}

/* Hands one received message to the reducing stage or counts a DONE. */
static void dispatch(sl_run *r, const unsigned char *buf, size_t len, int from) {
  msg_head h;
  memcpy(&h, buf, sizeof h);
  sl__rt *rt = &r->rt[r->reducer];
  if (h.stage != r->reducer || (h.type != MSG_PARTIAL && h.type != MSG_DONE)) {
    char *why = sl__asprintf("rank %d sent a message for stage %u, expected %zu",
                             from, h.stage, r->reducer);
    sl__run_stop(r, why ? why : "unexpected message");
    free(why);
    return;
  }
  if (h.type == MSG_DONE) {
    sl__mutex_lock(&r->mu);
    r->dist_done++;
    r->dist_failed += h.extra;
    sl__cond_broadcast(&r->tick);
    sl__mutex_unlock(&r->mu);
    return;
  }
  int rc = rt->def->receive(rt->st->state, h.seq, buf + sizeof h, len - sizeof h);
  if (rc < 0) {
    char item[80], msg[96];
    snprintf(item, sizeof item, "(partial result of item %llu from rank %d)",
             (unsigned long long)h.seq, from);
    snprintf(msg, sizeof msg, "cannot merge it: %s", sl_strerror(rc));
    sl__run_add_failure(r, item, rt->def->name, msg);
  }
}

static void *comm_main(void *arg) {
  sl_run *r = arg;
  sl__thread_name("sl-mpi");
  unsigned want = sl_dist_size(r->opt.dist) - 1;
  for (;;) {
    sl__mutex_lock(&r->mu);
    bool all = r->dist_done >= want;
    sl__mutex_unlock(&r->mu);
    if (all || atomic_load(&r->stopping)) break;
    unsigned char *buf = NULL;
    size_t len = 0;
    int from = -1;
    int rc = poll_message(r->opt.dist, &buf, &len, &from);
    if (rc < 0) {
      sl__run_stop(r, "receiving from another rank failed (MPI error)");
      break;
    }
    if (rc == 0) {
      struct timespec ts = {0, 50000};
      nanosleep(&ts, NULL);
      continue;
    }
    dispatch(r, buf, len, from);
    free(buf);
  }
  sl__mutex_lock(&r->mu);
  sl__cond_broadcast(&r->tick);
  sl__mutex_unlock(&r->mu);
  return NULL;
}

int sl__dist_start(sl_run *r) {
  sl_dist *d = r->opt.dist;
  if (sl_dist_size(d) <= 1 || d->rank != 0 || r->reducer == SIZE_MAX) return 0;
  int rc = -pthread_create(&r->comm_thread, NULL, comm_main, r);
  r->has_comm = rc == 0;
  return rc;
}

void sl__dist_join(sl_run *r) {
  if (r->has_comm) pthread_join(r->comm_thread, NULL);
  r->has_comm = false;
}

void sl__dist_wait_ranks(sl_worker *w) {
  sl_run *r = w->run;
  sl_dist *d = r->opt.dist;
  if (sl_dist_size(d) <= 1 || d->rank != 0 || w->rt->index != r->reducer) return;
  unsigned want = (unsigned)d->size - 1;
  sl__mutex_lock(&r->mu);
  while (r->dist_done < want && !atomic_load(&r->stopping))
    sl__cond_wait(&r->tick, &r->mu);
  sl__mutex_unlock(&r->mu);
}
