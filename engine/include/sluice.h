/*
 * sluice.h -- public API of the sluice pipeline engine.
 *
 * A pipeline is a chain of stages joined by bounded queues. Items flow from a
 * source, through transforms, into a sink. Payload memory lives in a
 * shared-memory arena with a byte budget, so memory is bounded by queue
 * capacities and the budget, never by input size.
 *
 * Sections, from simple to advanced:
 *   1. errors            sl_strerror, SL_E* codes
 *   2. running pipelines  registry, pipeline, run
 *   3. items & payloads   what flows between stages
 *   4. writing stages     sl_stage_def, parameter tables, worker context
 *   5. primitives         arena, queue, I/O pool, core budget
 *
 * Conventions: functions return 0 (or a count) on success and a negative
 * SL_E* code on failure; wrapped system calls return -errno. Every destroy
 * function accepts NULL. Unless a comment says otherwise, an object may be
 * used by one thread at a time.
 */
#ifndef SLUICE_H
#define SLUICE_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SL_API __attribute__((visibility("default")))
#define SL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define SL_API
#define SL_PRINTF(f, a)
#endif

#define SL_VERSION_MAJOR 0
#define SL_VERSION_MINOR 1
#define SL_VERSION_PATCH 0
#define SL_VERSION_STRING "0.1.0"

/* ======================================================================
 * 1. Errors
 * ====================================================================== */

/* One table generates the codes, sl_err_name() and sl_strerror().
 * Codes that mirror errno have the value -errno; sluice's own codes start at
 * -4000 so they never collide with a system error. */
#define SL_ERRNO_MAP(X)                                                        \
  X(ENOMEM, -ENOMEM, "out of memory")                                          \
  X(EINVAL, -EINVAL, "invalid argument")                                       \
  X(ENOENT, -ENOENT, "no such file or directory")                              \
  X(EEXIST, -EEXIST, "file exists")                                            \
  X(EACCES, -EACCES, "permission denied")                                      \
  X(EIO, -EIO, "input/output error")                                           \
  X(ENOSPC, -ENOSPC, "no space left on device")                                \
  X(EAGAIN, -EAGAIN, "resource temporarily unavailable")                       \
  X(ERANGE, -ERANGE, "value out of range")                                     \
  X(ECANCELED, -ECANCELED, "operation canceled")                               \
  X(ECLOSED, -4001, "closed")                                                  \
  X(EPARSE, -4002, "pipeline error")                                           \
  X(EKIND, -4003, "payload kinds do not connect")                              \
  X(EFORMAT, -4004, "malformed input")                                         \
  X(ESTAGE, -4005, "stage failed")                                             \
  X(ELIMIT, -4006, "limit exceeded")                                           \
  X(EITEMS, -4007, "some items failed")                                        \
  X(EUNSUPPORTED, -4008, "not supported")

typedef enum sl_error {
  SL_OK = 0,
  /* Returned by a source's produce() when it has no more items. */
  SL_DONE = 1,
#define SL__ERR_ENUM(name, value, text) SL_##name = (value),
  SL_ERRNO_MAP(SL__ERR_ENUM)
#undef SL__ERR_ENUM
} sl_error;

/* @return a static English description of `err` (any SL_E* code or -errno).
 * Thread-safe. */
SL_API const char *sl_strerror(int err);
/* @return the code's name without prefix, e.g. "ECLOSED"; "UNKNOWN" for codes
 * outside the table. Thread-safe. */
SL_API const char *sl_err_name(int err);

/* ======================================================================
 * 2. Running pipelines
 * ====================================================================== */

typedef struct sl_registry sl_registry;
typedef struct sl_pipeline sl_pipeline;
typedef struct sl_run sl_run;
typedef struct sl_stage_def sl_stage_def;
typedef struct sl_stage sl_stage;   /* a configured stage in a pipeline */

/* --- registry: the set of stage types a pipeline file may name -------- */

/* Creates an empty registry. @return 0 or SL_ENOMEM. */
SL_API int sl_registry_create(sl_registry **out);
SL_API void sl_registry_destroy(sl_registry *reg);
/* Adds a stage type. `def` is borrowed and must outlive the registry.
 * @return 0, SL_EEXIST if the name is taken, SL_EINVAL if the definition is
 * inconsistent (bad parameter table, missing callbacks). */
SL_API int sl_registry_add(sl_registry *reg, const sl_stage_def *def);
/* @return the stage type called `name`, or NULL. */
SL_API const sl_stage_def *sl_registry_find(const sl_registry *reg,
                                            const char *name);
/* Stage types in name order, for listings. */
SL_API size_t sl_registry_count(const sl_registry *reg);
SL_API const sl_stage_def *sl_registry_at(const sl_registry *reg, size_t i);
/* Writes the help of one stage type (summary, class, kinds, every parameter
 * with type, default, bounds, choices and help) to `out`. */
