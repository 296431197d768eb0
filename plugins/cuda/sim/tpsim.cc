/* plugins/cuda/sim/tpsim.cc — the block scheduler of the kernel emulator
 * (see tpsim.h): one coroutine per GPU thread, switched at barriers.
 *
 * Switching: on x86-64 a few instructions that save the callee-saved
 * registers and swap stacks (swapcontext also saves the signal mask, a
 * system call each time, and a fused-attention test switches millions of
 * times); elsewhere ucontext. AddressSanitizer is told of every switch. */
#include "tpsim.h"

#include <sys/mman.h>
#include <ucontext.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define TPSIM_ASAN 1
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define TPSIM_ASM_SWITCH 1
/* tpsim_switch(&save_sp, load_sp): pushes rbp, rbx, r12-r15, stores rsp in
 * *save_sp, loads load_sp, pops the same registers and returns into that
 * context (SysV ABI: everything else is caller-saved). */
extern "C" void tpsim_switch(void **save_sp, void *load_sp);
asm(R"(
  .text
  .p2align 4
  .globl tpsim_switch
  .hidden tpsim_switch
  .type tpsim_switch, @function
tpsim_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tpsim_switch, .-tpsim_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

namespace {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

struct Thread {
#ifdef TPSIM_ASM_SWITCH
  void *sp = nullptr;
#else
  ucontext_t ctx;
#endif
  void *stack = nullptr;
  uint3 tid;
  int lane = 0, warp = 0;
  State st = RUNNABLE;
  uint64_t slot[2] = {0, 0}; /* values offered to shuffles, alternating */
  unsigned shuffles = 0;     /* shuffles this lane has done */
  void *fake_stack = nullptr;
};

constexpr size_t kStackBytes = 256 * 1024; /* mapped lazily: untouched pages cost nothing */

struct Sim {
  dim3 grid, block;
  uint3 bidx;
  std::vector<Thread> th;
  std::vector<void *> stacks; /* reused across launches */
  Thread *cur = nullptr;
#ifdef TPSIM_ASM_SWITCH
  void *sched_sp = nullptr;
#else
  ucontext_t sched;
#endif
  const std::function<void()> *body = nullptr;
  unsigned char *smem = nullptr;
  const char *name = "";
  const void *sched_stack_bottom = nullptr;
  size_t sched_stack_size = 0;
  void *sched_fake_stack = nullptr;
  bool active = false;
};
Sim S;

[[noreturn]] void die(const char *what) {
  fprintf(stderr, "tpsim: kernel %s, block (%u, %u, %u): %s\n", S.name, S.bidx.x, S.bidx.y,
          S.bidx.z, what);
  abort();
}

Thread &current() {
  if (!S.active || !S.cur) {
    fprintf(stderr, "tpsim: a device function ran outside a kernel launch\n");
    abort();
  }
  return *S.cur;
}

/* Into thread t from the scheduler; returns when t yields. */
void switch_to(Thread &t) {
  S.cur = &t;
#ifdef TPSIM_ASAN
  __sanitizer_start_switch_fiber(&S.sched_fake_stack, t.stack, kStackBytes);
#endif
#ifdef TPSIM_ASM_SWITCH
  tpsim_switch(&S.sched_sp, t.sp);
#else
  swapcontext(&S.sched, &t.ctx);
#endif
#ifdef TPSIM_ASAN
  __sanitizer_finish_switch_fiber(S.sched_fake_stack, nullptr, nullptr);
#endif
  S.cur = nullptr;
}

/* From the running thread back to the scheduler (it resumes here later,
 * unless it is exiting). */
void yield_to_scheduler(Thread &t, bool exiting) {
#ifdef TPSIM_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &t.fake_stack, S.sched_stack_bottom,
                                 S.sched_stack_size);
#endif
  (void)exiting;
#ifdef TPSIM_ASM_SWITCH
  tpsim_switch(&t.sp, S.sched_sp);
#else
  swapcontext(&t.ctx, &S.sched);
#endif
#ifdef TPSIM_ASAN
  __sanitizer_finish_switch_fiber(t.fake_stack, &S.sched_stack_bottom, &S.sched_stack_size);
#endif
}

void thread_entry() {
  Thread &t = *S.cur;
#ifdef TPSIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &S.sched_stack_bottom, &S.sched_stack_size);
#endif
  (*S.body)();
  t.st = DONE;
  yield_to_scheduler(t, true);
  die("a finished thread was resumed");
}

/* Out of line: getcontext() returns twice in principle, which must not
 * clobber a caller's loop variable. */
__attribute__((noinline)) void init_thread(Thread &t) {
  t.st = RUNNABLE;
  t.fake_stack = nullptr;
  t.shuffles = 0;
#ifdef TPSIM_ASM_SWITCH
  /* The stack as tpsim_switch leaves it: six register slots, then the
   * address it returns to; entered with rsp = 8 mod 16, as after a call. */
  uintptr_t top = ((uintptr_t)t.stack + kStackBytes) & ~(uintptr_t)15;
  void **sp = (void **)top;
  *--sp = nullptr; /* thread_entry's own return address: it never returns */
  *--sp = (void *)&thread_entry;
  for (int i = 0; i < 6; i++) *--sp = nullptr;
  t.sp = sp;
#else
  getcontext(&t.ctx);
  t.ctx.uc_stack.ss_sp = t.stack;
  t.ctx.uc_stack.ss_size = kStackBytes;
  t.ctx.uc_link = nullptr;
  makecontext(&t.ctx, thread_entry, 0);
#endif
}

void wait_at(State barrier) {
  Thread &t = current();
  t.st = barrier;
  yield_to_scheduler(t, false);
}

void run_block(int order) {
  int n = (int)S.th.size();
  for (int i = 0; i < n; i++) init_thread(S.th[i]);
  int warps = (n + 31) / 32;
  for (;;) {
    for (int j = 0; j < n; j++) {
      Thread &t = S.th[order > 0 ? j : n - 1 - j];
      if (t.st == RUNNABLE) switch_to(t);
    }
    int done = 0, at_block = 0;
    for (const Thread &t : S.th) {
      done += t.st == DONE;
      at_block += t.st == AT_BLOCK_BARRIER;
    }
    if (done == n) return;
    if (at_block == n - done) {
      if (done > 0) die("__syncthreads() reached after some threads of the block returned");
      for (Thread &t : S.th) t.st = RUNNABLE;
      continue;
    }
    bool released = false;
    for (int w = 0; w < warps; w++) {
      int lanes = 0, waiting = 0, live = 0;
      for (int i = w * 32; i < n && i < (w + 1) * 32; i++) {
        lanes++;
        live += S.th[i].st != DONE;
        waiting += S.th[i].st == AT_WARP_BARRIER;
      }
      if (waiting == 0 || waiting != live) continue;
      if (live != 32 || lanes != 32)
        die("a warp-wide operation (shuffle, __syncwarp) ran with fewer than 32 live lanes");
      for (int i = w * 32; i < (w + 1) * 32; i++) S.th[i].st = RUNNABLE;
      released = true;
    }
    if (!released)
      die("deadlock: threads wait at different barriers (a __syncthreads or shuffle inside a "
          "branch that not every thread takes)");
  }
}

} /* namespace */

