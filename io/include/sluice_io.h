/* sluice_io.h -- sources and sinks (files, and per-format readers/writers). */
#ifndef SLUICE_IO_H
#define SLUICE_IO_H
#include "sluice.h"
#ifdef __cplusplus
extern "C" {
#endif
/* Adds every built-in source and sink (files.list, files.read,
 * files.write, ...) to `reg`. @return 0 or the first error of sl_registry_add. */
SL_API int sl_io_register_all(sl_registry *reg);
#ifdef __cplusplus
}
#endif
#endif