SL_API void sl_stage_def_print_help(const sl_stage_def *def, FILE *out);

/* --- pipeline: a parsed, validated chain of configured stages ----------- */

/* Creates an empty pipeline that will resolve stage names in `reg` (which
 * must outlive it). @return 0 or SL_ENOMEM. */
SL_API int sl_pipeline_create(sl_pipeline **out, const sl_registry *reg);
SL_API void sl_pipeline_destroy(sl_pipeline *p);

/* Parses pipeline text: one stage per line or `!`-separated, `key=value`
 * parameters, single or double quotes, `#` comments, `\` line continuation,
 * `${name}` / `${name:-default}` substituted from `vars` ("name=value"
 * strings). `filename` is used in messages only. On error every problem
 * found is recorded as "file:line:col: message" (see sl_pipeline_errors).
 * Checks everything that can be checked before running: stage names,
 * parameters, values, bounds, payload kinds between neighbours, and each
 * stage's own create() validation.
 * @return 0 or SL_EPARSE (details in sl_pipeline_errors), SL_ENOMEM. */
SL_API int sl_pipeline_parse(sl_pipeline *p, const char *filename,
                             const char *text, size_t len,
                             const char *const *vars, size_t nvars);

/* Programmatic construction: appends stage `name` with "key=value"
 * parameters. Errors are recorded like parse errors (with "<api>" as file).
 * Call sl_pipeline_check() when the chain is complete.
 * @return 0, SL_EPARSE or SL_ENOMEM. */
SL_API int sl_pipeline_append(sl_pipeline *p, const char *name,
                              const char *const *params, size_t nparams);
/* Validates kinds between stages and creates every stage's state.
 * Idempotent. @return 0 or SL_EPARSE. sl_pipeline_parse() calls it. */
SL_API int sl_pipeline_check(sl_pipeline *p);

/* All recorded errors, one per line, "file:line:col: message" with an
 * optional indented hint line; "" when none. Owned by the pipeline. */
SL_API const char *sl_pipeline_errors(const sl_pipeline *p);
SL_API size_t sl_pipeline_length(const sl_pipeline *p);
/* Stage i of the chain (NULL past the end). */
SL_API const sl_stage *sl_pipeline_stage(const sl_pipeline *p, size_t i);

/* --- run options ------------------------------------------------------ */

typedef enum sl_on_error { SL_ON_ERROR_SKIP = 0, SL_ON_ERROR_STOP = 1 } sl_on_error;
typedef enum sl_progress { SL_PROGRESS_AUTO = 0, SL_PROGRESS_ON, SL_PROGRESS_OFF } sl_progress;

/* Options of a run. Initialise with sl_run_options_init(); fields may be
 * added at the end in later versions. */
typedef struct sl_run_options {
  unsigned threads;        /* core budget; 0 = OMP_NUM_THREADS or all cores */
  uint64_t memory_bytes;   /* arena budget; 0 = default (see docs) */
  sl_on_error on_error;    /* what one failed item does to the run */
  unsigned retries;        /* extra attempts per failed item; 0 = none */
  size_t queue_capacity;   /* default queue capacity (items); 0 = default */
  const char *journal_path;    /* NULL = no journal */
  bool resume;                 /* skip items finished by an earlier run */
  const char *stats_json_path; /* NULL = none */
  const char *trace_path;      /* Chrome trace-event JSON; NULL = none */
  sl_progress progress;        /* progress bar on stderr */
  FILE *report;                /* end-of-run summary; NULL = none */
  uint64_t queue_bytes;        /* payload bytes a queue may hold before it
                                  counts as full; 0 = default (16 MiB) */
  struct sl_dist *dist;        /* the MPI job this run is one rank of (see
                                  sl_dist_init); NULL = this process alone */
  bool no_fuse;                /* run every cpu stage on its own driver
                                  (default: adjacent cpu stages are fused,
                                  see docs/how-it-works.md) */
} sl_run_options;

SL_API void sl_run_options_init(sl_run_options *opt);

/* Prints the chain as it would run (stage, class, workers/threads, queue
 * capacities, payload kinds) and the worst-case memory bound.
 * @return 0 or SL_EPARSE when the pipeline does not check. */
SL_API int sl_pipeline_plan(sl_pipeline *p, const sl_run_options *opt,
                            FILE *out);

/* --- run ------------------------------------------------------------- */

/* Prepares a run of `p` (which must have checked cleanly and outlive the
 * run). @return 0, SL_EINVAL, SL_ENOMEM, or an error from opening the
 * journal (details in sl_run_error). */
SL_API int sl_run_create(sl_run **out, sl_pipeline *p,
                         const sl_run_options *opt);
