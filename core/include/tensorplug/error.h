/* tensorplug/error.h — the GError domain every tensorplug function reports in.
 * A library function never prints or exits: it returns FALSE/NULL/-1 and fills
 * a GError whose message says what was wrong, where, and what to do. */
#pragma once
#include <glib.h>

G_BEGIN_DECLS

#define TP_ERROR (tp_error_quark())
GQuark tp_error_quark(void);

typedef enum {
  TP_ERROR_INVALID_ARGUMENT, /* bad option value, wrong shape passed by a caller */
  TP_ERROR_IO,               /* a file could not be read or written */
  TP_ERROR_FORMAT,           /* a file's contents are malformed (weights, data, config) */
  TP_ERROR_PLUGIN,           /* a plugin could not be loaded or was refused */
  TP_ERROR_UNAVAILABLE,      /* a backend, device or feature is not usable here */
  TP_ERROR_BACKEND,          /* a backend failed while running */
  TP_ERROR_OUT_OF_MEMORY,    /* host or device memory exhausted */
  TP_ERROR_NON_FINITE,       /* NaN or Inf where a finite number was needed */
  TP_ERROR_INTERRUPTED,      /* the user asked to stop (SIGINT) */
} tp_error_code;

G_END_DECLS