uint3 tpsim_thread_idx() { return current().tid; }
uint3 tpsim_block_idx() {
  current();
  return S.bidx;
}
dim3 tpsim_block_dim() {
  current();
  return S.block;
}
dim3 tpsim_grid_dim() {
  current();
  return S.grid;
}
void *tpsim_dyn_smem() {
  current();
  return S.smem;
}
int tpsim_lane() { return current().lane; }

void __syncthreads() { wait_at(AT_BLOCK_BARRIER); }
void __syncwarp(unsigned) { wait_at(AT_WARP_BARRIER); }

/* One barrier per shuffle: values alternate between two slots, and a lane
 * cannot write shuffle k+1's slot before every lane has passed shuffle k's
 * barrier, nor k+2's (which reuses k's slot) before every lane has read k. */
uint64_t tpsim_warp_exchange(uint64_t v, int src) {
  Thread &t = current();
  unsigned k = t.shuffles++ & 1u;
  t.slot[k] = v;
  wait_at(AT_WARP_BARRIER);
  return src >= 0 && src < 32 ? S.th[(size_t)t.warp * 32 + (size_t)src].slot[k] : v;
}

void tpsim_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body,
                  const char *name) {
  if (S.active) {
    fprintf(stderr, "tpsim: kernel %s launched from inside kernel %s\n", name, S.name);
    abort();
  }
  size_t n = (size_t)block.x * block.y * block.z;
  if (n == 0 || n > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    fprintf(stderr, "tpsim: kernel %s: invalid launch grid (%u, %u, %u) x block (%u, %u, %u)\n",
            name, grid.x, grid.y, grid.z, block.x, block.y, block.z);
    abort();
  }
  S.name = name;
  S.grid = grid;
  S.block = block;
  S.body = &body;
  S.th.assign(n, Thread());
  while (S.stacks.size() < n) {
    void *p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      perror("tpsim: stack");
      abort();
    }
    S.stacks.push_back(p);
  }
  for (size_t i = 0; i < n; i++) {
    Thread &t = S.th[i];
    t.stack = S.stacks[i];
    t.tid.x = (unsigned)(i % block.x);
    t.tid.y = (unsigned)(i / block.x % block.y);
    t.tid.z = (unsigned)(i / ((size_t)block.x * block.y));
    t.lane = (int)(i % 32);
    t.warp = (int)(i / 32);
  }
  S.smem = smem ? static_cast<unsigned char *>(aligned_alloc(128, (smem + 127) / 128 * 128)) : nullptr;
  S.active = true;
  uint64_t linear = 0;
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++, linear++) {
        S.bidx.x = x;
        S.bidx.y = y;
        S.bidx.z = z;
        if (S.smem) memset(S.smem, 0xff, smem);
        run_block(linear % 2 == 0 ? 1 : -1);
      }
  S.active = false;
  free(S.smem);
  S.smem = nullptr;
}