/* Runs to completion on the calling thread plus engine threads.
 * @return 0 when every item succeeded; SL_EITEMS when the run finished but
 * some items failed; SL_ECANCELED when sl_run_cancel() stopped it; another
 * negative code when the run could not run (sl_run_error says why). */
SL_API int sl_run_execute(sl_run *run);
/* Asks a running run to stop: sources stop, queued items are abandoned,
 * in-flight items finish, temporaries are removed, journal and report are
 * written. Thread-safe; not async-signal-safe (call it from a thread that
 * waits for signals, as the CLI does). */
SL_API void sl_run_cancel(sl_run *run);
SL_API void sl_run_destroy(sl_run *run);

/* Message describing why execute failed or stopped; "" when none. */
SL_API const char *sl_run_error(const sl_run *run);
SL_API uint64_t sl_run_items_ok(const sl_run *run);
SL_API uint64_t sl_run_items_failed(const sl_run *run);
SL_API uint64_t sl_run_items_skipped(const sl_run *run); /* by --resume */
/* Failed items, in the order they failed. Strings are owned by the run. */
SL_API size_t sl_run_failure_count(const sl_run *run);
SL_API int sl_run_failure(const sl_run *run, size_t i, const char **item,
                          const char **stage, const char **message);

/* --- distributed runs (MPI) ----------------------------------------- */

typedef struct sl_dist sl_dist;

/* Joins the MPI job when the process was started by mpirun/srun (detected
 * from the launcher's environment; sluice never starts MPI otherwise).
 * @return 0 with *out NULL when not launched by MPI, 0 with *out the job,
 * SL_EUNSUPPORTED when launched by MPI but built without it, or SL_EIO. */
SL_API int sl_dist_init(int *argc, char ***argv, sl_dist **out);
SL_API unsigned sl_dist_rank(const sl_dist *d); /* 0 for NULL */
SL_API unsigned sl_dist_size(const sl_dist *d); /* 1 for NULL */
/* Ends every rank of the job at once (after a fatal error on this one, so
 * that no other rank waits forever). Does not return. */
SL_API void sl_dist_abort(sl_dist *d, int code);
/* Gives every rank rank 0's string: *text (malloc'd, NUL-terminated) is
 * replaced on the other ranks. Collective: every rank calls it, between
 * runs. @return 0, SL_ENOMEM or SL_EIO. */
SL_API int sl_dist_share(sl_dist *d, char **text);
/* True when `ok` is true on every rank. Collective: every rank calls it
 * (e.g. between the passes of a file, so that all go on or all stop).
 * Not distributed: returns ok. */
SL_API bool sl_dist_agree(sl_dist *d, bool ok);
/* Leaves the job and frees d (NULL: nothing). */
SL_API void sl_dist_finalize(sl_dist *d);

/* ======================================================================
 * 3. Items and payloads
 * ====================================================================== */

typedef struct sl_arena sl_arena;
typedef struct sl_block sl_block;

/* What an item carries. SL_KIND_ANY and SL_KIND_SAME are only used in stage
 * definitions: ANY accepts every kind, SAME outputs what came in. */
typedef enum sl_kind {
  SL_KIND_NONE = 0, /* no input (sources) or no output (sinks) */
  SL_KIND_BYTES,
  SL_KIND_IMAGE,
  SL_KIND_ARRAY,
  SL_KIND_TABLE,
  SL_KIND_AGG,
  SL_KIND_ANY,
  SL_KIND_SAME
} sl_kind;
SL_API const char *sl_kind_name(sl_kind k);

typedef enum sl_dtype {
  SL_DT_NONE = 0,
  SL_DT_BOOL, SL_DT_I8, SL_DT_U8, SL_DT_I16, SL_DT_U16, SL_DT_I32, SL_DT_U32,
  SL_DT_I64, SL_DT_U64, SL_DT_F32, SL_DT_F64,
  SL_DT_STRING /* table columns: uint64 offsets[nrows+1] + bytes */
} sl_dtype;
SL_API const char *sl_dtype_name(sl_dtype t);
SL_API size_t sl_dtype_size(sl_dtype t); /* 0 for NONE and STRING */

#define SL_MAX_DIMS 8

typedef struct sl_image_desc {
  uint32_t width, height;
  uint32_t channels; /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
  uint32_t depth;    /* bits per sample: 8 or 16 (native byte order) */
  size_t stride;     /* bytes per row */
} sl_image_desc;

typedef struct sl_array_desc {
  sl_dtype dtype;
  uint32_t ndim;
  uint64_t shape[SL_MAX_DIMS];   /* of this chunk */
  int64_t strides[SL_MAX_DIMS];  /* in bytes */
  uint64_t origin[SL_MAX_DIMS];  /* position of this chunk in the whole */
  uint64_t whole[SL_MAX_DIMS];   /* shape of the whole array */
} sl_array_desc;

