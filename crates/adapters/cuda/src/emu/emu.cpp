// The CPU kernel emulator of feature `cuda-emu`: the thread model of emu.h,
// the kernels of cuda_kernels.cu compiled unchanged against it, and a
// launcher that takes arguments the way cuLaunchKernel does (an array of
// pointers to the values) and checks their number, sizes and kinds against
// each kernel's C++ signature.
#include "emu.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <algorithm>
#include <memory>
#include <cstdio>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cuda_kernels.cu"

// Two faulty kernels for the emulator's own tests (not part of the
// backend): a barrier that thread 0 skips, and a warp exchange that half a
// warp waits in while the other half waits at a block barrier.
extern "C" __global__ void emu_fault_divergent_f32(float* x, long long n) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    x[threadIdx.x % n] = 1.0f;
}
extern "C" __global__ void emu_fault_deadlock_f32(float* x, long long n) {
    (void)n;
    if (threadIdx.x < 16)
        x[0] = (float)__shfl_down_sync(0xffffffffu, (double)x[0], 1);
    else
        __syncthreads();
}

uint3 threadIdx;
uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace {

std::mutex g_launch;  // one launch at a time (statics stand in for __shared__)
std::string g_err;

void fail(const std::string& msg) {
    if (g_err.empty()) g_err = msg;
}

// Each CUDA thread of a block is a fiber on the calling OS thread; the
// scheduler resumes every runnable fiber in order until it yields at a
// barrier or finishes the block, then releases barriers that every party
// has reached. Fibers persist across blocks and launches (fiber t is
// always thread t): each loops "run the kernel for the current block,
// report done, wait". On x86-64 a fiber switch is a few instructions
// (callee-saved registers and the stack pointer, below); elsewhere
// ucontext's swapcontext.
enum State { READY, AT_BLOCK, AT_WARP, DONE };

constexpr std::size_t STACK = 64 * 1024;

#if defined(__x86_64__)
extern "C" void lmo_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl lmo_emu_switch
    .type lmo_emu_switch,@function
lmo_emu_switch:
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
    .size lmo_emu_switch, .-lmo_emu_switch
)");
struct Ctx {
    void* sp = nullptr;
};
#else
struct Ctx {
    ucontext_t uc;
};
#endif

struct Fiber {
    Ctx ctx;
    State state = DONE;
    uint3 idx;
    std::unique_ptr<char[]> stack;
};

struct Sched {
    Ctx main;
    std::vector<Fiber> fibers;
    unsigned int cur = 0;
    unsigned int threads = 0;
    bool whole_warps = true;
    std::vector<double> slots;  // 32 per warp
    void (*run)(void**) = nullptr;
    void** params = nullptr;
};

Sched g_s;

void switch_to(Ctx& save, Ctx& load) {
#if defined(__x86_64__)
    lmo_emu_switch(&save.sp, load.sp);
#else
    swapcontext(&save.uc, &load.uc);
#endif
}

void yield_as(State st) {
    Fiber& f = g_s.fibers[g_s.cur];
    f.state = st;
    switch_to(f.ctx, g_s.main);
}

[[noreturn]] void fiber_main() {
    for (;;) {
        g_s.run(g_s.params);
        yield_as(DONE);
    }
}

// Creates fibers up to `n` (once: they persist).
void ensure_fibers(unsigned int n) {
    while (g_s.fibers.size() < n) {
        g_s.fibers.emplace_back();
        Fiber& f = g_s.fibers.back();
        f.stack.reset(new char[STACK]);
#if defined(__x86_64__)
        // The first switch pops six zeroed registers and "returns" into
        // fiber_main with the stack aligned as after a call.
        std::uintptr_t top = (reinterpret_cast<std::uintptr_t>(f.stack.get()) + STACK) & ~std::uintptr_t(15);
        void** sp = reinterpret_cast<void**>(top - 64);
        for (int k = 0; k < 6; k++) sp[k] = nullptr;
        sp[6] = reinterpret_cast<void*>(&fiber_main);
        sp[7] = nullptr;
        f.ctx.sp = sp;
#else
        getcontext(&f.ctx.uc);
        f.ctx.uc.uc_stack.ss_sp = f.stack.get();
        f.ctx.uc.uc_stack.ss_size = STACK;
        f.ctx.uc.uc_link = nullptr;
        makecontext(&f.ctx.uc, fiber_main, 0);
#endif
    }
}

