/* plugins/vulkan/vk_backend.c — the Vulkan backend plugin: device probe and
 * choice, open/close, memory (device-local buffers, host-visible staging),
 * the in-order queue of batched command buffers (see vk_internal.h), kernel
 * dispatch and the error reporting at synchronisation. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorplug/error.h"
#include "tensorplug/plugin.h"
#include "vk_internal.h"

#define MIB (1024.0 * 1024.0)

GQuark vk_error_quark(void) { return g_quark_from_static_string("tensorplug-error-quark"); }

void vk_set_error(tp_backend_dev *d, int code, const char *fmt, ...) {
  if (d->error) return; /* the first failure is the one reported */
  va_list ap;
  va_start(ap, fmt);
  d->error = g_error_new_valist(VK_ERROR, code, fmt, ap);
  va_end(ap);
}

static const char *vk_result_name(VkResult r) {
  switch (r) {
  case VK_SUCCESS: return "VK_SUCCESS";
  case VK_NOT_READY: return "VK_NOT_READY";
  case VK_TIMEOUT: return "VK_TIMEOUT";
  case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
  case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
  case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
  case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
  case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
  case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
  case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
  case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
  case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
  case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
  case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
  default: return "VkResult error";
  }
}

static bool env_flag(const char *name) {
  const char *v = g_getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}

/* ------------------------------------------------------- instance, probe */

static VkInstance instance_new(uint32_t *api, GError **err) {
  uint32_t have = VK_API_VERSION_1_0;
  PFN_vkEnumerateInstanceVersion enum_version =
      (PFN_vkEnumerateInstanceVersion)vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
  if (enum_version) enum_version(&have);
  if (have < VK_API_VERSION_1_1) {
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: the Vulkan loader is version 1.0; tensorplug needs 1.1 or newer "
                "(update libvulkan1)");
    return VK_NULL_HANDLE;
  }
  *api = have >= VK_API_VERSION_1_2 ? VK_API_VERSION_1_2 : VK_API_VERSION_1_1;
  VkApplicationInfo app = {
      .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
      .pApplicationName = "tensorplug",
      .applicationVersion = 1,
      .pEngineName = "tensorplug",
      .engineVersion = 1,
      .apiVersion = *api,
  };
  VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                             .pApplicationInfo = &app};
  VkInstance inst = VK_NULL_HANDLE;
  VkResult r = vkCreateInstance(&ci, NULL, &inst);
  if (r != VK_SUCCESS) {
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: no Vulkan driver (vkCreateInstance: %s); install your GPU's Vulkan "
                "driver, or mesa-vulkan-drivers for the CPU implementation (lavapipe)",
                vk_result_name(r));
    return VK_NULL_HANDLE;
  }
  return inst;
}

/* discrete > integrated > virtual > CPU > other */
static int device_rank(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
  default: return 4;
  }
}

static const char *device_type_name(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU implementation";
  default: return "other device";
  }
}

static bool compute_queue_family(VkPhysicalDevice p, uint32_t *family) {
  uint32_t n = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(p, &n, NULL);
  VkQueueFamilyProperties *q = g_new0(VkQueueFamilyProperties, MAX(n, 1));
  vkGetPhysicalDeviceQueueFamilyProperties(p, &n, q);
  bool found = false;
  /* a compute queue without graphics first (often a dedicated engine) */
  for (int pass = 0; pass < 2 && !found; pass++)
    for (uint32_t i = 0; i < n && !found; i++) {
      bool compute = (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) != 0;
      bool graphics = (q[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) != 0;
      if (compute && q[i].queueCount > 0 && (pass == 1 || !graphics)) {
        *family = i;
        found = true;
      }
    }
  g_free(q);
  return found;
}

/* Usable devices (Vulkan 1.1, a compute queue, subgroup arithmetic in
 * compute shaders), best first. Returns the count; *out (g_free) holds them. */
static int usable_devices(VkInstance inst, VkPhysicalDevice **out) {
  uint32_t n = 0;
  vkEnumeratePhysicalDevices(inst, &n, NULL);
  VkPhysicalDevice *all = g_new0(VkPhysicalDevice, MAX(n, 1));
  vkEnumeratePhysicalDevices(inst, &n, all);
  VkPhysicalDevice *ok = g_new0(VkPhysicalDevice, MAX(n, 1));
  int m = 0;
  for (uint32_t i = 0; i < n; i++) {
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(all[i], &p);
    uint32_t fam;
    if (p.apiVersion < VK_API_VERSION_1_1 || !compute_queue_family(all[i], &fam)) continue;
    VkPhysicalDeviceSubgroupProperties sg = {.sType =
                                                 VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &sg};
    vkGetPhysicalDeviceProperties2(all[i], &p2);
    uint32_t need = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_ARITHMETIC_BIT;
    if (!(sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) ||
        (sg.supportedOperations & need) != need)
      continue;
    /* insertion keeps enumeration order within a rank */
    int at = m;
    while (at > 0) {
      VkPhysicalDeviceProperties q;
      vkGetPhysicalDeviceProperties(ok[at - 1], &q);
      if (device_rank(q.deviceType) <= device_rank(p.deviceType)) break;
      ok[at] = ok[at - 1];
      at--;
    }
    ok[at] = all[i];
    m++;
  }
  g_free(all);
  *out = ok;
  return m;
}

static bool has_extension(const VkExtensionProperties *ext, uint32_t n, const char *name) {
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(ext[i].extensionName, name) == 0) return true;
  return false;
}

/* What a device offers that the plugin uses. */
typedef struct vk_caps {
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties mem;
  char driver[160];
  uint64_t max_alloc;
  uint32_t subgroup_size, subgroup_min;
  bool push_descriptor, storage16, coopmat_nv, float16, memory_model, driver_props;
  uint32_t sm_count;
} vk_caps;

#ifdef TP_VK_HAVE_COOPMAT_NV
/* The NV cooperative-matrix shape the GEMM shader uses: 16x16x16, f16 A/B,
 * f32 C, subgroup scope. */