typedef struct sl_column {
  char *name;        /* owned by the item */
  sl_dtype dtype;
  size_t data_off;   /* offset of values (or of string offsets) in block */
  size_t chars_off;  /* strings: offset of the character bytes */
  size_t valid_off;  /* offset of 1-byte validity flags, SIZE_MAX if none */
} sl_column;

typedef struct sl_table_desc {
  uint32_t ncols;
  uint64_t nrows;
  uint64_t first_row; /* global row number (1-based line) of row 0 */
  sl_column *cols;    /* malloc'd, owned by the item */
} sl_table_desc;

/* A payload is a view of (part of) an arena block. The item holds one
 * reference to the block; the memory itself is never owned by a stage. */
typedef struct sl_payload {
  sl_kind kind;
  sl_block *block; /* reference owned by the item; NULL when empty */
  void *data;      /* start of the payload inside the block */
  size_t size;     /* bytes */
  union {
    sl_image_desc image;
    sl_array_desc array;
    sl_table_desc table;
    struct { uint32_t tag; } agg; /* producer-defined partial aggregate */
  } u;
} sl_payload;

/* The unit that flows. Pushing an item downstream transfers ownership. */
typedef struct sl_meta sl_meta;

typedef struct sl_item {
  uint64_t seq;       /* position in source order, from 0 */
  char *name;         /* e.g. path relative to the input dir; owned */
  sl_payload payload;
  uint32_t attempts;  /* failed attempts so far (retries) */
  uint64_t total_hint;/* sources may set: expected number of items, 0 unknown */
  uint64_t line;      /* text chunks: 1-based line number of the first line
                         in the whole input (0 = not a text chunk) */
  sl_meta *meta;      /* small key/value metadata; use sl_item_meta_* */
} sl_item;

/* Creates an item with a copy of `name` and an empty payload.
 * @return the item (caller owns it) or NULL when out of memory. */
SL_API sl_item *sl_item_create(uint64_t seq, const char *name);
/* Creates an item with the same seq and name as `src`, empty payload. */
SL_API sl_item *sl_item_derive(const sl_item *src);
/* Releases the payload (block reference, table columns) and frees the item. */
SL_API void sl_item_destroy(sl_item *item);
/* Replaces the payload with a view of `block` (the item takes over the
 * caller's reference): kind, data = block data + offset, size. Descriptors in
 * payload.u are left for the caller to fill. Any previous payload is released. */
SL_API void sl_item_set_block(sl_item *item, sl_kind kind, sl_block *block,
                              size_t offset, size_t size);
/* Drops the payload, leaving kind NONE. */
SL_API void sl_item_clear_payload(sl_item *item);
/* Small key/value metadata travelling with the item (e.g. a CSV header line
 * that a source attaches to every chunk). Setting copies key and value and
 * replaces an earlier value. sl_item_derive copies the metadata.
 * @return 0 or SL_ENOMEM. */
SL_API int sl_item_meta_set(sl_item *item, const char *key, const char *value);
/* @return the value (owned by the item) or NULL. */
SL_API const char *sl_item_meta_get(const sl_item *item, const char *key);

/* ======================================================================
 * 4. Writing stages
 * ====================================================================== */

typedef struct sl_worker sl_worker; /* one worker of a stage while running */

typedef enum sl_exec_class {
  SL_EXEC_IO = 0, /* runs on the I/O pool, `workers` threads, may block */
  SL_EXEC_CPU,    /* OpenMP threads under the core budget */
  SL_EXEC_SERIAL  /* one thread, items in order */
} sl_exec_class;
SL_API const char *sl_exec_class_name(sl_exec_class c);

typedef enum sl_param_type {
  SL_PARAM_BOOL = 0, /* bool:     true|false|yes|no|on|off|1|0 */
  SL_PARAM_INT,      /* int64_t:  decimal, optional sign */
  SL_PARAM_FLOAT,    /* double */
  SL_PARAM_SIZE,     /* uint64_t: bytes, suffixes k/K/KB/KiB/M/MiB/G/GiB (binary) */
  SL_PARAM_STRING,   /* const char *: valid while the pipeline lives */
  SL_PARAM_CHOICE    /* int: index into `choices` ("a|b|c") */
} sl_param_type;

/* One row of a stage's declarative parameter table. The table ends with a
 * row whose name is NULL (SL_PARAM_END). Values are stored into the stage's
 * params struct (params_size bytes, zeroed first) at `offset`. */
typedef struct sl_param_def {
  const char *name;
  sl_param_type type;
  size_t offset;
  const char *def;      /* default as text; NULL = required */
  double min, max;      /* inclusive bounds, used when min < max */
  const char *choices;  /* SL_PARAM_CHOICE: "a|b|c" */
  const char *help;
} sl_param_def;
#define SL_PARAM_END {NULL, SL_PARAM_BOOL, 0, NULL, 0, 0, NULL, NULL}

