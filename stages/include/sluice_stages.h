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
#ifdef __cplusplus
}
#endif
#endif
