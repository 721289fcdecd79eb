/*
 * A fake libcuda for CI: every driver entry point that src/cuda/Binding.ts declares, over host
 * memory, with the real driver's VMM rules (granularity, whole-chunk maps, unmap before free), so the koffi binding and the
 * CUDA port are exercised on every `npm test` without a GPU.
 *
 * Note [Fake device model]
 * ------------------------
 * - A physical chunk (cuMemCreate) is a host buffer, calloc'd on its first access (so creating
 *   one costs bookkeeping only, and the binding's own per-call cost can be measured); its handle
 *   is the address of its record, as opaque as the driver's and of the same magnitude (< 2^47).
 * - A reservation (cuMemAddressReserve) is bookkeeping of a virtual window; no host memory. Its
 *   addresses come from a bump pointer (never reused, so a stale address fails loudly) starting at
 *   0x7f0000000000, like a real device VA.
 * - A mapping records (chunk, offset in the range). Copies through a virtual address translate
 *   each piece to the host buffer of the chunk behind it, so a chunk mapped at two ranges shows
 *   the same bytes at both, and a stitched range reads its chunks in order.
 * - Bytes are readable and writable only where cuMemSetAccess granted read-write access (the real
 *   device faults otherwise; the fake returns CUDA_ERROR_INVALID_VALUE).
 * - A physical chunk counts against the capacity of the device it is located on (every device
 *   has FAKE_CUDA_CAPACITY, default 1 GiB) from cuMemCreate until it is released and unmapped
 *   everywhere; cuMemAlloc bytes count on the current context's device until cuMemFree.
 *
 * Note [Fake devices and peer access]
 * -----------------------------------
 * The fake has FAKE_CUDA_DEVICES devices (default 1, at most 8) in one unified address space, as
 * the driver gives a process: one set of reservations and handles that every context can use.
 * A chunk lives on the device its CUmemAllocationProp names; cuMemSetAccess records access per
 * device and mapping, and a copy, memset or memcpy through a virtual address needs access for
 * the device of the current context (the device that performs it). Peer access is allowed for
 * every ordered pair of distinct devices (cuDeviceCanAccessPeer answers 1) unless a test denies
 * a pair with fake_cuda_set_peer_access; granting device d access to a chunk located on device c
 * != d over a denied pair fails with CUDA_ERROR_PEER_ACCESS_UNSUPPORTED (the real driver's code
 * for it is not documented) and changes nothing. NVLink multicast objects are not modelled.
 * - Streams run nothing asynchronously: work "on a stream" is done at once. An event recorded on
 *   a stream answers CUDA_ERROR_NOT_READY to its first `event_polls` queries (default 1) and is
 *   complete after that, or at once after cuEventSynchronize, so callers see both outcomes.
 *
 * Where the real driver's exact CUresult for a broken rule is not documented, the fake answers
 * CUDA_ERROR_INVALID_VALUE, as the simulator (src/layers/SimDriver.ts) does.
 *
 * Built with FAKE_CUDA_WITH_CUDA_H against the toolkit's cuda.h, so that the compiler checks every
 * prototype against the real one (the versioned names are what cuda.h's #defines expand to);
 * otherwise with the declarations below. Built with FAKE_CUDA_NO_VMM it lacks the VMM entry points,
 * like a driver older than CUDA 10.2, to test the binding's missing-symbol errors.
 *
 * Test-only controls are the `fake_cuda_*` functions at the end (test/fake-cuda/control.ts).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef FAKE_CUDA_WITH_CUDA_H
#include <cuda.h>
#else
/* The subset of cuda.h (CUDA 13.0) that the fake needs, with the same names and layouts. */
typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef int CUmemAllocationGranularity_flags;
typedef struct CUmemLocation_st {
  int type;
  int id;
} CUmemLocation;
typedef struct CUmemAllocationProp_st {
  int type;
  int requestedHandleTypes;
  CUmemLocation location;
  void *win32HandleMetaData;
  struct {
    unsigned char compressionType;
    unsigned char gpuDirectRDMACapable;
    unsigned short usage;
    unsigned char reserved[4];
  } allocFlags;
} CUmemAllocationProp;
typedef struct CUmemAccessDesc_st {
  CUmemLocation location;
  int flags;
} CUmemAccessDesc;
enum {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_PEER_ACCESS_UNSUPPORTED = 217,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_NOT_SUPPORTED = 801,
  CUDA_ERROR_UNKNOWN = 999
};
enum { CU_MEM_ALLOCATION_TYPE_PINNED = 1 };
enum { CU_MEM_LOCATION_TYPE_DEVICE = 1 };
enum { CU_MEM_HANDLE_TYPE_NONE = 0 };
enum { CU_MEM_ACCESS_FLAGS_PROT_NONE = 0, CU_MEM_ACCESS_FLAGS_PROT_READ = 1, CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3 };
enum { CU_MEM_ALLOC_GRANULARITY_MINIMUM = 0, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1 };
#define CUDAAPI
#endif