/* Stage flags. */
#define SL_STAGE_SOURCE 0x1u /* has produce(), no input */
#define SL_STAGE_SINK 0x2u   /* consumes items, emits none */

/* A stage type. Callbacks may be NULL unless stated. Every callback that
 * returns int returns 0 or a negative SL_E* code; a failing callback should
 * first describe the cause with sl_worker_errorf()/sl_stage_errorf(). */
struct sl_stage_def {
  const char *name;    /* e.g. "files.read" */
  const char *summary; /* one line */
  const char *help;    /* longer text for `sluice stages NAME`; may be NULL */
  sl_exec_class exec;
  sl_kind in_kind, out_kind;
  unsigned flags;
  const sl_param_def *params; /* may be NULL */
  size_t params_size;         /* sizeof the params struct */

  /* Once per stage after its parameters are validated (at check time,
   * before anything runs). May reject the configuration with
   * sl_stage_errorf(); the message is reported at the stage's position.
   * *state is the stage's shared state, passed back via sl_worker_shared. */
  int (*create)(sl_stage *st, void **state);
  void (*destroy)(void *state);
  /* Per worker, on the worker's thread, before its first item. */
  int (*open)(sl_worker *w, void **local);
  /* Sources: produce the next item into *out (0) or return SL_DONE.
   * Called from one thread. Check sl_worker_canceled() in long loops. */
  int (*produce)(sl_worker *w, sl_item **out);
  /* Transforms and sinks. Ownership: on success *out is the output (it may be
   * `in` itself, a new item, or NULL to drop the item / for sinks) and the
   * engine destroys `in` unless it is *out. On failure `in` stays owned by
   * the engine, unmodified (so it can be retried), and *out must be NULL. */
  int (*process)(sl_worker *w, sl_item *in, sl_item **out);
  /* After the last input, per worker: may emit final items
   * (sl_worker_emit), e.g. a reduction's result. */
  int (*finish)(sl_worker *w);
  /* Per worker, always called when open succeeded. */
  void (*close)(sl_worker *w);
  /* Resume support for sinks: true when the output for the item called
   * `name` already exists and is complete. Thread-safe. */
  bool (*is_done)(void *state, const char *name);
  /* Memory hint for `sluice plan`: bytes of payload per output item, 0 when
   * unknown. */
  uint64_t (*item_bytes)(const sl_stage *st);
  /* Name of a stage that always goes right after this one (with its
   * default parameters) unless the pipeline already puts it there; e.g. a
   * source that reads compressed chunks and a cpu stage that decodes them
   * on all cores. `sluice plan` shows the inserted stage. NULL: none. */
  const char *then;
  /* Reducing stages in distributed runs (see sl_worker_send_partial): on
   * rank 0, takes the partial result of item `seq` that another rank sent.
   * Called from the engine's communication thread, concurrently with
   * process(); `data` is only valid during the call.
   * @return 0, or SL_EFORMAT when the bytes make no sense. */
  int (*receive)(void *state, uint64_t seq, const void *data, size_t len);
};

/* --- stage (configured instance) ------------------------------------- */
SL_API const sl_stage_def *sl_stage_definition(const sl_stage *st);
SL_API const void *sl_stage_params(const sl_stage *st);
/* The state create() made (NULL before check or without create()). */
SL_API void *sl_stage_state(const sl_stage *st);
/* Position in the pipeline, from 0. */
SL_API size_t sl_stage_index(const sl_stage *st);
/* Records why create() rejected the configuration. @return SL_EPARSE. */
SL_API int sl_stage_errorf(sl_stage *st, const char *fmt, ...) SL_PRINTF(2, 3);

/* --- worker context (valid inside callbacks) ------------------------- */
SL_API sl_stage *sl_worker_stage(sl_worker *w);
SL_API const void *sl_worker_params(sl_worker *w);
SL_API void *sl_worker_shared(sl_worker *w); /* create()'s state */
SL_API void *sl_worker_local(sl_worker *w);  /* open()'s state */
SL_API unsigned sl_worker_index(const sl_worker *w);
SL_API unsigned sl_worker_count(const sl_worker *w);
SL_API sl_arena *sl_worker_arena(sl_worker *w);
/* Allocates payload memory; waits while the budget is spent.
 * @return 0, SL_ECANCELED if the run is stopping, SL_ELIMIT/SL_ENOSPC. */
SL_API int sl_worker_alloc(sl_worker *w, size_t size, sl_block **out);
/* True once the run is stopping; long loops should return SL_ECANCELED. */
SL_API bool sl_worker_canceled(const sl_worker *w);
/* True when `--resume` says the item called `name` is already done; sources
 * call it to skip work before producing an item. */
