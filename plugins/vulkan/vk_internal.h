/* plugins/vulkan/vk_internal.h — private to the Vulkan backend plugin: the
 * device, buffer and submission-batch structs shared by vk_backend.c (device,
 * memory, queue) and vk_kernels.c (the kernels).
 *
 * Queue model (backend_iface.h's ordering rules): every upload, kernel and
 * copy is recorded into the current batch's command buffer, with a full
 * compute/transfer memory barrier before each command, so commands run in
 * call order. A batch is submitted when it holds VK_BATCH_COMMANDS commands,
 * when its staging memory is used up, and at synchronize()/download(). A
 * ring of VK_BATCHES batches is in flight at most; a batch's fence retires
 * its staging chunks, descriptor pools and the buffers freed while it was
 * recorded (batches retire in submission order). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>
#include <vulkan/vulkan.h>

#include "tensorplug/backend_iface.h"
#include "vk_shaders.h"

#define VK_BATCHES 8
#define VK_BATCH_COMMANDS 128
/* Staging memory: host-visible chunks; a batch uses at most
 * VK_STAGE_CHUNKS_PER_BATCH of them before it is submitted. */
#define VK_STAGE_CHUNK ((size_t)8 << 20)
#define VK_STAGE_CHUNKS_PER_BATCH 4
#define VK_STAGE_CHUNKS_KEPT 4
/* Bindings per kernel: binding 0 is the status (error) word buffer, tensors
 * are 1..VK_MAX_BINDINGS-1. */
#define VK_MAX_BINDINGS 16
/* Push constants: 4 words of packed per-binding element offsets, then the
 * kernel's parameters (128 bytes in all, Vulkan's guaranteed minimum). */
#define VK_PUSH_BYTES 128
#define VK_PARAM_WORDS 28

/* Device-side error kinds written to the status buffer by shaders
 * (shaders/common.glsl has the same numbers). */
enum {
  VK_ERR_NONE = 0,
  VK_ERR_EMBED_FWD_ID = 1,
  VK_ERR_EMBED_BWD_ID = 2,
  VK_ERR_CE_FWD_LABEL = 3,
  VK_ERR_CE_BWD_LABEL = 4,
  VK_ERR_COUNT_LABEL = 5,
};
#define VK_STATUS_WORDS 4

struct tp_buffer {
  VkBuffer buf;
  VkDeviceMemory mem;
  void *map;          /* persistent host mapping when the memory is host visible */
  size_t size;        /* bytes asked for */
  VkDeviceSize alloc; /* bytes of the VkBuffer (size rounded up) */
};

typedef struct vk_batch {
  VkCommandBuffer cmd;
  VkFence fence;
  bool recording, in_flight;
  int commands;        /* recorded so far */
  GPtrArray *chunks;   /* tp_buffer* staging chunks in use */
  size_t chunk_used;   /* bytes used of the last chunk */
  GPtrArray *garbage;  /* tp_buffer* freed while this batch was recorded */
  GArray *pools;       /* VkDescriptorPool (without push descriptors) */
  guint pool_next;     /* pools[pool_next - 1] is being used */
  uint32_t pool_sets_left;
} vk_batch;

struct tp_backend_dev {
  VkInstance instance;
  VkPhysicalDevice phys;
  VkDevice dev;
  VkQueue queue;
  uint32_t queue_family;
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties mem_props;
  tp_device_info info;
  uint32_t dev_mem_type;   /* memory type of tensor buffers */
  bool dev_mem_mapped;     /* tensor buffers are host visible and mapped */
  uint32_t host_mem_type;  /* host-visible coherent type for staging */
  uint64_t heap_bytes;     /* size of the tensor buffers' heap */
  uint64_t used_bytes;     /* bytes in live user buffers */
  uint32_t max_range;      /* maxStorageBufferRange, rounded down to 16 */
  uint32_t align;          /* offset alignment of bindings (power of 2) */
  uint32_t max_groups[3];  /* maxComputeWorkGroupCount */
  uint32_t subgroup_size;
  uint32_t subgroup_min;   /* the smallest subgroup a shader may get (spec constant 0) */
  bool storage16;          /* storageBuffer16BitAccess enabled */
  bool coopmat;            /* the f16 cooperative-matrix GEMM is usable */
  bool gemm_reg;           /* f32 GEMM without shared memory (CPU implementations) */
  bool loop_limited;       /* loops end after 65535 iterations per invocation (lavapipe) */

