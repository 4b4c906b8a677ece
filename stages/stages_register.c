/*
 * stages_register.c -- adds every built-in transform stage to a registry.
 * A new stage file only needs its definition listed in `builtin` below (and
 * declared in stages_internal.h).
 */
#include "sluice_stages.h"

#include "stages_internal.h"

static const sl_stage_def *const builtin[] = {
    &sl__stage_gen,
    &sl__stage_identity,
    &sl__stage_discard,
    &sl__stage_capture,
    &sl__stage_resize,
    &sl__stage_groupby,
    &sl__stage_aggregate,
    &sl__stage_filter,
    &sl__stage_select,
    &sl__stage_reduce,
    &sl__stage_map,
};

/* The definitions are static data, so they outlive any registry. */
int sl_stages_register_all(sl_registry *reg) {
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
    int rc = sl_registry_add(reg, builtin[i]);
    if (rc < 0) return rc;
  }
  return 0;
}