static bool coopmat_nv_shape(VkInstance inst, VkPhysicalDevice p) {
  PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
      (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
          inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
  if (!get) return false;
  uint32_t n = 0;
  if (get(p, &n, NULL) != VK_SUCCESS || n == 0) return false;
  VkCooperativeMatrixPropertiesNV *cp = g_new0(VkCooperativeMatrixPropertiesNV, n);
  for (uint32_t i = 0; i < n; i++) cp[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
  bool found = false;
  if (get(p, &n, cp) == VK_SUCCESS)
    for (uint32_t i = 0; i < n; i++)
      if (cp[i].MSize == 16 && cp[i].NSize == 16 && cp[i].KSize == 16 &&
          cp[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
          cp[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
          cp[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
          cp[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV && cp[i].scope == VK_SCOPE_SUBGROUP_NV)
        found = true;
  g_free(cp);
  return found;
}
#endif

static void caps_query(VkInstance inst, VkPhysicalDevice p, vk_caps *c) {
  memset(c, 0, sizeof *c);
  vkGetPhysicalDeviceProperties(p, &c->props);
  vkGetPhysicalDeviceMemoryProperties(p, &c->mem);
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(p, NULL, &n, NULL);
  VkExtensionProperties *ext = g_new0(VkExtensionProperties, MAX(n, 1));
  vkEnumerateDeviceExtensionProperties(p, NULL, &n, ext);
  c->push_descriptor = has_extension(ext, n, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  c->driver_props = c->props.apiVersion >= VK_API_VERSION_1_2 ||
                    has_extension(ext, n, VK_KHR_DRIVER_PROPERTIES_EXTENSION_NAME);
  bool nv_cm = has_extension(ext, n, "VK_NV_cooperative_matrix");
  bool sm = has_extension(ext, n, VK_NV_SHADER_SM_BUILTINS_EXTENSION_NAME);
  bool f16ext = c->props.apiVersion >= VK_API_VERSION_1_2 ||
                has_extension(ext, n, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME);
  bool sg_control = c->props.apiVersion >= VK_API_VERSION_1_3 ||
                    has_extension(ext, n, VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
  bool mm_ext = c->props.apiVersion >= VK_API_VERSION_1_2 ||
                has_extension(ext, n, VK_KHR_VULKAN_MEMORY_MODEL_EXTENSION_NAME);
  g_free(ext);

  VkPhysicalDeviceMaintenance3Properties m3 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceSubgroupProperties sg = {.sType =
                                               VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
                                           .pNext = &m3};
  VkPhysicalDeviceDriverProperties drv = {.sType =
                                              VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceShaderSMBuiltinsPropertiesNV smp = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV};
  if (c->driver_props) {
    drv.pNext = sg.pNext;
    sg.pNext = &drv;
  }
  if (sm) {
    smp.pNext = sg.pNext;
    sg.pNext = &smp;
  }
  VkPhysicalDeviceSubgroupSizeControlPropertiesEXT sgc = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT};
  if (sg_control) {
    sgc.pNext = sg.pNext;
    sg.pNext = &sgc;
  }
  VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                    .pNext = &sg};
  vkGetPhysicalDeviceProperties2(p, &p2);
  c->max_alloc = m3.maxMemoryAllocationSize;
  c->subgroup_size = sg.subgroupSize;
  /* without the bound, assume the smallest subgroup Vulkan allows in practice */
  c->subgroup_min = sg_control && sgc.minSubgroupSize ? MIN(sgc.minSubgroupSize, sg.subgroupSize)
                                                      : MIN(4u, sg.subgroupSize);
  c->sm_count = sm ? smp.shaderSMCount : 0;
  if (c->driver_props)
    g_snprintf(c->driver, sizeof c->driver, "%s (%s)", drv.driverName, drv.driverInfo);
  else
    snprintf(c->driver, sizeof c->driver, "driver version 0x%x", c->props.driverVersion);

  VkPhysicalDevice16BitStorageFeatures s16 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  VkPhysicalDeviceShaderFloat16Int8Features f16 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES};
  /* the cooperative-matrix shader declares the Vulkan memory model */
  VkPhysicalDeviceVulkanMemoryModelFeatures mm = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES};
  if (f16ext) s16.pNext = &f16;
  if (mm_ext) {
    mm.pNext = s16.pNext;
    s16.pNext = &mm;
  }
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                  .pNext = &s16};
  vkGetPhysicalDeviceFeatures2(p, &f2);
  c->storage16 = s16.storageBuffer16BitAccess;
  c->float16 = f16ext && f16.shaderFloat16;
  c->memory_model = mm_ext && mm.vulkanMemoryModel;
#ifdef TP_VK_HAVE_COOPMAT_NV
  c->coopmat_nv = nv_cm && c->storage16 && c->float16 && c->memory_model &&
                  c->subgroup_size == 32 && coopmat_nv_shape(inst, p);
#else
  (void)nv_cm;
  (void)inst;
#endif
}

/* The largest DEVICE_LOCAL heap (the device's memory). */
static uint64_t device_heap_bytes(const VkPhysicalDeviceMemoryProperties *m) {
  uint64_t best = 0;
  for (uint32_t i = 0; i < m->memoryHeapCount; i++)
    if ((m->memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) && m->memoryHeaps[i].size > best)
      best = m->memoryHeaps[i].size;
  return best;
}

/* Unified memory: a device-local type that is also host visible and
 * coherent, on a device that is not discrete (there it would be a small
 * BAR window). */
static int uma_memory_type(const vk_caps *c) {
  if (c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU) return -1;
  VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                               VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                               VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  for (uint32_t i = 0; i < c->mem.memoryTypeCount; i++)
    if ((c->mem.memoryTypes[i].propertyFlags & want) == want &&
        c->mem.memoryHeaps[c->mem.memoryTypes[i].heapIndex].size >= device_heap_bytes(&c->mem))
      return (int)i;
  return -1;
}

static uint32_t binding_align(const vk_caps *c) {
  return MAX((uint32_t)c->props.limits.minStorageBufferOffsetAlignment, 4u);
}

static void info_fill(const vk_caps *c, tp_device_info *in) {
  memset(in, 0, sizeof *in);
  const VkPhysicalDeviceLimits *l = &c->props.limits;
  g_strlcpy(in->name, c->props.deviceName, sizeof in->name);
  in->memory_bytes = device_heap_bytes(&c->mem);
  in->compute_units = (int)c->sm_count;
  in->is_software = c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
  in->is_discrete = c->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU;
  in->host_visible = uma_memory_type(c) >= 0;
  in->max_alloc_bytes = c->max_alloc ? MIN(c->max_alloc, in->memory_bytes) : in->memory_bytes;
  in->max_binding_bytes = l->maxStorageBufferRange & ~(uint64_t)15;
  in->offset_align = binding_align(c);
  in->gemm_compute = TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16);
  in->max_head_dim = ATT_MAX_HD;
  in->storage_dtypes = TP_DTYPE_BIT(TP_F32) | TP_DTYPE_BIT(TP_I32);
  if (c->storage16) in->storage_dtypes |= TP_DTYPE_BIT(TP_BF16) | TP_DTYPE_BIT(TP_F16);
  /* memory and limits have their own fields (`tensorplug plugins` prints them) */
  g_snprintf(in->description, sizeof in->description,
             "%s; driver %s; Vulkan %u.%u.%u; subgroup %u, shared memory %u KiB",
             device_type_name(c->props.deviceType), c->driver,
             VK_API_VERSION_MAJOR(c->props.apiVersion), VK_API_VERSION_MINOR(c->props.apiVersion),
             VK_API_VERSION_PATCH(c->props.apiVersion), c->subgroup_size,
             l->maxComputeSharedMemorySize / 1024);
  g_snprintf(in->features, sizeof in->features, "subgroup arithmetic%s%s%s",
           c->push_descriptor ? ", VK_KHR_push_descriptor" : "",
           c->storage16 ? ", 16-bit storage" : "",
           c->coopmat_nv ? ", VK_NV_cooperative_matrix (f16)" : "");
}

static int vk_probe(tp_device_info *infos, int max, GError **err) {
  uint32_t api;
  VkInstance inst = instance_new(&api, err);
  if (!inst) return 0;
  VkPhysicalDevice *devs = NULL;
  int n = usable_devices(inst, &devs);
  if (n == 0)
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: no usable device (needs Vulkan 1.1 with compute queues and subgroup "
                "arithmetic); `vulkaninfo --summary` lists what the loader sees");
  for (int i = 0; i < n && i < max && infos; i++) {
    vk_caps c;
    caps_query(inst, devs[i], &c);
    info_fill(&c, &infos[i]);
  }
  g_free(devs);
  vkDestroyInstance(inst, NULL);
  return n;
}

/* ---------------------------------------------------------------- memory */

static void buffer_destroy(tp_backend_dev *d, tp_buffer *b) {
  if (!b) return;
  if (b->map) vkUnmapMemory(d->dev, b->mem);
  vkDestroyBuffer(d->dev, b->buf, NULL);
  vkFreeMemory(d->dev, b->mem, NULL);
  g_free(b);
}

static tp_buffer *buffer_new(tp_backend_dev *d, size_t bytes, uint32_t mem_type, bool map,
                             GError **err) {
  tp_buffer *b = g_new0(tp_buffer, 1);
  b->size = bytes;
  b->alloc = MAX(((VkDeviceSize)bytes + 15) & ~(VkDeviceSize)15, 16);
  VkBufferCreateInfo bi = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = b->alloc,
      .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
  };
  VkResult r = vkCreateBuffer(d->dev, &bi, NULL, &b->buf);
  VkMemoryRequirements req = {0};
  if (r == VK_SUCCESS) {
    vkGetBufferMemoryRequirements(d->dev, b->buf, &req);
    if (!(req.memoryTypeBits & (1u << mem_type))) r = VK_ERROR_FEATURE_NOT_PRESENT;
  }
  if (r == VK_SUCCESS) {
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                               .allocationSize = req.size,
                               .memoryTypeIndex = mem_type};
    r = vkAllocateMemory(d->dev, &ai, NULL, &b->mem);
    if (r != VK_SUCCESS) b->mem = VK_NULL_HANDLE;
  }
  if (r == VK_SUCCESS) r = vkBindBufferMemory(d->dev, b->buf, b->mem, 0);
  if (r == VK_SUCCESS && map) r = vkMapMemory(d->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map);
  if (r != VK_SUCCESS) {
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      g_set_error(err, VK_ERROR, TP_ERROR_OUT_OF_MEMORY,
                  "vulkan: out of %s memory allocating %.1f MiB (device has %.0f MiB, %.1f MiB "
                  "in use by tensorplug): use a smaller --batch",
                  r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? "device" : "host", (double)bytes / MIB,
                  (double)d->heap_bytes / MIB, (double)d->used_bytes / MIB);
    else
      g_set_error(err, VK_ERROR, TP_ERROR_BACKEND,
                  "vulkan: creating a buffer of %zu bytes failed (%s)", bytes, vk_result_name(r));
    if (b->buf) vkDestroyBuffer(d->dev, b->buf, NULL);
    if (b->mem) vkFreeMemory(d->dev, b->mem, NULL);
    g_free(b);
    return NULL;
  }
  return b;
}

