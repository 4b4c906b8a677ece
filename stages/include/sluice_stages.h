/* sluice_stages.h -- the built-in transform stages. */
#ifndef SLUICE_STAGES_H
#define SLUICE_STAGES_H
#include "sluice.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Adds every built-in stage (gen, identity, discard, ...) to `reg`.
 * @return 0 or the first error of sl_registry_add. */
SL_API int sl_stages_register_all(sl_registry *reg);
/* The variables ("NAME_COLUMN=value") that the `capture` stage of `p` set
 * in the run that just ended; *vars stays owned by the pipeline, valid
 * until its next run or destroy. @return their number (0: none). */
SL_API size_t sl_stages_captured(const sl_pipeline *p, const char *const **vars);
#ifdef __cplusplus
}
#endif
#endif