SL_API bool sl_worker_is_done(sl_worker *w, const char *name);
/* Describes the current failure (the engine adds item and stage names).
 * @return SL_ESTAGE, so `return sl_worker_errorf(w, ...)` reads well. */
SL_API int sl_worker_errorf(sl_worker *w, const char *fmt, ...) SL_PRINTF(2, 3);
SL_API int sl_worker_verrorf(sl_worker *w, const char *fmt, va_list ap);
/* Sends an item downstream from finish() (ownership moves to the engine).
 * @return 0 or SL_ECANCELED (the item has been destroyed). */
SL_API int sl_worker_emit(sl_worker *w, sl_item *item);
/* Distributed runs (MPI, see sl_dist_init). A run of N ranks gives each
 * rank the items whose seq % N == rank: the engine drops the others as they
 * leave a source, and a source may ask sl_worker_owns() first to skip the
 * work of making them. A reducing stage (one with a receive() callback)
 * computes a partial result per item; on ranks other than 0 it hands each
 * partial to sl_worker_send_partial() instead of merging it, and rank 0's
 * receive() merges it in seq order with its own, so the result does not
 * depend on N. On ranks other than 0 the stages after the first reducing
 * stage do not run (its outputs are dropped): reduced outputs are written
 * once, by rank 0; per-item outputs by the rank that made them. Rank 0
 * calls the reducing stage's finish() only after every rank has sent all
 * its partials. Outside distributed runs rank is 0 and ranks 1. */
SL_API unsigned sl_worker_rank(const sl_worker *w);
SL_API unsigned sl_worker_ranks(const sl_worker *w);
/* True when item `seq` of a source belongs to this rank. */
SL_API bool sl_worker_owns(const sl_worker *w, uint64_t seq);
/* Sends the partial result of item `seq` (len bytes, copied) to rank 0.
 * @return 1 when sent (the caller drops its partial), 0 when this is rank
 * 0 or not a distributed run (the caller merges it itself), or SL_EIO /
 * SL_ELIMIT (over 1 GiB). */
SL_API int sl_worker_send_partial(sl_worker *w, uint64_t seq, const void *data,
                                  size_t len);
/* True when this stage sees every item of the run: always outside
 * distributed runs; under MPI only after the first reducing stage (on rank
 * 0). A sink that gathers all items into one file must refuse to run
 * otherwise: each rank would write its own share over the same file. */
SL_API bool sl_worker_sees_all(const sl_worker *w);
/* Items that failed so far in this run, on every rank once the reducing
 * stage's finish() runs on rank 0. A reduction whose input lost items
 * should refuse to publish a result that would silently be incomplete. */
SL_API uint64_t sl_worker_failed_items(const sl_worker *w);

/* Sources: number of items expected, for progress and ETA (0 unknown). */
SL_API void sl_worker_set_total(sl_worker *w, uint64_t total);

/* Brackets a blocking call (sleep, wait, slow device) inside a cpu or
 * serial stage: the worker gives its core token back for the duration, so a
 * sleeping thread does not keep other stages off the cores. begin/end must
 * pair on the same thread; end may wait for a token. No-ops in io stages
 * (which hold no token). */
SL_API void sl_worker_blocking_begin(sl_worker *w);
SL_API void sl_worker_blocking_end(sl_worker *w);

/* Intra-item parallel-for under the core budget: splits [0, n) into ranges
 * of at least `grain` indices and calls body(arg, begin, end) on up to as
 * many OpenMP threads as the budget has free right now (at least the
 * caller). Never oversubscribes. Blocks until every range is done. */
SL_API void sl_parallel_for(sl_worker *w, size_t n, size_t grain,
                            void (*body)(void *arg, size_t begin, size_t end),
                            void *arg);

/* ======================================================================
 * 5. Primitives
 * ====================================================================== */

/* --- arena: POSIX shared memory with a byte budget ------------------- */
/*
 * Blocks live in shm segments (shm_open + mmap, mode 0600, unpredictable
 * names, unlinked as soon as mapped, space reserved with posix_fallocate so
 * a full /dev/shm is SL_ENOSPC, not SIGBUS). A block is addressed by
 * (segment, offset) so another process holding the segment's fd can map the
 * very same memory. Blocks are reference counted; all functions are
 * thread-safe. */

typedef struct sl_arena_options {
  uint64_t budget_bytes;  /* 0 = 1 GiB */
  uint64_t segment_bytes; /* size of shared segments; 0 = 64 MiB */
} sl_arena_options;

typedef struct sl_block_ref {
  uint32_t segment;
  uint64_t offset;  /* of the block's data in the segment */
  uint64_t size;    /* usable bytes */
  uint64_t segment_size;
} sl_block_ref;