/* The layouts the binding pre-encodes (Note [Pre-encoded structs and out slots]), checked here against cuda.h. */
_Static_assert(sizeof(CUmemLocation) == 8, "CUmemLocation is 8 bytes");
_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp is 32 bytes");
_Static_assert(offsetof(CUmemAllocationProp, requestedHandleTypes) == 4, "requestedHandleTypes @4");
_Static_assert(offsetof(CUmemAllocationProp, location) == 8, "location @8");
_Static_assert(offsetof(CUmemAllocationProp, win32HandleMetaData) == 16, "win32HandleMetaData @16");
_Static_assert(offsetof(CUmemAllocationProp, allocFlags) == 24, "allocFlags @24");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc is 12 bytes");
_Static_assert(offsetof(CUmemAccessDesc, flags) == 8, "flags @8");
_Static_assert(sizeof(CUdeviceptr) == 8 && sizeof(CUmemGenericAllocationHandle) == 8, "64-bit handles");

#define EXPORT __attribute__((visibility("default")))
#define MAYBE_UNUSED __attribute__((unused)) /* helpers of the VMM entry points, absent with FAKE_CUDA_NO_VMM */

/* The test-only controls (defined at the end). */
EXPORT void fake_cuda_reset(uint64_t capacity, uint64_t granularity, int devices);
EXPORT void fake_cuda_ledger(uint64_t *out);
EXPORT void fake_cuda_set_va_base(uint64_t base);
EXPORT void fake_cuda_set_event_polls(int polls);
EXPORT void fake_cuda_inject(const char *call, int code);
EXPORT void fake_cuda_last_structs(unsigned char *prop32, unsigned char *access12);
EXPORT void fake_cuda_layout(uint64_t *out);
EXPORT void fake_cuda_set_peer_access(int dev, int peer, int allowed);
EXPORT uint64_t fake_cuda_device_used(int dev);
#define MAX_DEVICES 8
#define VA_BASE 0x7f0000000000ull
#define ALLOC_BASE 0x7e0000000000ull
#define ALLOC_ALIGN 512ull

/* --- bookkeeping ------------------------------------------------------------------------------ */

typedef struct Chunk {
  uint64_t bytes;
  unsigned char *data;
  int device;
  int mappings;
  int released;
} Chunk;

typedef struct Mapping {
  uint64_t offset; /* from the range's base */
  uint64_t bytes;
  Chunk *chunk;
  unsigned char access[MAX_DEVICES]; /* CUmemAccess_flags granted, per device */
} Mapping;

typedef struct Range {
  uint64_t base;
  uint64_t bytes;
  Mapping *maps; /* sorted by offset, disjoint */
  size_t nmaps;
  size_t cap;
} Range;

typedef struct Alloc {
  uint64_t base;
  uint64_t bytes;
  unsigned char *data;
  int device;
} Alloc;

typedef struct Stream {
  unsigned flags;
} Stream;

typedef struct Event {
  unsigned flags;
  int pending; /* NOT_READY answers left before the event completes */
} Event;

typedef struct Ctx {
  int device;
  int refs;
} Ctx;

/* A growable set of pointers. Linear search: the live sets of a test are small. */
typedef struct PtrSet {
  void **items;
  size_t n;
  size_t cap;
} PtrSet;

static int set_add(PtrSet *s, void *p) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    void **items = realloc(s->items, cap * sizeof *items);
    if (items == NULL) return 0;
    s->items = items;
    s->cap = cap;
  }
  s->items[s->n++] = p;
  return 1;
}

static ptrdiff_t set_find(const PtrSet *s, const void *p) {
  for (size_t i = s->n; i-- > 0;)
    if (s->items[i] == p) return (ptrdiff_t)i;
  return -1;
}

static int set_remove(PtrSet *s, const void *p) {
  ptrdiff_t i = set_find(s, p);
  if (i < 0) return 0;
  s->items[i] = s->items[--s->n];
  return 1;
}

static struct {
  int configured;
  int initialized;
  uint64_t capacity;
  uint64_t granularity;
  int devices;
  int event_polls;
  uint64_t used[MAX_DEVICES]; /* physical bytes counted against each device's capacity */
  unsigned char peer[MAX_DEVICES][MAX_DEVICES]; /* peer[d][c]: device d may access memory on c */
  uint64_t va_next;
  uint64_t alloc_next;
  PtrSet chunks;  /* Chunk*, including released chunks that are still mapped */
  PtrSet ranges;  /* Range* */
  PtrSet allocs;  /* Alloc* */
  PtrSet streams; /* Stream* */
  PtrSet events;  /* Event* */
  Ctx ctx[MAX_DEVICES];
  unsigned char last_prop[sizeof(CUmemAllocationProp)];
  unsigned char last_access[sizeof(CUmemAccessDesc)];
  char inject_call[64];
  int inject_code;
} g;

static __thread Ctx *current;

static uint64_t env_bytes(const char *name, uint64_t fallback) {
  const char *s = getenv(name);
  if (s == NULL || *s == 0) return fallback;
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 0);
  switch (end ? *end : 0) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    default: break;
  }
  return v;
}