// Runs one block; false on a deadlock (a barrier some threads never reach).
bool run_block() {
    unsigned int n = g_s.threads;
    for (unsigned int t = 0; t < n; t++) g_s.fibers[t].state = READY;
    for (;;) {
        for (unsigned int t = 0; t < n; t++) {
            if (g_s.fibers[t].state != READY) continue;
            g_s.cur = t;
            threadIdx = g_s.fibers[t].idx;
            switch_to(g_s.main, g_s.fibers[t].ctx);
        }
        bool progress = false, all_done = true, any_warp = false, all_block = true;
        for (unsigned int w = 0; w * 32 < n; w++) {
            unsigned int lo = w * 32, hi = std::min(n, lo + 32);
            bool waiting = false, complete = true;
            for (unsigned int t = lo; t < hi; t++) {
                State st = g_s.fibers[t].state;
                if (st == AT_WARP) waiting = true;
                else if (st != DONE) complete = false;
            }
            if (waiting) {
                any_warp = true;
                if (complete) {
                    for (unsigned int t = lo; t < hi; t++)
                        if (g_s.fibers[t].state == AT_WARP) g_s.fibers[t].state = READY;
                    progress = true;
                }
            }
        }
        unsigned int done = 0;
        for (unsigned int t = 0; t < n; t++) {
            State st = g_s.fibers[t].state;
            if (st == DONE) done++;
            else all_done = false;
            if (st != AT_BLOCK && st != DONE) all_block = false;
        }
        if (all_done) return true;
        if (progress) continue;
        if (all_block && !any_warp) {
            if (done > 0)
                fail("__syncthreads reached by only part of a block (divergent barrier)");
            for (unsigned int t = 0; t < n; t++)
                if (g_s.fibers[t].state == AT_BLOCK) g_s.fibers[t].state = READY;
            continue;
        }
        fail("deadlock: threads wait at a barrier the others never reach");
        // The stuck fibers are abandoned (kernels hold no resources); the
        // next launch starts fresh ones.
        g_s.fibers.clear();
        return false;
    }
}

}  // namespace

void __syncthreads() { yield_as(AT_BLOCK); }

double __shfl_down_sync(unsigned int mask, double v, int delta) {
    if (mask != 0xffffffffu || !g_s.whole_warps) {
        fail("__shfl_down_sync with a partial warp");
        return v;
    }
    unsigned int lane = g_s.cur & 31;
    double* s = &g_s.slots[(g_s.cur >> 5) * 32];
    s[lane] = v;
    yield_as(AT_WARP);
    double r = (lane + (unsigned)delta < 32u) ? s[lane + delta] : v;
    yield_as(AT_WARP);
    return r;
}

// One OS thread runs every fiber: plain read-modify-writes are atomic.
double atomicAdd(double* p, double v) {
    double old = *p;
    *p = old + v;
    return old;
}
unsigned int atomicMax(unsigned int* p, unsigned int v) {
    unsigned int old = *p;
    if (v > old) *p = v;
    return old;
}
unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
    unsigned long long old = *p;
    if (v < old) *p = v;
    return old;
}

namespace {

// Argument kinds, as the Rust side tags them.
template <typename T>
struct Kind {
    static constexpr int v = -1;
};
template <typename T>
struct Kind<T*> {
    static constexpr int v = 0;
};
template <>
struct Kind<long long> {
    static constexpr int v = 1;
};
template <>
struct Kind<int> {
    static constexpr int v = 2;
};
template <>
struct Kind<float> {
    static constexpr int v = 3;
};

const char* kind_name(int k) {
    switch (k) {
        case 0: return "pointer";
        case 1: return "i64";
        case 2: return "i32";
        case 3: return "f32";
        default: return "unknown";
    }
}

template <typename... A, std::size_t... I>
void invoke(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<A*>(p[I])...);
}

// Checks the arguments against f's signature; on success returns a thunk
// that runs f with them.
template <typename... A>
bool check_args(const char* name, void (*)(A...), const unsigned char* kinds, int n) {
    constexpr int want[] = {Kind<A>::v..., 0};
    constexpr std::size_t sizes[] = {sizeof(A)..., 0};
    (void)sizes;
    if (n != (int)sizeof...(A)) {
        fail(std::string(name) + ": " + std::to_string(n) + " arguments passed, the kernel takes " +
             std::to_string(sizeof...(A)));
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (kinds[i] != want[i]) {
            fail(std::string(name) + ": argument " + std::to_string(i) + " passed as " +
                 kind_name(kinds[i]) + ", the kernel takes " + kind_name(want[i]));
            return false;
        }
    }
    return true;
}

