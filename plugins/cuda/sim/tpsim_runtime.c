/* plugins/cuda/sim/tpsim_runtime.c — the part of the CUDA runtime API the
 * backend calls, on host memory, for the "cudasim" test plugin. Kernels run
 * at launch (sim/tpsim.cc), so a stream is always idle and every copy
 * happens at once; the order of calls is the stream's order.
 *
 * What a test may set (environment, read at each call):
 *   TPSIM_DRIVER_ERROR  a cudaError_t number cudaGetDeviceCount() returns
 *                       (35: cudaErrorInsufficientDriver, as with no driver)
 *   TPSIM_MEMORY_BYTES  the device's memory (default 1 GiB): allocations
 *                       beyond it fail with cudaErrorMemoryAllocation
 *   TPSIM_SMEM_OPTIN    shared memory per block (default 232448, an H100's)
 *   TPSIM_SM_COUNT      multiprocessors (default 4)
 * Device memory starts as 0xff bytes (NaN as f32), so a kernel reading what
 * nobody wrote gives NaN instead of a lucky zero. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include <cuda_runtime_api.h>

static cudaError_t last_error = cudaSuccess;
static int current_device = 0;
static size_t live_bytes = 0;
static GHashTable *sizes; /* device pointer -> its size */

static long env_long(const char *name, long dflt) {
  const char *v = getenv(name);
  if (!v || !*v) return dflt;
  char *end = NULL;
  long x = strtol(v, &end, 10);
  return end && *end == '\0' ? x : dflt;
}

static cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) last_error = e;
  return e;
}

static size_t memory_bytes(void) { return (size_t)env_long("TPSIM_MEMORY_BYTES", 1L << 30); }

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
  case cudaErrorNoDevice: return "cudaErrorNoDevice";
  case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  default: return "cudaErrorUnknown";
  }
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInsufficientDriver:
    return "CUDA driver version is insufficient for CUDA runtime version";
  case cudaErrorNoDevice: return "no CUDA-capable device is detected";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  default: return "unknown error";
  }
}

cudaError_t cudaGetLastError(void) {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}

cudaError_t cudaGetDeviceCount(int *count) {
  long e = env_long("TPSIM_DRIVER_ERROR", 0);
  if (e != 0) return ret((cudaError_t)e);
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int device) {
  if (device != 0) return ret(cudaErrorInvalidDevice);
  memset(p, 0, sizeof *p);
  g_strlcpy(p->name, "tpsim (the CUDA kernels emulated on the CPU)", sizeof p->name);
  p->totalGlobalMem = memory_bytes();
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = (int)env_long("TPSIM_SM_COUNT", 4);
  p->integrated = 0;
  p->l2CacheSize = 1 << 20;
  p->sharedMemPerBlockOptin = (size_t)env_long("TPSIM_SMEM_OPTIN", 232448);
  p->memoryPoolsSupported = 1;
  return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *v) {
  *v = 13000;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int *d) {
  *d = current_device;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int d) {
  if (d != 0) return ret(cudaErrorInvalidDevice);
  current_device = d;
  return cudaSuccess;
}

/* Streams and events exist only as addresses: work runs when it is queued. */
static char the_stream, the_event;

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
  (void)flags;
  *s = (cudaStream_t)(void *)&the_stream;
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  (void)s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  (void)s;
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
  (void)flags;
  *e = (cudaEvent_t)(void *)&the_event;
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  (void)e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  (void)e;
  (void)s;
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  (void)e;
  return cudaSuccess;
}

static cudaError_t device_alloc(void **p, size_t bytes) {
  if (!sizes) sizes = g_hash_table_new(g_direct_hash, g_direct_equal);
  if (bytes > memory_bytes() || live_bytes > memory_bytes() - bytes) return ret(cudaErrorMemoryAllocation);
  void *m = malloc(bytes ? bytes : 1);
  if (!m) return ret(cudaErrorMemoryAllocation);
  memset(m, 0xff, bytes);
  live_bytes += bytes;
  g_hash_table_insert(sizes, m, GSIZE_TO_POINTER(bytes));
  *p = m;
  return cudaSuccess;
}

static cudaError_t device_free(void *p) {
  if (!p) return cudaSuccess;
  gpointer size = NULL;
  if (!sizes || !g_hash_table_lookup_extended(sizes, p, NULL, &size)) return ret(cudaErrorInvalidValue);
  live_bytes -= GPOINTER_TO_SIZE(size);
  g_hash_table_remove(sizes, p);
  free(p);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void **p, size_t bytes) { return device_alloc(p, bytes); }
cudaError_t cudaFree(void *p) { return device_free(p); }
cudaError_t cudaMallocAsync(void **p, size_t bytes, cudaStream_t s) {
  (void)s;
  return device_alloc(p, bytes);
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) {
  (void)s;
  return device_free(p);
}

cudaError_t cudaMallocHost(void **p, size_t bytes) {
  *p = malloc(bytes ? bytes : 1);
  return *p ? cudaSuccess : ret(cudaErrorMemoryAllocation);
}
cudaError_t cudaFreeHost(void *p) {
  free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
  *total = memory_bytes();
  *free_bytes = live_bytes < *total ? *total - live_bytes : 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t *pool, int device) {
  (void)device;
  *pool = (cudaMemPool_t)(void *)&the_stream;
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, enum cudaMemPoolAttr attr, void *value) {
  (void)pool;
  (void)attr;
  (void)value;
  return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep) {
  (void)pool;
  (void)keep;
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t s) {
  (void)kind;
  (void)s;
  if (bytes) memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s) {
  (void)s;
  if (bytes) memset(p, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  (void)func;
  if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize &&
      (value < 0 || (size_t)value > (size_t)env_long("TPSIM_SMEM_OPTIN", 232448)))
    return ret(cudaErrorInvalidValue);
  return cudaSuccess;
}