static tp_buffer *vk_buffer_alloc(tp_backend_dev *d, size_t bytes, GError **err) {
  if ((uint64_t)bytes > d->info.max_alloc_bytes) {
    g_set_error(err, VK_ERROR, TP_ERROR_OUT_OF_MEMORY,
                "vulkan: a buffer of %.1f MiB is larger than the device's largest allocation "
                "(%.0f MiB; device has %.0f MiB): use a smaller --batch",
                (double)bytes / MIB, (double)d->info.max_alloc_bytes / MIB,
                (double)d->heap_bytes / MIB);
    return NULL;
  }
  tp_buffer *b = buffer_new(d, bytes, d->dev_mem_type, d->dev_mem_mapped, err);
  if (b) d->used_bytes += b->alloc;
  return b;
}

static void *vk_buffer_host_ptr(tp_buffer *b) { return b ? b->map : NULL; }

/* --------------------------------------------------------------- batches */

/* Releases what a finished batch held: the buffers freed while it was
 * recorded, its staging chunks, its descriptor sets. */
static void batch_release(tp_backend_dev *d, vk_batch *b) {
  b->in_flight = false;
  for (guint i = 0; i < b->garbage->len; i++) buffer_destroy(d, g_ptr_array_index(b->garbage, i));
  g_ptr_array_set_size(b->garbage, 0);
  for (guint i = 0; i < b->chunks->len; i++) {
    tp_buffer *c = g_ptr_array_index(b->chunks, i);
    if (d->free_chunks->len < VK_STAGE_CHUNKS_KEPT)
      g_ptr_array_add(d->free_chunks, c);
    else
      buffer_destroy(d, c);
  }
  g_ptr_array_set_size(b->chunks, 0);
  b->chunk_used = 0;
  for (guint i = 0; i < b->pool_next; i++)
    vkResetDescriptorPool(d->dev, g_array_index(b->pools, VkDescriptorPool, i), 0);
  b->pool_next = 0;
  b->pool_sets_left = 0;
}

static void batch_retire(tp_backend_dev *d, vk_batch *b) {
  if (!b->in_flight) return;
  VkResult r = vkWaitForFences(d->dev, 1, &b->fence, VK_TRUE, UINT64_MAX);
  if (r != VK_SUCCESS) {
    vk_set_error(d, TP_ERROR_BACKEND, "vulkan: waiting for the queue failed (%s)",
                 vk_result_name(r));
    vkDeviceWaitIdle(d->dev);
  }
  vkResetFences(d->dev, 1, &b->fence);
  batch_release(d, b);
}

/* The batch being recorded, begun if needed (waiting for the ring slot). */
static vk_batch *batch_get(tp_backend_dev *d) {
  vk_batch *b = &d->batches[d->cur];
  if (b->recording) return b;
  batch_retire(d, b); /* the oldest in flight: retirement stays in order */
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                 .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
  vkBeginCommandBuffer(b->cmd, &bi);
  b->recording = true;
  b->commands = 0;
  return b;
}

static void batch_submit(tp_backend_dev *d) {
  vk_batch *b = &d->batches[d->cur];
  if (!b->recording) return;
  /* make every write visible to the host (downloads, mapped buffers) */
  VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                        .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
  vkCmdPipelineBarrier(b->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
  vkEndCommandBuffer(b->cmd);
  VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
                     .commandBufferCount = 1,
                     .pCommandBuffers = &b->cmd};
  VkResult r = vkQueueSubmit(d->queue, 1, &si, b->fence);
  b->recording = false;
  if (r != VK_SUCCESS) {
    /* nothing will signal the fence: release the batch once the device is idle */
    vk_set_error(d, TP_ERROR_BACKEND, "vulkan: queue submission failed (%s)", vk_result_name(r));
    vkDeviceWaitIdle(d->dev);
    batch_release(d, b);
  } else {
    b->in_flight = true;
  }
  d->submits++;
  d->cur = (d->cur + 1) % VK_BATCHES;
}

