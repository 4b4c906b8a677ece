/*
 * stages_internal.h -- definitions shared between the files of stages/.
 * Private to the library: every stage file exports its sl_stage_def here and
 * stages_register.c adds them all. Only the public "sluice.h" is used.
 */
#ifndef SLUICE_STAGES_INTERNAL_H
#define SLUICE_STAGES_INTERNAL_H

#include "sluice.h"

extern const sl_stage_def sl__stage_gen;      /* gen.c */
extern const sl_stage_def sl__stage_identity; /* identity.c */
extern const sl_stage_def sl__stage_discard;  /* discard.c */
extern const sl_stage_def sl__stage_capture;  /* capture.c */
extern const sl_stage_def sl__stage_resize;   /* resize.c */
extern const sl_stage_def sl__stage_groupby;   /* groupby.c */
extern const sl_stage_def sl__stage_aggregate; /* aggregate.c */
extern const sl_stage_def sl__stage_filter;    /* filter.c */
extern const sl_stage_def sl__stage_select;    /* select.c */
extern const sl_stage_def sl__stage_reduce;    /* reduce.c */
extern const sl_stage_def sl__stage_map;       /* map.c */

#endif