template <typename... A>
void run(void (*f)(A...), void** p) {
    invoke(f, p, std::index_sequence_for<A...>{});
}

struct Entry {
    const char* name;
    bool (*check)(const unsigned char*, int);
    void (*run)(void**);
};

#define EMU_ENTRY(k)                                                                 \
    {#k, [](const unsigned char* kinds, int n) { return check_args(#k, &k, kinds, n); }, \
     [](void** p) { run(&k, p); }},
#define EMU_PAIR(k) EMU_ENTRY(k##_f32) EMU_ENTRY(k##_bf16)

const Entry ENTRIES[] = {
    EMU_PAIR(fill) EMU_PAIR(scale) EMU_PAIR(sign) EMU_PAIR(axpby) EMU_PAIR(scale_cols)
    EMU_PAIR(scale_rows) EMU_PAIR(transpose) EMU_PAIR(mirror) EMU_PAIR(adamw) EMU_PAIR(dot)
    EMU_PAIR(sumsq) EMU_PAIR(sumabs) EMU_PAIR(nonfinite) EMU_PAIR(amax) EMU_PAIR(first_index)
    EMU_PAIR(col_norms) EMU_PAIR(row_norms) EMU_PAIR(batch_sumsq) EMU_PAIR(batch_dot)
    EMU_PAIR(batch_normalize) EMU_PAIR(batch_normalize_t) EMU_PAIR(momentum) EMU_PAIR(lmo_update)
    EMU_PAIR(cvt_normalize) EMU_PAIR(cvt_normalize_t)
    EMU_ENTRY(emu_fault_divergent_f32) EMU_ENTRY(emu_fault_deadlock_f32)
};

const Entry* find(const char* name) {
    for (const Entry& e : ENTRIES)
        if (std::strcmp(e.name, name) == 0) return &e;
    return nullptr;
}

}  // namespace

extern "C" {

// 1 when the emulator has kernel `name` (e.g. "momentum_bf16").
int lmo_emu_has(const char* name) { return find(name) != nullptr; }

// Runs kernel `name` on a grid × block launch with `n` arguments
// (`params[i]` points to the value of argument i, `kinds[i]` tags it).
// Returns 0, or 1 with a message in `err` (the launch may have run in part).
int lmo_emu_launch(const char* name, const unsigned int* grid, const unsigned int* block,
                   void** params, const unsigned char* kinds, int n, char* err,
                   unsigned long errlen) {
    std::lock_guard<std::mutex> guard(g_launch);
    g_err.clear();
    auto out = [&](int rc) {
        if (errlen) std::snprintf(err, errlen, "%s", g_err.c_str());
        return g_err.empty() ? rc : 1;
    };
    const Entry* e = find(name);
    if (!e) {
        fail(std::string("no kernel named ") + name);
        return out(1);
    }
    if (!e->check(kinds, n)) return out(1);
    unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (block[0] == 0 || block[1] == 0 || block[2] == 0 || grid[0] == 0 || grid[1] == 0 ||
        grid[2] == 0) {
        fail(std::string(name) + ": a launch dimension is 0");
        return out(1);
    }
    if (threads > 1024 || block[2] > 64 || grid[1] > 65535 || grid[2] > 65535 ||
        grid[0] > 2147483647u) {
        fail(std::string(name) + ": launch dimensions beyond the CUDA limits");
        return out(1);
    }
    g_s.threads = (unsigned int)threads;
    g_s.whole_warps = threads % 32 == 0;
    g_s.slots.assign(32 * ((threads + 31) / 32), 0.0);
    ensure_fibers((unsigned int)threads);
    for (unsigned int t = 0; t < threads; t++)
        g_s.fibers[t].idx = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
    g_s.run = e->run;
    g_s.params = params;
    blockDim = {block[0], block[1], block[2]};
    gridDim = {grid[0], grid[1], grid[2]};
    for (unsigned int z = 0; z < grid[2]; z++)
        for (unsigned int y = 0; y < grid[1]; y++)
            for (unsigned int x = 0; x < grid[0]; x++) {
                blockIdx = {x, y, z};
                if (!run_block()) return out(1);
            }
    return out(0);
}
}