/* Submits the current batch and waits for every batch, oldest first. */
static void queue_finish(tp_backend_dev *d) {
  batch_submit(d);
  for (int i = 0; i < VK_BATCHES; i++) batch_retire(d, &d->batches[(d->cur + i) % VK_BATCHES]);
}

/* A command about to be recorded: a full memory barrier orders it after
 * everything recorded before (and, at the start of a command buffer, after
 * earlier submissions). */
static VkCommandBuffer command_begin(tp_backend_dev *d) {
  vk_batch *b = batch_get(d);
  VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
      .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                       VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
  };
  VkPipelineStageFlags st = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(b->cmd, st, st, 0, 1, &mb, 0, NULL, 0, NULL);
  return b->cmd;
}

static void command_end(tp_backend_dev *d) {
  vk_batch *b = &d->batches[d->cur];
  if (++b->commands >= VK_BATCH_COMMANDS) batch_submit(d);
}

/* Staging space in the current batch: up to *avail bytes at (*chunk, *off).
 * Submits the batch first when it has used all its chunks. */
static bool stage_space(tp_backend_dev *d, size_t want, tp_buffer **chunk, size_t *off,
                        size_t *avail, GError **err) {
  for (;;) {
    vk_batch *b = batch_get(d);
    if (b->chunks->len > 0) {
      size_t left = VK_STAGE_CHUNK - b->chunk_used;
      if (left >= MIN(want, (size_t)64 << 10)) {
        *chunk = g_ptr_array_index(b->chunks, b->chunks->len - 1);
        *off = b->chunk_used;
        *avail = left;
        return true;
      }
    }
    if (b->chunks->len >= VK_STAGE_CHUNKS_PER_BATCH) {
      batch_submit(d);
      continue;
    }
    tp_buffer *c = NULL;
    if (d->free_chunks->len > 0) {
      c = g_ptr_array_steal_index(d->free_chunks, d->free_chunks->len - 1);
    } else {
      c = buffer_new(d, VK_STAGE_CHUNK, d->host_mem_type, true, err);
      if (!c) return false;
    }
    g_ptr_array_add(b->chunks, c);
    b->chunk_used = 0;
  }
}

static void stage_consume(tp_backend_dev *d, size_t bytes) {
  vk_batch *b = &d->batches[d->cur];
  b->chunk_used = MIN(VK_STAGE_CHUNK, b->chunk_used + ((bytes + 15) & ~(size_t)15));
}

/* --------------------------------------------------------- open / close */

static bool pick_memory_types(tp_backend_dev *d, const vk_caps *c, GError **err) {
  int uma = uma_memory_type(c);
  const VkPhysicalDeviceMemoryProperties *m = &c->mem;
  int dev = uma, host = -1, host_cached = -1;
  for (uint32_t i = 0; i < m->memoryTypeCount; i++) {
    VkMemoryPropertyFlags f = m->memoryTypes[i].propertyFlags;
    bool local = f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    bool visible = f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    bool coherent = f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    if (dev < 0 && local && !visible) dev = (int)i;
    if (visible && coherent) {
      if (host < 0) host = (int)i;
      if (host_cached < 0 && (f & VK_MEMORY_PROPERTY_HOST_CACHED_BIT)) host_cached = (int)i;
    }
  }
  for (uint32_t i = 0; i < m->memoryTypeCount && dev < 0; i++)
    if (m->memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) dev = (int)i;
  if (dev < 0 || host < 0) {
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: %s has no %s memory type", c->props.deviceName,
                dev < 0 ? "device-local" : "host-visible coherent");
    return false;
  }
  d->dev_mem_type = (uint32_t)dev;
  d->dev_mem_mapped = dev == uma;
  d->host_mem_type = (uint32_t)(host_cached >= 0 ? host_cached : host);
  d->heap_bytes = device_heap_bytes(m);
  return true;
}

static bool layouts_create(tp_backend_dev *d, GError **err) {
  VkDescriptorSetLayoutBinding binds[VK_MAX_BINDINGS];
  for (int i = 0; i < VK_MAX_BINDINGS; i++)
    binds[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i,
                                              .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                              .descriptorCount = 1,
                                              .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
  VkDescriptorSetLayoutCreateInfo li = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
      .flags = d->push_descriptors ? VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR : 0,
      .bindingCount = VK_MAX_BINDINGS,
      .pBindings = binds,
  };
  VkResult r = vkCreateDescriptorSetLayout(d->dev, &li, NULL, &d->set_layout);
  if (r == VK_SUCCESS) {
    VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = VK_PUSH_BYTES};
    VkPipelineLayoutCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
                                     .setLayoutCount = 1,
                                     .pSetLayouts = &d->set_layout,
                                     .pushConstantRangeCount = 1,
                                     .pPushConstantRanges = &pr};
    r = vkCreatePipelineLayout(d->dev, &pi, NULL, &d->pipe_layout);
  }
  if (r != VK_SUCCESS) {
    g_set_error(err, VK_ERROR, TP_ERROR_BACKEND, "vulkan: creating the pipeline layout failed (%s)",
                vk_result_name(r));
    return false;
  }
  return true;
}

static void vk_close(tp_backend_dev *d);
static void coopmat_selfcheck(tp_backend_dev *d);

static bool device_create(tp_backend_dev *d, const vk_caps *c, GError **err) {
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                .queueFamilyIndex = d->queue_family,
                                .queueCount = 1,
                                .pQueuePriorities = &prio};
  const char *exts[5];
  uint32_t next = 0;
  if (d->push_descriptors) exts[next++] = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
  if (d->coopmat) exts[next++] = "VK_NV_cooperative_matrix";
  if (d->coopmat && c->props.apiVersion < VK_API_VERSION_1_2) {
    exts[next++] = VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME;
    exts[next++] = VK_KHR_VULKAN_MEMORY_MODEL_EXTENSION_NAME;
  }
  VkPhysicalDevice16BitStorageFeatures s16 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
      .storageBuffer16BitAccess = d->storage16};
  VkPhysicalDeviceShaderFloat16Int8Features f16 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
      .shaderFloat16 = VK_TRUE};
#ifdef TP_VK_HAVE_COOPMAT_NV
  VkPhysicalDeviceVulkanMemoryModelFeatures mm = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES,
      .vulkanMemoryModel = VK_TRUE};
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
      .pNext = &mm,
      .cooperativeMatrix = VK_TRUE};
  if (d->coopmat) {
    f16.pNext = &cm;
    s16.pNext = &f16;
  }
#else
  (void)f16;