static void configure(void) {
  if (g.configured) return;
  g.configured = 1;
  g.capacity = env_bytes("FAKE_CUDA_CAPACITY", 1ull << 30);
  g.granularity = env_bytes("FAKE_CUDA_GRANULARITY", 2ull << 20);
  g.devices = (int)env_bytes("FAKE_CUDA_DEVICES", 1);
  if (g.devices > MAX_DEVICES) g.devices = MAX_DEVICES;
  g.event_polls = 1;
  g.va_next = VA_BASE;
  g.alloc_next = ALLOC_BASE;
  for (int i = 0; i < MAX_DEVICES; i++) g.ctx[i].device = i;
  memset(g.peer, 1, sizeof g.peer);
}

/* A failure injected by fake_cuda_inject for the next call of that name. */
static int injected(const char *call) {
  if (g.inject_call[0] == 0 || strcmp(g.inject_call, call) != 0) return 0;
  g.inject_call[0] = 0;
  return g.inject_code;
}

#define ENTER(name)                          \
  do {                                       \
    configure();                             \
    int inj_ = injected(name);               \
    if (inj_) return (CUresult)inj_;         \
    if (!g.initialized) return CUDA_ERROR_NOT_INITIALIZED; \
  } while (0)

#define ENTER_CTX(name)                      \
  do {                                       \
    ENTER(name);                             \
    if (current == NULL || current->refs == 0) return CUDA_ERROR_INVALID_CONTEXT; \
  } while (0)

static int valid_device(int dev) { return dev >= 0 && dev < g.devices; }

static int valid_location(const CUmemLocation *loc) {
  return loc->type == CU_MEM_LOCATION_TYPE_DEVICE && valid_device(loc->id);
}

/* A pinned device allocation with no exported handle type and every other field zero. */
MAYBE_UNUSED static int valid_prop(const CUmemAllocationProp *p) {
  static const unsigned char zeros[8] = {0};
  return p != NULL && p->type == CU_MEM_ALLOCATION_TYPE_PINNED &&
         p->requestedHandleTypes == CU_MEM_HANDLE_TYPE_NONE && valid_location(&p->location) &&
         p->win32HandleMetaData == NULL && memcmp(&p->allocFlags, zeros, sizeof p->allocFlags) == 0;
}

MAYBE_UNUSED static Chunk *find_chunk(CUmemGenericAllocationHandle h) {
  Chunk *c = (Chunk *)(uintptr_t)h;
  return set_find(&g.chunks, c) >= 0 ? c : NULL;
}

MAYBE_UNUSED static void drop_chunk(Chunk *c) {
  set_remove(&g.chunks, c);
  g.used[c->device] -= c->bytes;
  free(c->data);
  free(c);
}

/* The range holding [va, va + n), or NULL. */
static Range *range_of(uint64_t va, uint64_t n) {
  for (size_t i = 0; i < g.ranges.n; i++) {
    Range *r = g.ranges.items[i];
    if (va >= r->base && va - r->base < r->bytes && n <= r->bytes - (va - r->base)) return r;
  }
  return NULL;
}

