/* tensorplug/memory.h — how much memory a size that comes from an input
 * (a config, a vocabulary, an option) would need, checked against what the
 * machine has before anything that large is allocated. */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <glib.h>

G_BEGIN_DECLS

/* Bytes of host memory this process can still use: the least of the
 * kernel's MemAvailable, the cgroup's memory.max less memory.current, and
 * $TENSORPLUG_MEMORY_LIMIT (bytes, or with a K/M/G/T suffix; tests and
 * shared machines set it). UINT64_MAX when none of them is known. */
uint64_t tp_memory_host_available(void);

/* "1.5 GiB", "312.0 MiB", "12 bytes" into buf. */
const char *tp_memory_format(uint64_t bytes, char *buf, size_t n);

/* TRUE when `bytes` fit in `available`; otherwise FALSE with
 * TP_ERROR_OUT_OF_MEMORY: "WHAT needs 35.0 TiB but only 20.1 GiB of host
 * memory are available" (`where` names the memory, e.g. "host memory"). */
bool tp_memory_check(uint64_t bytes, uint64_t available, const char *where, const char *what,
                     GError **err);

/* tp_memory_check against tp_memory_host_available(). */
bool tp_memory_check_host(uint64_t bytes, const char *what, GError **err);

/* What a backend's device can hold: its memory_bytes (when the backend
 * reports it), and at most the host memory available for host-visible devices
 * (the CPU). UINT64_MAX when unknown. ($TENSORPLUG_ALLOC_LIMIT_BYTES is not
 * counted here: it injects allocation failures, core/backend.c.) */
struct tp_backend;
uint64_t tp_memory_device_available(const struct tp_backend *be);
/* tp_memory_check against tp_memory_device_available(be), naming the device. */
bool tp_memory_check_device(const struct tp_backend *be, uint64_t bytes, const char *what,
                            GError **err);

G_END_DECLS