#endif
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                  .pNext = &s16};
  VkDeviceCreateInfo di = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
                           .pNext = &f2,
                           .queueCreateInfoCount = 1,
                           .pQueueCreateInfos = &qi,
                           .enabledExtensionCount = next,
                           .ppEnabledExtensionNames = exts};
  VkResult r = vkCreateDevice(d->phys, &di, NULL, &d->dev);
  if (r != VK_SUCCESS) {
    d->dev = VK_NULL_HANDLE;
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE, "vulkan: creating the device %s failed (%s)",
                c->props.deviceName, vk_result_name(r));
    return false;
  }
  vkGetDeviceQueue(d->dev, d->queue_family, 0, &d->queue);
  if (d->push_descriptors) {
    d->cmd_push_descriptor_set = (PFN_vkCmdPushDescriptorSetKHR)vkGetDeviceProcAddr(
        d->dev, "vkCmdPushDescriptorSetKHR");
    if (!d->cmd_push_descriptor_set) d->push_descriptors = false;
  }
  return true;
}

static bool queue_create(tp_backend_dev *d, GError **err) {
  VkCommandPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                .queueFamilyIndex = d->queue_family};
  VkResult r = vkCreateCommandPool(d->dev, &pi, NULL, &d->cmd_pool);
  for (int i = 0; i < VK_BATCHES && r == VK_SUCCESS; i++) {
    vk_batch *b = &d->batches[i];
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = d->cmd_pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    r = vkAllocateCommandBuffers(d->dev, &ai, &b->cmd);
    VkFenceCreateInfo fi = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (r == VK_SUCCESS) r = vkCreateFence(d->dev, &fi, NULL, &b->fence);
  }
  if (r != VK_SUCCESS) {
    g_set_error(err, VK_ERROR, TP_ERROR_BACKEND, "vulkan: creating the command queue failed (%s)",
                vk_result_name(r));
    return false;
  }
  return true;
}

static tp_backend_dev *vk_open(int index, int threads, GError **err) {
  (void)threads; /* the driver schedules the device's own threads */
  tp_backend_dev *d = g_new0(tp_backend_dev, 1);
  d->free_chunks = g_ptr_array_new();
  for (int i = 0; i < VK_BATCHES; i++) {
    d->batches[i].chunks = g_ptr_array_new();
    d->batches[i].garbage = g_ptr_array_new();
    d->batches[i].pools = g_array_new(FALSE, FALSE, sizeof(VkDescriptorPool));
  }
  uint32_t api;
  d->instance = instance_new(&api, err);
  if (!d->instance) {
    vk_close(d);
    return NULL;
  }
  VkPhysicalDevice *devs = NULL;
  int n = usable_devices(d->instance, &devs);
  if (index < 0 || index >= n) {
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: device %d does not exist (%d usable device%s; `tensorplug plugins` "
                "lists them)",
                index, n, n == 1 ? "" : "s");
    g_free(devs);
    vk_close(d);
    return NULL;
  }
  d->phys = devs[index];
  g_free(devs);
  vk_caps c;
  caps_query(d->instance, d->phys, &c);
  info_fill(&c, &d->info);
  d->props = c.props;
  d->mem_props = c.mem;
  d->align = binding_align(&c);
  d->max_range = c.props.limits.maxStorageBufferRange & ~(uint32_t)15;
  for (int i = 0; i < 3; i++) d->max_groups[i] = c.props.limits.maxComputeWorkGroupCount[i];
  d->subgroup_size = c.subgroup_size;
  d->subgroup_min = MAX(c.subgroup_min, 1u);
  d->storage16 = c.storage16;
  d->push_descriptors = c.push_descriptor && !env_flag("TENSORPLUG_VULKAN_NO_PUSH_DESCRIPTOR");
  d->coopmat = c.coopmat_nv && !env_flag("TENSORPLUG_VULKAN_NO_COOPMAT");
  d->profile = env_flag("TENSORPLUG_VULKAN_PROFILE");
  /* GEMM kernel: shared-memory tiles on GPUs, register blocks on CPU
   * implementations; $TENSORPLUG_VULKAN_GEMM=tiled|reg overrides (tests) */
  const char *gk = g_getenv("TENSORPLUG_VULKAN_GEMM");
  d->gemm_reg = gk && *gk ? strcmp(gk, "reg") == 0 : d->info.is_software;
  d->loop_limited = d->info.is_software;
  compute_queue_family(d->phys, &d->queue_family);
  if (c.props.limits.maxPerStageDescriptorStorageBuffers < VK_MAX_BINDINGS) {
    g_set_error(err, VK_ERROR, TP_ERROR_UNAVAILABLE,
                "vulkan: %s binds %u storage buffers per shader; tensorplug needs %d",
                c.props.deviceName, c.props.limits.maxPerStageDescriptorStorageBuffers,
                VK_MAX_BINDINGS);
    vk_close(d);
    return NULL;
  }
  if (!pick_memory_types(d, &c, err) || !device_create(d, &c, err) || !layouts_create(d, err) ||
      !queue_create(d, err)) {
    vk_close(d);
    return NULL;
  }
  /* the device's own small buffers */
  d->status = buffer_new(d, VK_STATUS_WORDS * 4, d->dev_mem_type, false, err);
  d->readback = d->status ? buffer_new(d, VK_STATUS_WORDS * 4, d->host_mem_type, true, err)
                          : NULL;
  d->dummy = d->readback ? buffer_new(d, 256, d->dev_mem_type, false, err) : NULL;
  if (!d->dummy) {
    vk_close(d);
    return NULL;
  }
  memset(d->readback->map, 0, VK_STATUS_WORDS * 4);
  vk_fill_words(d, (tp_mem){d->status, 0}, 0, VK_STATUS_WORDS * 4);
  vk_fill_words(d, (tp_mem){d->dummy, 0}, 0, 256);
  if (d->error) {
    g_propagate_error(err, d->error);
    d->error = NULL;
    vk_close(d);
    return NULL;
  }
  if (d->coopmat) coopmat_selfcheck(d);
  return d;
}

static void profile_print(tp_backend_dev *d);

static void vk_close(tp_backend_dev *d) {
  if (!d) return;
  if (d->dev) {
    queue_finish(d);
    if (d->profile) profile_print(d);
    vkDeviceWaitIdle(d->dev);
    for (int i = 0; i < VK_BATCHES; i++) {
      vk_batch *b = &d->batches[i];
      for (guint j = 0; j < b->pools->len; j++)
        vkDestroyDescriptorPool(d->dev, g_array_index(b->pools, VkDescriptorPool, j), NULL);
      if (b->fence) vkDestroyFence(d->dev, b->fence, NULL);
    }
    for (guint i = 0; i < d->free_chunks->len; i++)
      buffer_destroy(d, g_ptr_array_index(d->free_chunks, i));
    buffer_destroy(d, d->status);
    buffer_destroy(d, d->readback);
    buffer_destroy(d, d->dummy);
    buffer_destroy(d, d->scratch);
    for (int i = 0; i < VK_SH_COUNT; i++)
      if (d->pipes[i]) vkDestroyPipeline(d->dev, d->pipes[i], NULL);
    if (d->pipe_layout) vkDestroyPipelineLayout(d->dev, d->pipe_layout, NULL);
    if (d->set_layout) vkDestroyDescriptorSetLayout(d->dev, d->set_layout, NULL);
    if (d->cmd_pool) vkDestroyCommandPool(d->dev, d->cmd_pool, NULL);
    vkDestroyDevice(d->dev, NULL);
  }
  if (d->instance) vkDestroyInstance(d->instance, NULL);
  for (int i = 0; i < VK_BATCHES; i++) {
    g_ptr_array_free(d->batches[i].chunks, TRUE);
    g_ptr_array_free(d->batches[i].garbage, TRUE);
    g_array_free(d->batches[i].pools, TRUE);
  }
  g_ptr_array_free(d->free_chunks, TRUE);
  g_clear_error(&d->error);
  g_free(d);
}