typedef struct sl_arena_stats {
  uint64_t budget, in_use, peak, segments, wait_ns;
  /* Bytes of released large-block segments kept for reuse: memory the
   * arena holds beyond in_use (at most budget/2); counted in segments. */
  uint64_t cached;
} sl_arena_stats;

/* @return 0, SL_ENOMEM or -errno from shm_open/mmap. */
SL_API int sl_arena_create(sl_arena **out, const sl_arena_options *opt);
/* Unmaps everything. Blocks still referenced become invalid: destroy the
 * arena only after every block is released. */
SL_API void sl_arena_destroy(sl_arena *a);
/* Allocates `size` bytes (64-byte aligned); waits while the budget is spent.
 * @return 0 and *out with one reference; SL_ECANCELED after
 * sl_arena_cancel(); SL_ELIMIT when size exceeds the whole budget;
 * SL_ENOSPC when /dev/shm is full. */
SL_API int sl_arena_alloc(sl_arena *a, size_t size, sl_block **out);
/* As sl_arena_alloc but @return SL_EAGAIN instead of waiting. */
SL_API int sl_arena_try_alloc(sl_arena *a, size_t size, sl_block **out);
/* As sl_arena_alloc, but waits only while in_use + size would exceed
 * `limit` instead of the budget (limit may exceed the budget). The engine
 * lets stages downstream of the sources overdraw this way so that a chain
 * whose queues hold the whole budget still makes progress. */
SL_API int sl_arena_alloc_ex(sl_arena *a, size_t size, uint64_t limit,
                             sl_block **out);
/* Wakes every waiting allocation with SL_ECANCELED; later waits fail too. */
SL_API void sl_arena_cancel(sl_arena *a);
SL_API void sl_arena_get_stats(sl_arena *a, sl_arena_stats *st);
SL_API uint64_t sl_arena_budget(const sl_arena *a);
/* fd of segment `segment` (owned by the arena) to hand to another process
 * (inherited over fork or sent with SCM_RIGHTS); -1 if there is none. */
SL_API int sl_arena_segment_fd(sl_arena *a, uint32_t segment);

SL_API sl_block *sl_block_retain(sl_block *b);
/* Drops one reference; the space returns to the arena at zero. NULL ok. */
SL_API void sl_block_release(sl_block *b);
SL_API void *sl_block_data(const sl_block *b);
SL_API size_t sl_block_size(const sl_block *b);
/* A foreign block: `size` bytes at `data` that the arena does not own (a
 * mapped region of an input file, say), reference counted like any block;
 * `drop(ctx, data, size)` runs at the last release (NULL: nothing). It is
 * not in the budget and not in a shared segment (sl_block_get_ref gives
 * segment UINT32_MAX), so only this process can use it. @return the block
 * with one reference, or NULL when out of memory. */
SL_API sl_block *sl_block_wrap(void *data, size_t size,
                               void (*drop)(void *ctx, void *data, size_t size),
                               void *ctx);
/* Where the block lives, for sl_block_map in another process. */
SL_API sl_block_ref sl_block_get_ref(const sl_block *b);

/* Maps the block `ref` from segment fd `fd` in any process (no copy).
 * base and len describe the mapping to pass to sl_block_unmap; data points
 * at the block's first byte. @return 0 or -errno. */
SL_API int sl_block_map(int fd, sl_block_ref ref, void **base, size_t *len,
                        void **data);
SL_API void sl_block_unmap(void *base, size_t len);

/* --- queue: bounded, blocking, closable ------------------------------ */
/*
 * Holds opaque pointers; pushing transfers ownership to the queue. All
 * functions are thread-safe (any number of producers and consumers). */

typedef struct sl_queue sl_queue;

typedef struct sl_queue_stats {
  uint64_t pushed, popped;
  uint64_t blocked_ns; /* producers waiting on a full queue */
  uint64_t starved_ns; /* consumers waiting on an empty queue */
  size_t capacity, max_depth;
} sl_queue_stats;

/* @return 0, SL_EINVAL (capacity 0) or SL_ENOMEM. */
SL_API int sl_queue_create(sl_queue **out, size_t capacity);
/* Frees the queue; remaining elements are passed to dispose (if non-NULL).
 * No thread may be using the queue. */
SL_API void sl_queue_destroy(sl_queue *q, void (*dispose)(void *));
/* Blocks while full. @return 0, or SL_ECLOSED (caller keeps `elem`). */
SL_API int sl_queue_push(sl_queue *q, void *elem);
/* @return 0, SL_EAGAIN when full, SL_ECLOSED. */
SL_API int sl_queue_try_push(sl_queue *q, void *elem);
/* Pushes all n, blocking as needed; *pushed says how many went in (the
 * rest stay with the caller when SL_ECLOSED is returned). */