  bool push_descriptors;
  PFN_vkCmdPushDescriptorSetKHR cmd_push_descriptor_set;
  VkDescriptorSetLayout set_layout; /* VK_MAX_BINDINGS storage buffers */
  VkPipelineLayout pipe_layout;      /* that set and VK_PUSH_BYTES of push constants */
  VkPipeline pipes[VK_SH_COUNT];     /* created on first use */

  VkCommandPool cmd_pool;
  vk_batch batches[VK_BATCHES];
  int cur;          /* the batch being recorded */
  GPtrArray *free_chunks;

  tp_buffer *status;   /* VK_STATUS_WORDS device words shaders report errors in */
  tp_buffer *readback; /* host-visible copy of status, read at synchronisation */
  tp_buffer *dummy;    /* bound where an optional tensor is absent */
  tp_buffer *scratch;  /* kernels' temporaries (partial sums), grown on demand */

  GError *error; /* first failure found on the host, reported at the next sync */
  /* $TENSORPLUG_VULKAN_PROFILE: every dispatch waited for and timed, a
   * table per shader printed to stderr at close (slow; for diagnosis) */
  bool profile;
  double prof_seconds[VK_SH_COUNT];
  uint64_t prof_calls[VK_SH_COUNT];
  uint64_t dispatches, submits; /* counters, printed by the profile */
};

/* The core's error domain (the same quark string as tp_error_quark()). */
GQuark vk_error_quark(void);
#define VK_ERROR (vk_error_quark())

/* Records a failure found on the host; the first one is kept until the next
 * synchronisation. */
void vk_set_error(tp_backend_dev *d, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

/* A tensor argument of a dispatch: memory and its element size in bytes.
 * buf NULL binds a dummy buffer (an absent optional tensor). */
typedef struct vk_arg {
  tp_mem m;
  uint32_t esize;
} vk_arg;

/* Records one dispatch of shader `sh` with args bound at bindings 1..n (each
 * from its offset aligned down to the device's alignment; the remainder is
 * passed in the push constants' offset bytes), params copied into the push
 * constants after the offsets, and a grid of groups (clamped to the
 * device's limits: shaders loop over the rest). Failures are kept for the
 * next synchronisation. */
void vk_dispatch(tp_backend_dev *d, vk_shader_id sh, const vk_arg *args, int n, const void *params,
                 size_t param_bytes, uint32_t gx, uint32_t gy, uint32_t gz);
/* The iface's copy(): queued, overlapping ranges allowed. */
bool vk_copy_queued(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err);
/* vkCmdFillBuffer of a 32-bit pattern (offset and bytes multiples of 4). */
void vk_fill_words(tp_backend_dev *d, tp_mem dst, uint32_t word, size_t bytes);
/* Device scratch memory of at least bytes, valid until the next call (the
 * previous scratch buffer is released after the work queued so far). NULL
 * buf on failure (reported). */
tp_mem vk_scratch(tp_backend_dev *d, size_t bytes);

/* The kernel table (vk_kernels.c). */
extern const tp_kernels vk_kernels_table;
void vk_attention_fwd(tp_backend_dev *d, const tp_attention_args *a);
void vk_attention_bwd(tp_backend_dev *d, const tp_attention_args *a, tp_mem dout, tp_mem dq,
                      tp_mem dk, tp_mem dv, tp_mem dbias);
/* Message of a device-side error word set (status words from the device). */
char *vk_status_message(const uint32_t *st);

/* The largest head_dim the attention shaders take (reported as max_head_dim). */
#define ATT_MAX_HD 256