/* ------------------------------------------------------ buffers, queue */

static void vk_buffer_free(tp_backend_dev *d, tp_buffer *b) {
  if (!b) return;
  d->used_bytes -= MIN(d->used_bytes, (uint64_t)b->alloc);
  /* queued work may still use it: released when this batch retires */
  g_ptr_array_add(batch_get(d)->garbage, b);
}

static bool check_range(const char *what, tp_mem m, size_t bytes, GError **err) {
  if (m.buf == NULL || m.off > m.buf->size || bytes > m.buf->size - m.off) {
    g_set_error(err, VK_ERROR, TP_ERROR_INVALID_ARGUMENT,
                "vulkan %s: %zu bytes at offset %zu exceed the buffer (%zu bytes)", what, bytes,
                m.off, m.buf ? m.buf->size : (size_t)0);
    return false;
  }
  return true;
}

static bool vk_upload(tp_backend_dev *d, tp_mem dst, const void *src, size_t bytes, GError **err) {
  if (!check_range("upload", dst, bytes, err)) return false;
  const char *p = src;
  size_t done = 0;
  while (done < bytes) {
    tp_buffer *chunk;
    size_t off, avail;
    if (!stage_space(d, bytes - done, &chunk, &off, &avail, err)) return false;
    size_t piece = MIN(bytes - done, avail);
    memcpy((char *)chunk->map + off, p + done, piece);
    VkCommandBuffer cmd = command_begin(d);
    VkBufferCopy region = {.srcOffset = off, .dstOffset = dst.off + done, .size = piece};
    vkCmdCopyBuffer(cmd, chunk->buf, dst.buf->buf, 1, &region);
    stage_consume(d, piece);
    command_end(d);
    done += piece;
  }
  return true;
}

bool vk_copy_queued(tp_backend_dev *d, tp_mem dst, tp_mem src, size_t bytes, GError **err) {
  if (!check_range("copy (source)", src, bytes, err) ||
      !check_range("copy (destination)", dst, bytes, err))
    return false;
  if (bytes == 0) return true;
  bool overlap = src.buf == dst.buf && src.off < dst.off + bytes && dst.off < src.off + bytes;
  if (!overlap) {
    VkCommandBuffer cmd = command_begin(d);
    VkBufferCopy region = {.srcOffset = src.off, .dstOffset = dst.off, .size = bytes};
    vkCmdCopyBuffer(cmd, src.buf->buf, dst.buf->buf, 1, &region);
    command_end(d);
    return true;
  }
  /* Vulkan copies must not overlap: go through a temporary buffer */
  tp_buffer *tmp = buffer_new(d, bytes, d->dev_mem_type, false, err);
  if (!tmp) return false;
  VkCommandBuffer cmd = command_begin(d);
  VkBufferCopy r1 = {.srcOffset = src.off, .dstOffset = 0, .size = bytes};
  vkCmdCopyBuffer(cmd, src.buf->buf, tmp->buf, 1, &r1);
  command_end(d);
  cmd = command_begin(d);
  VkBufferCopy r2 = {.srcOffset = 0, .dstOffset = dst.off, .size = bytes};
  vkCmdCopyBuffer(cmd, tmp->buf, dst.buf->buf, 1, &r2);
  g_ptr_array_add(d->batches[d->cur].garbage, tmp);
  command_end(d);
  return true;
}

/* Queues the status read-back (and its reset), waits for everything, and
 * reports the first failure since the last report. */
static bool sync_report(tp_backend_dev *d, GError **err) {
  VkCommandBuffer cmd = command_begin(d);
  VkBufferCopy region = {.size = VK_STATUS_WORDS * 4};
  vkCmdCopyBuffer(cmd, d->status->buf, d->readback->buf, 1, &region);
  command_end(d);
  cmd = command_begin(d);
  vkCmdFillBuffer(cmd, d->status->buf, 0, VK_STATUS_WORDS * 4, 0);
  command_end(d);
  queue_finish(d);
  GError *e = d->error;
  d->error = NULL;
  uint32_t st[VK_STATUS_WORDS];
  memcpy(st, d->readback->map, sizeof st);
  if (!e && st[0] != VK_ERR_NONE) {
    char *msg = vk_status_message(st);
    e = g_error_new_literal(VK_ERROR, TP_ERROR_INVALID_ARGUMENT, msg);
    g_free(msg);
  }
  if (e) {
    g_propagate_error(err, e);
    return false;
  }
  return true;
}

static bool vk_synchronize(tp_backend_dev *d, GError **err) { return sync_report(d, err); }

static bool vk_download(tp_backend_dev *d, void *dst, tp_mem src, size_t bytes, GError **err) {
  if (!check_range("download", src, bytes, err)) return false;
  if (src.buf->map) { /* unified memory: read it in place once the queue is idle */
    bool ok = sync_report(d, err);
    if (bytes) memcpy(dst, (const char *)src.buf->map + src.off, bytes);
    return ok;
  }
  GError *first = NULL;
  bool ok = true;
  size_t done = 0;
  do {
    tp_buffer *chunk;
    size_t off, avail;
    size_t piece = 0;
    if (done < bytes) {
      if (!stage_space(d, bytes - done, &chunk, &off, &avail, err)) return false;
      piece = MIN(bytes - done, avail);
      VkCommandBuffer cmd = command_begin(d);
      VkBufferCopy region = {.srcOffset = src.off + done, .dstOffset = off, .size = piece};
      vkCmdCopyBuffer(cmd, src.buf->buf, chunk->buf, 1, &region);
      stage_consume(d, piece);
      command_end(d);
      /* the chunk stays valid until the batch retires, which happens below
       * (sync_report waits for everything), and nothing reuses it before */
      g_ptr_array_remove(d->batches[d->cur].chunks, chunk);
    }
    GError *e = NULL;
    if (!sync_report(d, &e)) {
      ok = false;
      if (!first) first = e;
      else g_error_free(e);
    }
    if (piece) {
      memcpy((char *)dst + done, (const char *)chunk->map + off, piece);
      if (d->free_chunks->len < VK_STAGE_CHUNKS_KEPT)
        g_ptr_array_add(d->free_chunks, chunk);
      else
        buffer_destroy(d, chunk);
    }
    done += piece;
  } while (done < bytes);
  if (first) g_propagate_error(err, first);
  return ok;
}