SL_API int sl_queue_push_many(sl_queue *q, void *const *elems, size_t n,
                              size_t *pushed);
/* Blocks while empty and open. @return 0, or SL_ECLOSED when closed and
 * drained. */
SL_API int sl_queue_pop(sl_queue *q, void **elem);
/* @return 0, SL_EAGAIN when empty, SL_ECLOSED when closed and drained. */
SL_API int sl_queue_try_pop(sl_queue *q, void **elem);
/* Waits for at least one element, takes up to `max`. *ticket (if non-NULL)
 * receives the pop index of the first one (0 for the first element ever
 * popped; consecutive for the rest), for restoring order downstream.
 * @return 0 with *n >= 1, or SL_ECLOSED with *n == 0. */
SL_API int sl_queue_pop_many(sl_queue *q, void **elems, size_t max, size_t *n,
                             uint64_t *ticket);
/* Adds a byte limit: weigh(elem) gives an element's bytes; the queue counts
 * as full while it holds at least `limit` bytes and one element or more
 * (an empty queue always accepts one element). limit 0 or weigh NULL
 * removes it. Call before the queue is shared, or at any time (thread-safe). */
SL_API void sl_queue_set_byte_limit(sl_queue *q, uint64_t limit,
                                    size_t (*weigh)(const void *elem));
/* With a byte limit: the queue accepts elements whatever their bytes while
 * it holds fewer than n (default 1), so that n consumers can each have one
 * (the engine sets n to the consuming stage's workers). Thread-safe. */
SL_API void sl_queue_set_min_items(sl_queue *q, size_t n);
/* No more pushes (they fail with SL_ECLOSED); pops drain what is left. */
SL_API void sl_queue_close(sl_queue *q);
/* Close and drop: remaining elements go to dispose now, every waiter wakes. */
SL_API void sl_queue_abandon(sl_queue *q, void (*dispose)(void *));
SL_API size_t sl_queue_size(sl_queue *q);
SL_API void sl_queue_get_stats(sl_queue *q, sl_queue_stats *st);

/* --- I/O pool: threads for blocking work ----------------------------- */
/*
 * Jobs run in submission order on `threads` named threads. The pending
 * queue is bounded: submit blocks when it is full (backpressure). */

typedef struct sl_pool sl_pool;
/* @return 0, SL_EINVAL, SL_ENOMEM or -errno from pthread_create. */
SL_API int sl_pool_create(sl_pool **out, unsigned threads, size_t capacity,
                          const char *name);
/* Thread-safe. @return 0 or SL_ECLOSED after shutdown began. */
SL_API int sl_pool_submit(sl_pool *p, void (*fn)(void *), void *arg);
/* @return 0, SL_EAGAIN when the pending queue is full, SL_ECLOSED. */
SL_API int sl_pool_try_submit(sl_pool *p, void (*fn)(void *), void *arg);
/* Waits until every submitted job has finished. Thread-safe. */
SL_API void sl_pool_wait(sl_pool *p);
/* Runs queued jobs to completion, joins the threads, frees. */
SL_API void sl_pool_destroy(sl_pool *p);
SL_API unsigned sl_pool_threads(const sl_pool *p);

/* --- core budget ------------------------------------------------------ */
/*
 * Tokens, one per core the run may use. A thread that runs CPU work holds a
 * token; intra-item parallelism borrows free tokens without waiting. */

typedef struct sl_cores sl_cores;
SL_API int sl_cores_create(sl_cores **out, unsigned budget);
SL_API void sl_cores_destroy(sl_cores *c);
/* Blocks until at least one token is free, then takes between 1 and `max`.
 * @return the number taken, or SL_ECANCELED after sl_cores_cancel(). */
SL_API int sl_cores_acquire(sl_cores *c, unsigned max);
/* Takes up to `max` free tokens without waiting. @return number taken. */
SL_API unsigned sl_cores_try_acquire(sl_cores *c, unsigned max);
SL_API void sl_cores_release(sl_cores *c, unsigned n);
SL_API void sl_cores_cancel(sl_cores *c);
SL_API unsigned sl_cores_budget(const sl_cores *c);
/* Highest number of tokens ever held at once (for tests). */
SL_API unsigned sl_cores_peak(const sl_cores *c);
/* Default budget: OMP_NUM_THREADS if set and valid, else online cores. */
SL_API unsigned sl_cores_default(void);

/* Parses a byte size with optional suffix (k, KiB, M, MiB, G, GiB, ...).
 * @return 0, SL_EINVAL or SL_ERANGE. */
SL_API int sl_parse_size(const char *text, uint64_t *out);
/* Monotonic clock in nanoseconds. */
SL_API uint64_t sl_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif /* SLUICE_H */