/* Index of the first mapping whose offset is >= off. */
static size_t lower_bound(const Range *r, uint64_t off) {
  size_t lo = 0, hi = r->nmaps;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (r->maps[mid].offset < off) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/*
 * The mappings [*from, *to) that tile [va, va + n) of range r exactly, without gaps, starting
 * at a mapping's start and ending at a mapping's end. Returns 0 if they do not.
 */
MAYBE_UNUSED static int whole_mappings(const Range *r, uint64_t va, uint64_t n, size_t *from, size_t *to) {
  uint64_t off = va - r->base, end = off;
  size_t i = lower_bound(r, off), j = i;
  if (n == 0 || i >= r->nmaps || r->maps[i].offset != off) return 0;
  while (j < r->nmaps && r->maps[j].offset == end && end < off + n) end += r->maps[j++].bytes;
  if (end != off + n) return 0;
  *from = i;
  *to = j;
  return 1;
}

/*
 * The host bytes behind device address va, and how many of them are contiguous (at most n).
 * NULL if va is neither inside a live cuMemAlloc allocation nor mapped with the access needed.
 * A chunk's host buffer is allocated on its first access (calloc'd: zeros), so that cuMemCreate
 * costs no more than bookkeeping and the binding's per-call overhead can be measured on the fake;
 * `*oom` is set if that allocation fails.
 */
static unsigned char *host_span(uint64_t va, uint64_t n, int write, uint64_t *len, int *oom) {
  for (size_t i = 0; i < g.allocs.n; i++) {
    Alloc *a = g.allocs.items[i];
    if (va >= a->base && va - a->base < a->bytes) {
      if (a->data == NULL && (a->data = calloc(1, a->bytes)) == NULL) {
        *oom = 1;
        return NULL;
      }
      uint64_t off = va - a->base, left = a->bytes - off;
      *len = n < left ? n : left;
      return a->data + off;
    }
  }
  Range *r = range_of(va, 1);
  if (r == NULL) return NULL;
  uint64_t off = va - r->base;
  size_t k = lower_bound(r, off + 1);
  if (k == 0) return NULL;
  Mapping *m = &r->maps[k - 1];
  if (off >= m->offset + m->bytes) return NULL;
  int need = write ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_READ;
  int dev = current != NULL ? current->device : 0; /* the device performing the access */
  if ((m->access[dev] & need) != need) return NULL;
  Chunk *c = m->chunk;
  if (c->data == NULL && (c->data = calloc(1, c->bytes)) == NULL) {
    *oom = 1;
    return NULL;
  }
  uint64_t left = m->offset + m->bytes - off;
  *len = n < left ? n : left;
  return c->data + (off - m->offset);
}

/* Whether every byte of [va, va + n) is reachable with the access needed (and backed). */
static CUresult reachable(uint64_t va, uint64_t n, int write) {
  while (n > 0) {
    uint64_t len = 0;
    int oom = 0;
    if (host_span(va, n, write, &len, &oom) == NULL) return oom ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_ERROR_INVALID_VALUE;
    va += len;
    n -= len;
  }
  return CUDA_SUCCESS;
}

static void copy_in(uint64_t dst, const unsigned char *src, uint64_t n) {
  while (n > 0) {
    uint64_t len = 0;
    int oom = 0;
    unsigned char *p = host_span(dst, n, 1, &len, &oom);
    memcpy(p, src, len);
    dst += len;
    src += len;
    n -= len;
  }
}

static void copy_out(unsigned char *dst, uint64_t src, uint64_t n) {
  while (n > 0) {
    uint64_t len = 0;
    int oom = 0;
    unsigned char *p = host_span(src, n, 0, &len, &oom);
    memcpy(dst, p, len);
    dst += len;
    src += len;
    n -= len;
  }
}

static int valid_stream(CUstream s) { return s == NULL || set_find(&g.streams, s) >= 0; }
static int valid_event(CUevent e) { return e != NULL && set_find(&g.events, e) >= 0; }

/* --- initialization, devices, contexts -------------------------------------------------------- */

EXPORT CUresult CUDAAPI cuInit(unsigned int Flags) {
  configure();
  int inj = injected("cuInit");
  if (inj) return (CUresult)inj;
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (g.devices <= 0) return CUDA_ERROR_NO_DEVICE;
  g.initialized = 1;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDriverGetVersion(int *driverVersion) {
  configure();
  int inj = injected("cuDriverGetVersion");
  if (inj) return (CUresult)inj;
  if (driverVersion == NULL) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = 13000;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDeviceGetCount(int *count) {
  ENTER("cuDeviceGetCount");
  if (count == NULL) return CUDA_ERROR_INVALID_VALUE;
  *count = g.devices;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDeviceGet(CUdevice *device, int ordinal) {
  ENTER("cuDeviceGet");
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(ordinal)) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice dev) {
  ENTER("cuDeviceGetName");
  if (name == NULL || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  static const char base[] = "Fake CUDA Device ";
  char text[64];
  size_t k = sizeof base - 1;
  memcpy(text, base, k);
  text[k++] = (char)('0' + dev);
  text[k] = 0;
  strncpy(name, text, (size_t)len - 1);
  name[len - 1] = 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev) {
  ENTER("cuDeviceTotalMem_v2");
  if (bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = g.capacity;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev) {
  ENTER("cuDeviceCanAccessPeer");
  if (canAccessPeer == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev) || !valid_device(peerDev)) return CUDA_ERROR_INVALID_DEVICE;
  *canAccessPeer = dev != peerDev && g.peer[dev][peerDev];
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev) {
  ENTER("cuDevicePrimaryCtxRetain");
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  g.ctx[dev].refs++;
  *pctx = (CUcontext)(void *)&g.ctx[dev];
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
  ENTER("cuDevicePrimaryCtxRelease_v2");
  if (!valid_device(dev)) return CUDA_ERROR_INVALID_DEVICE;
  if (g.ctx[dev].refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  g.ctx[dev].refs--;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuCtxSetCurrent(CUcontext ctx) {
  ENTER("cuCtxSetCurrent");
  if (ctx == NULL) {
    current = NULL;
    return CUDA_SUCCESS;
  }
  Ctx *c = (Ctx *)(void *)ctx;
  if (c < &g.ctx[0] || c >= &g.ctx[MAX_DEVICES] || c->refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  current = c;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuCtxSynchronize(void) {
  ENTER_CTX("cuCtxSynchronize");
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemGetInfo_v2(size_t *free_, size_t *total) {
  ENTER_CTX("cuMemGetInfo_v2");
  if (free_ == NULL || total == NULL) return CUDA_ERROR_INVALID_VALUE;
  *free_ = g.capacity - g.used[current->device];
  *total = g.capacity;
  return CUDA_SUCCESS;
}

/* --- virtual memory management ---------------------------------------------------------------- */

#ifndef FAKE_CUDA_NO_VMM

EXPORT CUresult CUDAAPI cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                                      CUmemAllocationGranularity_flags option) {
  ENTER("cuMemGetAllocationGranularity");
  if (granularity == NULL || !valid_prop(prop)) return CUDA_ERROR_INVALID_VALUE;
  if (option != CU_MEM_ALLOC_GRANULARITY_MINIMUM && option != CU_MEM_ALLOC_GRANULARITY_RECOMMENDED)
    return CUDA_ERROR_INVALID_VALUE;
  *granularity = g.granularity;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size,
                                    const CUmemAllocationProp *prop, unsigned long long flags) {
  ENTER_CTX("cuMemCreate");
  if (prop != NULL) memcpy(g.last_prop, prop, sizeof g.last_prop);
  if (handle == NULL || !valid_prop(prop) || flags != 0) return CUDA_ERROR_INVALID_VALUE;
  if (size == 0 || size % g.granularity != 0) return CUDA_ERROR_INVALID_VALUE;
  if (size > g.capacity - g.used[prop->location.id]) return CUDA_ERROR_OUT_OF_MEMORY;
  Chunk *c = calloc(1, sizeof *c); /* its bytes are allocated on first access (host_span) */
  if (c == NULL || !set_add(&g.chunks, c)) {
    free(c);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  c->bytes = size;
  c->device = prop->location.id;
  g.used[c->device] += size;
  *handle = (CUmemGenericAllocationHandle)(uintptr_t)c;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemRelease(CUmemGenericAllocationHandle handle) {
  ENTER_CTX("cuMemRelease");
  Chunk *c = find_chunk(handle);
  if (c == NULL || c->released) return CUDA_ERROR_INVALID_VALUE;
  c->released = 1;
  if (c->mappings == 0) drop_chunk(c);
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                                            unsigned long long flags) {
  ENTER_CTX("cuMemAddressReserve");
  (void)addr; /* a hint: the fake never honours it, which the driver is allowed to do */
  if (ptr == NULL || flags != 0 || size == 0 || size % g.granularity != 0) return CUDA_ERROR_INVALID_VALUE;
  if (alignment & (alignment - 1)) return CUDA_ERROR_INVALID_VALUE;
  uint64_t align = alignment > g.granularity ? alignment : g.granularity;
  uint64_t base = (g.va_next + align - 1) / align * align;
  if (base + size < base) return CUDA_ERROR_OUT_OF_MEMORY;
  Range *r = calloc(1, sizeof *r);
  if (r == NULL || !set_add(&g.ranges, r)) {
    free(r);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  r->base = base;
  r->bytes = size;
  g.va_next = base + size;
  *ptr = base;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemAddressFree(CUdeviceptr ptr, size_t size) {
  ENTER_CTX("cuMemAddressFree");
  for (size_t i = 0; i < g.ranges.n; i++) {
    Range *r = g.ranges.items[i];
    if (r->base != ptr) continue;
    if (r->bytes != size || r->nmaps > 0) return CUDA_ERROR_INVALID_VALUE;
    set_remove(&g.ranges, r);
    free(r->maps);
    free(r);
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult CUDAAPI cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle handle,
                                 unsigned long long flags) {
  ENTER_CTX("cuMemMap");
  if (offset != 0 || flags != 0 || size == 0 || size % g.granularity != 0 || ptr % g.granularity != 0)
    return CUDA_ERROR_INVALID_VALUE;
  Chunk *c = find_chunk(handle);
  if (c == NULL || c->released) return CUDA_ERROR_INVALID_VALUE;
  /* The H100 answers NOT_SUPPORTED to a mapping of part of a chunk (probe, bench/results). */
  if (size < c->bytes) return CUDA_ERROR_NOT_SUPPORTED;
  if (c->bytes != size) return CUDA_ERROR_INVALID_VALUE;
  Range *r = range_of(ptr, size);
  if (r == NULL) return CUDA_ERROR_INVALID_VALUE;
  uint64_t off = ptr - r->base;
  size_t i = lower_bound(r, off);
  if (i > 0 && r->maps[i - 1].offset + r->maps[i - 1].bytes > off) return CUDA_ERROR_INVALID_VALUE;
  if (i < r->nmaps && r->maps[i].offset < off + size) return CUDA_ERROR_INVALID_VALUE;
  if (r->nmaps == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 4;
    Mapping *maps = realloc(r->maps, cap * sizeof *maps);
    if (maps == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
    r->maps = maps;
    r->cap = cap;
  }
  memmove(&r->maps[i + 1], &r->maps[i], (r->nmaps - i) * sizeof *r->maps);
  r->maps[i] = (Mapping){.offset = off, .bytes = size, .chunk = c, .access = {CU_MEM_ACCESS_FLAGS_PROT_NONE}};
  r->nmaps++;
  c->mappings++;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemUnmap(CUdeviceptr ptr, size_t size) {
  ENTER_CTX("cuMemUnmap");
  Range *r = range_of(ptr, size);
  size_t from = 0, to = 0;
  if (r == NULL || !whole_mappings(r, ptr, size, &from, &to)) return CUDA_ERROR_INVALID_VALUE;
  for (size_t k = from; k < to; k++) {
    Chunk *c = r->maps[k].chunk;
    if (--c->mappings == 0 && c->released) drop_chunk(c);
  }
  memmove(&r->maps[from], &r->maps[to], (r->nmaps - to) * sizeof *r->maps);
  r->nmaps -= to - from;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
  ENTER_CTX("cuMemSetAccess");
  if (desc != NULL && count >= 1) memcpy(g.last_access, desc, sizeof g.last_access);
  if (desc == NULL || count == 0) return CUDA_ERROR_INVALID_VALUE;
  for (size_t k = 0; k < count; k++) {
    int f = desc[k].flags;
    if (!valid_location(&desc[k].location)) return CUDA_ERROR_INVALID_VALUE;
    if (f != CU_MEM_ACCESS_FLAGS_PROT_NONE && f != CU_MEM_ACCESS_FLAGS_PROT_READ &&
        f != CU_MEM_ACCESS_FLAGS_PROT_READWRITE)
      return CUDA_ERROR_INVALID_VALUE;
  }
  Range *r = range_of(ptr, size);
  size_t from = 0, to = 0;
  if (r == NULL || !whole_mappings(r, ptr, size, &from, &to)) return CUDA_ERROR_INVALID_VALUE;
  /* Every grant is checked before any is made (Note [Fake devices and peer access]). */
  for (size_t j = 0; j < count; j++) {
    int d = desc[j].location.id;
    if (desc[j].flags == CU_MEM_ACCESS_FLAGS_PROT_NONE) continue;
    for (size_t k = from; k < to; k++) {
      int c = r->maps[k].chunk->device;
      if (c != d && !g.peer[d][c]) return CUDA_ERROR_PEER_ACCESS_UNSUPPORTED;
    }
  }
  for (size_t j = 0; j < count; j++)
    for (size_t k = from; k < to; k++) r->maps[k].access[desc[j].location.id] = (unsigned char)desc[j].flags;
  return CUDA_SUCCESS;
}

#endif /* FAKE_CUDA_NO_VMM */

/* --- classic allocations and copies ----------------------------------------------------------- */

EXPORT CUresult CUDAAPI cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytesize) {
  ENTER_CTX("cuMemAlloc_v2");
  if (dptr == NULL || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (bytesize > g.capacity - g.used[current->device]) return CUDA_ERROR_OUT_OF_MEMORY;
  Alloc *a = calloc(1, sizeof *a); /* its bytes are allocated on first access (host_span) */
  if (a == NULL || !set_add(&g.allocs, a)) {
    free(a);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  a->base = (g.alloc_next + ALLOC_ALIGN - 1) / ALLOC_ALIGN * ALLOC_ALIGN;
  a->bytes = bytesize;
  a->device = current->device;
  g.alloc_next = a->base + bytesize;
  g.used[a->device] += bytesize;
  *dptr = a->base;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemFree_v2(CUdeviceptr dptr) {
  ENTER_CTX("cuMemFree_v2");
  for (size_t i = 0; i < g.allocs.n; i++) {
    Alloc *a = g.allocs.items[i];
    if (a->base != dptr) continue;
    set_remove(&g.allocs, a);
    g.used[a->device] -= a->bytes;
    free(a->data);
    free(a);
    return CUDA_SUCCESS;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult CUDAAPI cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount) {
  ENTER_CTX("cuMemcpyHtoD_v2");
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (srcHost == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = reachable(dstDevice, ByteCount, 1);
  if (rc != CUDA_SUCCESS) return rc;
  copy_in(dstDevice, srcHost, ByteCount);
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
  ENTER_CTX("cuMemcpyDtoH_v2");
  if (ByteCount == 0) return CUDA_SUCCESS;
  if (dstHost == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = reachable(srcDevice, ByteCount, 0);
  if (rc != CUDA_SUCCESS) return rc;
  copy_out(dstHost, srcDevice, ByteCount);
  return CUDA_SUCCESS;
}

static CUresult memset_d8(CUdeviceptr dst, unsigned char uc, size_t n) {
  CUresult rc = reachable(dst, n, 1);
  if (rc != CUDA_SUCCESS) return rc;
  while (n > 0) {
    uint64_t len = 0;
    int oom = 0;
    unsigned char *p = host_span(dst, n, 1, &len, &oom);
    memset(p, uc, len);
    dst += len;
    n -= len;
  }
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuMemsetD8_v2(CUdeviceptr dstDevice, unsigned char uc, size_t N) {
  ENTER_CTX("cuMemsetD8_v2");
  return memset_d8(dstDevice, uc, N);
}

EXPORT CUresult CUDAAPI cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream) {
  ENTER_CTX("cuMemsetD8Async");
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  return memset_d8(dstDevice, uc, N);
}

EXPORT CUresult CUDAAPI cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount,
                                             CUstream hStream) {
  ENTER_CTX("cuMemcpyDtoDAsync_v2");
  if (!valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  if (ByteCount == 0) return CUDA_SUCCESS;
  CUresult rc = reachable(srcDevice, ByteCount, 0);
  if (rc == CUDA_SUCCESS) rc = reachable(dstDevice, ByteCount, 1);
  if (rc != CUDA_SUCCESS) return rc;
  /* Through a bounce buffer: source and destination may alias the same physical bytes. */
  unsigned char *tmp = malloc(ByteCount);
  if (tmp == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  copy_out(tmp, srcDevice, ByteCount);
  copy_in(dstDevice, tmp, ByteCount);
  free(tmp);
  return CUDA_SUCCESS;
}

/* --- streams and events ----------------------------------------------------------------------- */

EXPORT CUresult CUDAAPI cuStreamCreate(CUstream *phStream, unsigned int Flags) {
  ENTER_CTX("cuStreamCreate");
  if (phStream == NULL || (Flags & ~1u) != 0) return CUDA_ERROR_INVALID_VALUE;
  Stream *s = calloc(1, sizeof *s);
  if (s == NULL || !set_add(&g.streams, s)) {
    free(s);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  s->flags = Flags;
  *phStream = (CUstream)(void *)s;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuStreamSynchronize(CUstream hStream) {
  ENTER_CTX("cuStreamSynchronize");
  return valid_stream(hStream) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

EXPORT CUresult CUDAAPI cuStreamDestroy_v2(CUstream hStream) {
  ENTER_CTX("cuStreamDestroy_v2");
  if (hStream == NULL || !set_remove(&g.streams, hStream)) return CUDA_ERROR_INVALID_HANDLE;
  free(hStream);
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  ENTER_CTX("cuStreamWaitEvent");
  if (!valid_stream(hStream) || !valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
  if (Flags & ~1u) return CUDA_ERROR_INVALID_VALUE;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuEventCreate(CUevent *phEvent, unsigned int Flags) {
  ENTER_CTX("cuEventCreate");
  if (phEvent == NULL || (Flags & ~0xfu) != 0) return CUDA_ERROR_INVALID_VALUE;
  if ((Flags & 0x4u) && !(Flags & 0x2u)) return CUDA_ERROR_INVALID_VALUE; /* interprocess needs no timing */
  Event *e = calloc(1, sizeof *e);
  if (e == NULL || !set_add(&g.events, e)) {
    free(e);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  e->flags = Flags;
  *phEvent = (CUevent)(void *)e;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuEventRecord(CUevent hEvent, CUstream hStream) {
  ENTER_CTX("cuEventRecord");
  if (!valid_event(hEvent) || !valid_stream(hStream)) return CUDA_ERROR_INVALID_HANDLE;
  ((Event *)(void *)hEvent)->pending = g.event_polls;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuEventQuery(CUevent hEvent) {
  ENTER_CTX("cuEventQuery");
  if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
  Event *e = (Event *)(void *)hEvent;
  if (e->pending > 0) {
    e->pending--;
    return CUDA_ERROR_NOT_READY;
  }
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuEventSynchronize(CUevent hEvent) {
  ENTER_CTX("cuEventSynchronize");
  if (!valid_event(hEvent)) return CUDA_ERROR_INVALID_HANDLE;
  ((Event *)(void *)hEvent)->pending = 0;
  return CUDA_SUCCESS;
}

EXPORT CUresult CUDAAPI cuEventDestroy_v2(CUevent hEvent) {
  ENTER_CTX("cuEventDestroy_v2");
  if (hEvent == NULL || !set_remove(&g.events, hEvent)) return CUDA_ERROR_INVALID_HANDLE;
  free(hEvent);
  return CUDA_SUCCESS;
}

/* --- error strings ---------------------------------------------------------------------------- */

static const struct {
  int code;
  const char *name;
  const char *text;
} errors[] = {
    {0, "CUDA_SUCCESS", "no error"},
    {1, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {3, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {4, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {34, "CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"},
    {46, "CUDA_ERROR_DEVICE_UNAVAILABLE", "CUDA-capable device(s) is/are busy or unavailable"},
    {100, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {101, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {201, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {208, "CUDA_ERROR_ALREADY_MAPPED", "resource already mapped"},
    {211, "CUDA_ERROR_NOT_MAPPED", "resource not mapped"},
    {400, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {500, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {600, "CUDA_ERROR_NOT_READY", "device not ready"},
    {700, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {800, "CUDA_ERROR_NOT_PERMITTED", "operation not permitted"},
    {801, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {999, "CUDA_ERROR_UNKNOWN", "unknown error"},
};

static CUresult error_text(CUresult error, const char **pStr, int name) {
  if (pStr == NULL) return CUDA_ERROR_INVALID_VALUE;
  for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
    if (errors[i].code == (int)error) {
      *pStr = name ? errors[i].name : errors[i].text;
      return CUDA_SUCCESS;
    }
  }
  *pStr = NULL;
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT CUresult CUDAAPI cuGetErrorName(CUresult error, const char **pStr) { return error_text(error, pStr, 1); }
EXPORT CUresult CUDAAPI cuGetErrorString(CUresult error, const char **pStr) { return error_text(error, pStr, 0); }

/* --- test-only controls ------------------------------------------------------------------------ */

/*
 * Frees everything and starts over, uninitialized, with this capacity, granularity and device
 * count (0 keeps the current value).
 */
EXPORT void fake_cuda_reset(uint64_t capacity, uint64_t granularity, int devices) {
  configure();
  while (g.ranges.n > 0) {
    Range *r = g.ranges.items[0];
    set_remove(&g.ranges, r);
    free(r->maps);
    free(r);
  }
  while (g.chunks.n > 0) {
    Chunk *c = g.chunks.items[0];
    set_remove(&g.chunks, c);
    free(c->data);
    free(c);
  }
  while (g.allocs.n > 0) {
    Alloc *a = g.allocs.items[0];
    set_remove(&g.allocs, a);
    free(a->data);
    free(a);
  }
  while (g.streams.n > 0) free(g.streams.items[--g.streams.n]);
  while (g.events.n > 0) free(g.events.items[--g.events.n]);
  for (int i = 0; i < MAX_DEVICES; i++) g.ctx[i].refs = 0;
  current = NULL;
  if (capacity) g.capacity = capacity;
  if (granularity) g.granularity = granularity;
  if (devices > 0) g.devices = devices < MAX_DEVICES ? devices : MAX_DEVICES;
  g.initialized = 0;
  memset(g.used, 0, sizeof g.used);
  memset(g.peer, 1, sizeof g.peer);
  g.va_next = VA_BASE;
  g.alloc_next = ALLOC_BASE;
  g.event_polls = 1;
  g.inject_call[0] = 0;
}

/*
 * What is alive: out[0] chunks, [1] ranges, [2] mappings, [3] allocations, [4] streams,
 * [5] events, [6] primary-context references, [7] physical bytes in use.
 */
EXPORT void fake_cuda_ledger(uint64_t *out) {
  configure();
  uint64_t maps = 0, refs = 0, used = 0;
  for (size_t i = 0; i < g.ranges.n; i++) maps += ((Range *)g.ranges.items[i])->nmaps;
  for (int i = 0; i < MAX_DEVICES; i++) refs += (uint64_t)g.ctx[i].refs;
  for (int i = 0; i < MAX_DEVICES; i++) used += g.used[i];
  out[0] = g.chunks.n;
  out[1] = g.ranges.n;
  out[2] = maps;
  out[3] = g.allocs.n;
  out[4] = g.streams.n;
  out[5] = g.events.n;
  out[6] = refs;
  out[7] = used;
}

/* The next reservation's base, to test addresses the binding cannot represent. */
EXPORT void fake_cuda_set_va_base(uint64_t base) {
  configure();
  g.va_next = base;
}

/* How many NOT_READY answers a recorded event gives before it completes. */
EXPORT void fake_cuda_set_event_polls(int polls) {
  configure();
  g.event_polls = polls;
}

/* The next call of the entry point `call` fails with `code`, before any check. */
EXPORT void fake_cuda_inject(const char *call, int code) {
  configure();
  size_t n = strlen(call);
  if (n >= sizeof g.inject_call) n = sizeof g.inject_call - 1;
  memcpy(g.inject_call, call, n);
  g.inject_call[n] = 0;
  g.inject_code = code;
}

/* Allows or denies device `dev` access to memory located on device `peer` (until the next reset). */
EXPORT void fake_cuda_set_peer_access(int dev, int peer, int allowed) {
  configure();
  if (dev >= 0 && dev < MAX_DEVICES && peer >= 0 && peer < MAX_DEVICES) g.peer[dev][peer] = allowed != 0;
}

/* Physical bytes counted against device `dev`'s capacity. */
EXPORT uint64_t fake_cuda_device_used(int dev) {
  configure();
  return dev >= 0 && dev < MAX_DEVICES ? g.used[dev] : 0;
}

/* The raw bytes of the last CUmemAllocationProp and CUmemAccessDesc the fake was given. */
EXPORT void fake_cuda_last_structs(unsigned char *prop32, unsigned char *access12) {
  memcpy(prop32, g.last_prop, sizeof g.last_prop);
  memcpy(access12, g.last_access, sizeof g.last_access);
}

/*
 * The C layouts, as compiled (against cuda.h when available): sizeof and offsets of
 * CUmemAllocationProp (size, type, requestedHandleTypes, location, location.id,
 * win32HandleMetaData, allocFlags), CUmemLocation (size), CUmemAccessDesc (size, location, flags).
 */
EXPORT void fake_cuda_layout(uint64_t *out) {
  out[0] = sizeof(CUmemAllocationProp);
  out[1] = offsetof(CUmemAllocationProp, type);
  out[2] = offsetof(CUmemAllocationProp, requestedHandleTypes);
  out[3] = offsetof(CUmemAllocationProp, location);
  out[4] = offsetof(CUmemAllocationProp, location.id);
  out[5] = offsetof(CUmemAllocationProp, win32HandleMetaData);
  out[6] = offsetof(CUmemAllocationProp, allocFlags);
  out[7] = sizeof(CUmemLocation);
  out[8] = sizeof(CUmemAccessDesc);
  out[9] = offsetof(CUmemAccessDesc, location);
  out[10] = offsetof(CUmemAccessDesc, flags);
#ifdef FAKE_CUDA_WITH_CUDA_H
  out[11] = 1;
#else
  out[11] = 0;
#endif
}