/* ------------------------------------------------------------- dispatch */

static VkPipeline pipeline_get(tp_backend_dev *d, vk_shader_id sh) {
  if (d->pipes[sh]) return d->pipes[sh];
  const vk_shader_code *code = &vk_shader_table[sh];
  VkShaderModuleCreateInfo mi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
                                 .codeSize = code->bytes,
                                 .pCode = code->code};
  VkShaderModule mod;
  VkResult r = vkCreateShaderModule(d->dev, &mi, NULL, &mod);
  if (r == VK_SUCCESS) {
    /* constant 0: the smallest subgroup (shaders that size register
     * arrays by it); shaders without it ignore the entry */
    VkSpecializationMapEntry me = {.constantID = 0, .offset = 0, .size = sizeof(uint32_t)};
    VkSpecializationInfo spec = {.mapEntryCount = 1,
                                 .pMapEntries = &me,
                                 .dataSize = sizeof d->subgroup_min,
                                 .pData = &d->subgroup_min};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
                  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod,
                  .pName = "main",
                  .pSpecializationInfo = &spec},
        .layout = d->pipe_layout,
    };
    r = vkCreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &ci, NULL, &d->pipes[sh]);
    vkDestroyShaderModule(d->dev, mod, NULL);
  }
  if (r != VK_SUCCESS) {
    d->pipes[sh] = VK_NULL_HANDLE;
    vk_set_error(d, TP_ERROR_BACKEND, "vulkan: creating the pipeline of shader %s failed (%s)",
                 code->name, vk_result_name(r));
  }
  return d->pipes[sh];
}

/* A descriptor set from the batch's pools (without push descriptors); the
 * pools are reset when the batch retires and reused. */
static VkDescriptorSet descriptor_set_new(tp_backend_dev *d, vk_batch *b) {
  enum { SETS = 256 };
  if (b->pool_sets_left == 0) {
    if (b->pool_next == b->pools->len) {
      VkDescriptorPool pool = VK_NULL_HANDLE;
      VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                 .descriptorCount = SETS * VK_MAX_BINDINGS};
      VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                       .maxSets = SETS,
                                       .poolSizeCount = 1,
                                       .pPoolSizes = &ps};
      VkResult r = vkCreateDescriptorPool(d->dev, &pi, NULL, &pool);
      if (r != VK_SUCCESS) {
        vk_set_error(d, TP_ERROR_BACKEND, "vulkan: creating a descriptor pool failed (%s)",
                     vk_result_name(r));
        return VK_NULL_HANDLE;
      }
      g_array_append_val(b->pools, pool);
    }
    b->pool_next++;
    b->pool_sets_left = SETS;
  }
  VkDescriptorPool pool = g_array_index(b->pools, VkDescriptorPool, b->pool_next - 1);
  VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                    .descriptorPool = pool,
                                    .descriptorSetCount = 1,
                                    .pSetLayouts = &d->set_layout};
  VkDescriptorSet set = VK_NULL_HANDLE;
  VkResult r = vkAllocateDescriptorSets(d->dev, &ai, &set);
  if (r != VK_SUCCESS) {
    vk_set_error(d, TP_ERROR_BACKEND, "vulkan: allocating a descriptor set failed (%s)",
                 vk_result_name(r));
    return VK_NULL_HANDLE;
  }
  b->pool_sets_left--;
  return set;
}

void vk_dispatch(tp_backend_dev *d, vk_shader_id sh, const vk_arg *args, int n, const void *params,
                 size_t param_bytes, uint32_t gx, uint32_t gy, uint32_t gz) {
  g_assert(n + 1 <= VK_MAX_BINDINGS && param_bytes <= VK_PARAM_WORDS * 4);
  if (gx == 0 || gy == 0 || gz == 0) return;
  VkPipeline pipe = pipeline_get(d, sh);
  if (!pipe) return;
  uint32_t push[VK_PUSH_BYTES / 4] = {0};
  VkDescriptorBufferInfo infos[VK_MAX_BINDINGS];
  infos[0] = (VkDescriptorBufferInfo){d->status->buf, 0, VK_WHOLE_SIZE};
  for (int i = 0; i < n; i++) {
    tp_mem m = args[i].m;
    if (!m.buf) {
      infos[i + 1] = (VkDescriptorBufferInfo){d->dummy->buf, 0, VK_WHOLE_SIZE};
      continue;
    }
    VkDeviceSize base = m.off & ~(VkDeviceSize)(d->align - 1);
    uint32_t rem = (uint32_t)(m.off - base);
    if (base >= m.buf->alloc || rem % args[i].esize != 0) {
      vk_set_error(d, TP_ERROR_INVALID_ARGUMENT,
                   "vulkan %s: argument %d at offset %zu is not inside its buffer (%zu bytes) or "
                   "not a multiple of its element size %u",
                   vk_shader_table[sh].name, i, m.off, m.buf->size, args[i].esize);
      return;
    }
    uint32_t b = (uint32_t)i + 1, elems = rem / args[i].esize;
    push[b >> 2] |= elems << ((b & 3) * 8);
    infos[i + 1] = (VkDescriptorBufferInfo){m.buf->buf, base, MIN(m.buf->alloc - base, d->max_range)};
  }
  if (param_bytes) memcpy(push + 4, params, param_bytes);

  VkWriteDescriptorSet w[VK_MAX_BINDINGS];
  for (int i = 0; i <= n; i++)
    w[i] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
                                  .dstBinding = (uint32_t)i,
                                  .descriptorCount = 1,
                                  .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                  .pBufferInfo = &infos[i]};
  VkCommandBuffer cmd = command_begin(d);
  vk_batch *b = &d->batches[d->cur];
  if (d->push_descriptors) {
    d->cmd_push_descriptor_set(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->pipe_layout, 0,
                               (uint32_t)n + 1, w);
  } else {
    VkDescriptorSet set = descriptor_set_new(d, b);
    if (!set) {
      command_end(d);
      return;
    }
    for (int i = 0; i <= n; i++) w[i].dstSet = set;
    vkUpdateDescriptorSets(d->dev, (uint32_t)n + 1, w, 0, NULL);
    vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, d->pipe_layout, 0, 1, &set, 0,
                            NULL);
  }
  vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
  vkCmdPushConstants(cmd, d->pipe_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, VK_PUSH_BYTES, push);
  vkCmdDispatch(cmd, MIN(gx, d->max_groups[0]), MIN(gy, d->max_groups[1]),
                MIN(gz, d->max_groups[2]));
  d->dispatches++;
  command_end(d);
  if (d->profile) {
    gint64 t0 = g_get_monotonic_time();
    queue_finish(d);
    d->prof_seconds[sh] += (double)(g_get_monotonic_time() - t0) / 1e6;
    d->prof_calls[sh]++;
  }
}

static void profile_print(tp_backend_dev *d) {
  double total = 0;
  for (int i = 0; i < VK_SH_COUNT; i++) total += d->prof_seconds[i];
  fprintf(stderr, "vulkan profile (%s): %.3f s in %" PRIu64 " dispatches, %" PRIu64 " submissions\n",
          d->info.name, total, d->dispatches, d->submits);
  for (int i = 0; i < VK_SH_COUNT; i++)
    if (d->prof_calls[i])
      fprintf(stderr, "  %-16s %8" PRIu64 " calls %10.3f s %6.1f%%\n", vk_shader_table[i].name,
              d->prof_calls[i], d->prof_seconds[i], 100.0 * d->prof_seconds[i] / MAX(total, 1e-9));
}

void vk_fill_words(tp_backend_dev *d, tp_mem dst, uint32_t word, size_t bytes) {
  if (bytes == 0) return;
  VkCommandBuffer cmd = command_begin(d);
  vkCmdFillBuffer(cmd, dst.buf->buf, dst.off, bytes, word);
  command_end(d);
}

tp_mem vk_scratch(tp_backend_dev *d, size_t bytes) {
  if (d->scratch && d->scratch->size >= bytes) return (tp_mem){d->scratch, 0};
  size_t want = MAX(bytes, d->scratch ? d->scratch->size * 2 : (size_t)1 << 20);
  want = MIN(want, MAX(bytes, (size_t)d->max_range));
  GError *e = NULL;
  tp_buffer *s = buffer_new(d, want, d->dev_mem_type, false, &e);
  if (!s) {
    vk_set_error(d, e->code, "%s (kernel scratch memory)", e->message);
    g_error_free(e);
    return (tp_mem){NULL, 0};
  }
  if (d->scratch) g_ptr_array_add(batch_get(d)->garbage, d->scratch);
  d->scratch = s;
  return (tp_mem){s, 0};
}

/* ------------------------------------------------ cooperative matrices */

/* The f16 cooperative-matrix GEMM against the device's other GEMM kernel on
 * products with odd sizes, every transpose and summed batches (both round
 * A and B to f16 and sum in f32). Any failure or difference turns the path
 * off: it is checked where it runs, since machines without the extension
 * cannot test it. */
static void coopmat_selfcheck(tp_backend_dev *d) {
  enum { M = 67, N = 45, K = 70, BATCH = 2 };
  const size_t na = (size_t)BATCH * M * K, nb = (size_t)BATCH * K * N, nc = (size_t)BATCH * M * N;
  float *h = g_new(float, na + nb + nc), *got = g_new(float, 2 * nc);
  uint32_t x = 12345u;
  for (size_t i = 0; i < na + nb + nc; i++) {
    x = x * 1664525u + 1013904223u; /* an LCG: any spread of values will do */
    h[i] = (float)(x >> 8) / 16777216.0f - 0.5f;
  }
  GError *e = NULL;
  tp_buffer *a = vk_buffer_alloc(d, na * 4, &e), *b = a ? vk_buffer_alloc(d, nb * 4, &e) : NULL;
  tp_buffer *c0 = b ? vk_buffer_alloc(d, nc * 4, &e) : NULL, *c1 = c0 ? vk_buffer_alloc(d, nc * 4, &e) : NULL;
  bool ok = c1 && vk_upload(d, (tp_mem){a, 0}, h, na * 4, &e) &&
            vk_upload(d, (tp_mem){b, 0}, h + na, nb * 4, &e);
  double worst = 0.0;
  for (int t = 0; t < 8 && ok; t++) {
    bool ta = t & 1, tb = (t >> 1) & 1, summed = t >> 2;
    tp_gemm_args g = {.ta = ta, .tb = tb, .m = M, .n = N, .k = K, .batch = BATCH,
                      .alpha = 1.0f, .beta = 0.5f, .a = {a, 0}, .b = {b, 0},
                      .lda = ta ? M : K, .ldb = tb ? K : N, .ldc = N,
                      .sa = (int64_t)M * K, .sb = (int64_t)K * N, .sc = summed ? 0 : (int64_t)M * N,
                      .ab_dtype = TP_F32, .c_dtype = TP_F32, .compute = TP_F16};
    ok = vk_upload(d, (tp_mem){c0, 0}, h + na + nb, nc * 4, &e) &&
         vk_upload(d, (tp_mem){c1, 0}, h + na + nb, nc * 4, &e);
    for (int path = 0; path < 2 && ok; path++) {
      d->coopmat = path == 0;
      g.c = (tp_mem){path == 0 ? c0 : c1, 0};
      vk_kernels_table.gemm(d, &g);
    }
    ok = ok && vk_download(d, got, (tp_mem){c0, 0}, nc * 4, &e) &&
         vk_download(d, got + nc, (tp_mem){c1, 0}, nc * 4, &e);
    double mx = 0.0, diff = 0.0;
    for (size_t i = 0; ok && i < nc; i++) {
      mx = fmax(mx, fabs(got[nc + i]));
      diff = fmax(diff, fabs((double)got[i] - got[nc + i]));
      if (isnan(got[i])) diff = INFINITY;
    }
    worst = fmax(worst, mx > 0 ? diff / mx : diff);
  }
  ok = ok && worst <= 1e-4;
  d->coopmat = ok;
  if (!ok) {
    char *why = e ? g_strdup(e->message) : g_strdup_printf("max relative difference %.2g", worst);
    char *note = g_strdup_printf("VK_NV_cooperative_matrix (f16) failed its self-check (%s), not used",
                                 why);
    g_strlcpy(d->info.features, note, sizeof d->info.features);
    g_free(note);
    g_free(why);
  }
  g_clear_error(&e);
  vk_buffer_free(d, a);
  vk_buffer_free(d, b);
  vk_buffer_free(d, c0);
  vk_buffer_free(d, c1);
  g_free(h);
  g_free(got);
}

/* ------------------------------------------------------------------ entry */

static tp_backend_iface vk_iface = {
    .struct_size = sizeof(tp_backend_iface),
    .probe = vk_probe,
    .open = vk_open,
    .close = vk_close,
    .buffer_alloc = vk_buffer_alloc,
    .buffer_free = vk_buffer_free,
    .buffer_host_ptr = vk_buffer_host_ptr,
    .upload = vk_upload,
    .download = vk_download,
    .copy = vk_copy_queued,
    .synchronize = vk_synchronize,
    /* .k: vk_kernels_table (vk_kernels.c), set once below */
    .dropout_fwd_keep = NULL, /* the core composes them from dropout_fwd/bwd */
    .dropout_bwd_keep = NULL,
    .attention_fwd = vk_attention_fwd,
    .attention_bwd = vk_attention_bwd,
};

static const tp_plugin vk_plugin = {
    .abi_version = TP_PLUGIN_ABI_VERSION,
    .kind = TP_PLUGIN_BACKEND,
    .name = "vulkan",
    .version = "0.1.0",
    .iface = &vk_iface,
};

TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void);
TP_PLUGIN_EXPORT const tp_plugin *tp_plugin_entry(void) {
  static gsize once = 0;
  if (g_once_init_enter(&once)) {
    vk_iface.k = vk_kernels_table;
    g_once_init_leave(&once, 1);
  }
  return &vk_plugin;
}
