"""Peer implementations for `cargo xtask bench`, run in the same session as
ours: numpy (OpenBLAS) and PyTorch CPU, same algorithm, same coefficients,
same thread count. Prints one JSON object per line, like lmo-bench.

usage: python peers.py SUITE --shapes 768x768,... --reps N --threads T
       [--sets muon,...] [--precisions f32,bf16,f64]
Suites: gemm, orth, brox, step; on a CUDA GPU: gpu-gemm, gpu-orth,
gpu-step (PyTorch only). Missing packages or devices are reported as
{"skip": ...} lines. Before any measurement of a CPU suite it prints a
{"peer_machine": ...} line (this CPU's SIMD level and the requested
threads: what the peers are judged against, also when a bundle's output is
read back elsewhere) and a {"peer_kernels": ...} line: the BLAS/ISA kernel
and thread count each peer really uses (threadpoolctl for numpy's and
scipy's OpenBLAS; MKL's and oneDNN's own verbose output and ATen's CPU
capability for PyTorch). The harness refuses a ratio against a peer below
that level.
"""
import math
import argparse
import json
import os
import re
import sys
import time

MUON = (3.4445, -4.7750, 2.0315)
CUBIC = (1.5, -0.5, 0.0)
# Polar Express, arXiv 2505.16932, Algorithm 1 (full precision).
PE = [(8.28721201814563, -23.595886519098837, 17.300387312530933),
      (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
      (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
      (3.3184196573706015, -2.488488024314874, 0.51004894012372),
      (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
      (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
      (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
      (1.875, -1.25, 0.375)]
PE = [(a / 1.01, b / 1.01**3, c / 1.01**5) for (a, b, c) in PE[:-1]] + [PE[-1]]
NANOGPT = [(4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377),
           (3.7418, -5.5913, 2.3037), (2.8769, -3.1427, 1.2046),
           (2.8366, -3.0525, 1.2012)]


def schedule(name):
    """(coefficients per step, delta) exactly as the Rust side's defaults."""
    if name == "muon":
        return [MUON] * 5, 0.0
    if name == "cubic":
        return [CUBIC] * 24, 0.0
    if name == "polar-express":
        return [PE[min(i, len(PE) - 1)] for i in range(5)], 0.01
    if name == "nanogpt":
        return NANOGPT, 0.0
    raise SystemExit(f"unknown set {name}")


def openblas_level(core):
    """The SIMD level of an OpenBLAS kernel name (openblas_get_corename, as
    threadpoolctl reports it)."""
    c = (core or "").lower()
    if c in ("skylakex", "cooperlake", "sapphirerapids"):
        return "avx512"
    if c in ("haswell", "zen", "skylake"):
        return "avx2"
    if c in ("sandybridge",):
        return "avx"
    return "unknown" if not c else "sse"


def isa_level(text):
    """The SIMD level named in MKL's or oneDNN's verbose ISA line."""
    t = text.lower()
    if "avx-512" in t or "avx512" in t or "amx" in t:
        return "avx512"
    if "avx2" in t:
        return "avx2"
    if "avx" in t:
        return "avx"
    return "unknown"


def captured_fd1(fn):
    """What C code writes to file descriptor 1 while fn runs (MKL_VERBOSE
    and ONEDNN_VERBOSE print there, below Python's sys.stdout)."""
    import tempfile
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            fn()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode("utf-8", "replace")


def cpu_level():
    """The SIMD level of this machine's CPU (/proc/cpuinfo), as the harness
    computes it: the level the peers are judged against."""
    try:
        line = next(l for l in open("/proc/cpuinfo") if l.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    f = set(line.split(":", 1)[1].split())
    if "avx512f" in f:
        return "avx512"
    if "avx2" in f and "fma" in f:
        return "avx2"
    return "avx" if "avx" in f else "sse"


def unknown(what, why):
    return {"what": what, "api": "?", "kernel": f"unknown ({why})", "level": "unknown", "threads": None}


def blas_components(impls):
    """numpy's and scipy's OpenBLAS, from threadpoolctl. The scipy peer also
    runs numpy's BLAS (its solvers call numpy), so it gets both."""
    out = {p: [] for p in ("numpy", "scipy") if p in impls}
    try:
        from threadpoolctl import threadpool_info
    except ImportError as e:
        for p in out:
            out[p].append(unknown("BLAS", f"threadpoolctl: {e}"))
        return out
    found = {}
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        # Wheels keep it in numpy.libs/ or scipy.libs/ (both files are named
        # scipy_openblas); elsewhere (a system or conda numpy) by file name.
        path = lib.get("filepath", "")
        owner = os.path.basename(os.path.dirname(path)).split(".")[0]
        if owner not in ("numpy", "scipy"):
            owner = "numpy" if "numpy" in path else "scipy" if "scipy" in path else "system"
        found[owner] = {"api": f"{lib.get('internal_api')} {lib.get('version')}",
                        "kernel": lib.get("architecture") or "?",
                        "level": openblas_level(lib.get("architecture")),
                        "threads": lib.get("num_threads")}
    if "system" in found and "numpy" not in found:
        found["numpy"] = found["system"]
    for p in out:
        for owner in ("numpy",) if p == "numpy" else ("scipy", "numpy"):
            what = "BLAS" if owner == p else f"{owner}'s BLAS"
            out[p].append({"what": what, **found[owner]} if owner in found
                          else unknown(what, "not found by threadpoolctl"))
    return out


def torch_components(torch):
    """ATen's capability, and the kernels MKL (f32 products) and oneDNN
    (bf16 products) report on a probe product. A library that prints
    nothing for the probe is not used for it and is left out."""
    threads = torch.get_num_threads()
    cap = torch.backends.cpu.get_cpu_capability()
    comps = [{"what": "ATen vector kernels", "api": f"torch {torch.__version__}",
              "kernel": cap, "level": isa_level(cap), "threads": threads}]
    a = torch.ones(64, 64)
    try:
        if torch.backends.mkl.is_available():
            def f32():
                with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
                    a @ a
            text = captured_fd1(f32)
            head = next((l for l in text.splitlines() if "MKL_VERBOSE" in l and "GEMM(" not in l), "")
            # "MKL_VERBOSE oneMKL 2024.0 ... for Intel(R) 64 architecture <ISA>, Lnx 2.60GHz ..."
            m = re.search(r"MKL_VERBOSE (.*?) Product build .*? architecture (.*?), Lnx", head)
            # "MKL_VERBOSE SGEMM(N,N,64,...) 333.62us CNR:OFF Dyn:1 FastMM:1 TID:0  NThr:2"
            nthr = re.search(r"SGEMM\(.*NThr:(\d+)", text)
            if head:
                comps.append({"what": "f32 matmul (MKL)", "api": m.group(1) if m else "MKL",
                              "kernel": m.group(2) if m else head.strip()[:160],
                              "level": isa_level(head),
                              "threads": int(nthr.group(1)) if nthr else None})
    except Exception as e:  # noqa: BLE001 (a probe must not lose the peer's records)
        comps.append(unknown("f32 matmul (MKL)", f"probe failed: {e}"))
    try:
        if torch.backends.mkldnn.is_available():
            b = a.bfloat16()
            def bf16():
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    b @ b
            text = captured_fd1(bf16)
            lines = text.splitlines()
            isa = next((l.split("isa:", 1)[1].strip() for l in lines if "isa:" in l), "")
            # "onednn_verbose,v1,primitive,exec,cpu,matmul,brg_matmul:avx10_1_512_amx,..."
            impl = next((l.split(",")[6] for l in lines
                         if ",exec," in l and ",matmul," in l and len(l.split(",")) > 6), "")
            ver = next((l.split("info,", 1)[1].split(" (")[0] for l in lines if ",info,oneDNN" in l), "oneDNN")
            nthr = next((l.split("nthr:", 1)[1].strip() for l in lines if "nthr:" in l), "")
            if impl:
                comps.append({"what": "bf16 matmul (oneDNN)", "api": ver,
                              "kernel": f"{isa} / {impl}", "level": isa_level(isa or impl),
                              "threads": int(nthr) if nthr.isdigit() else threads})
    except Exception as e:  # noqa: BLE001
        comps.append(unknown("bf16 matmul (oneDNN)", f"probe failed: {e}"))
    return comps


def peer_kernels(impls, torch):
    """{peer: [component, ...]}: each component names what was probed, the
    library, its kernel or ISA, the SIMD level that implies and the threads."""
    out = blas_components(impls)
    if torch is not None and "torch" in impls:
        out["torch"] = torch_components(torch)
    return out


def emit(suite, case, impl, flops, samples, **extra):
    d = {"suite": suite, "case": case, "impl": impl, "flops": flops,
         "samples_s": samples}
    d.update(extra)
    print(json.dumps(d), flush=True)


def timeit(fn, reps):
    fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def ns_numpy(np, G, coeffs, delta):
    # K. Jordan's reference NS iteration, numpy transcription.
    X = G / (np.linalg.norm(G) * (1 + delta) + 1e-7)
    tall = G.shape[0] > G.shape[1]
    if tall:
        X = X.T
    for a, b, c in coeffs:
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.T if tall else X


def ns_torch(torch, G, coeffs, delta):
    # K. Jordan's reference zeropower_via_newtonschulz5, any coefficients.
    X = G / (G.norm() * (1 + delta) + 1e-7)
    tall = G.size(0) > G.size(1)
    if tall:
        X = X.mT
    for a, b, c in coeffs:
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


def cpu_has_bf16_dot():
    """True where the CPU has bf16 dot-product instructions (PyTorch's fast
    bf16 matmul on CPU); elsewhere its bf16 matmul is ~100x slower than f32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def trs_instance(np, n):
    """Bit-identical to lmo-bench's trs_instance: integer hashing of the index."""
    k = np.arange(n * n, dtype=np.uint64)
    v = ((k * np.uint64(2654435761)) % np.uint64(1 << 32)).astype(np.float64) / 4294967296.0 - 0.5
    V = v.reshape(n, n)
    A = V + V.T
    i = np.arange(n, dtype=np.int64)
    g = ((i * 40503 + 12345) % 65536).astype(np.float64) / 65536.0 - 0.5
    return A, g


def gpt2_shapes(layers, d):
    vocab, ctx = (50257, 1024) if d >= 256 else (8 * d, 4 * d)
    hidden, other = [], [(vocab, d), (ctx, d)]
    for _ in range(layers):
        hidden += [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]
        other += [(3 * d,), (d,), (4 * d,), (d,), (d,), (d,)]
    return hidden, other


def step_peers(torch, layers, d, reps):
    """One optimizer step on the GPT-2-shaped set: torch AdamW everywhere,
    and Muon (hidden) + AdamW (rest). torch.optim.Muon runs its NS5 in
    bf16; on CPUs without bf16 dot-product instructions that is ~100x
    slower than f32, so there the same Muon step (K. Jordan's reference:
    Nesterov momentum 0.95, NS5 quintic, scale max(1, m/n)^0.5) runs in f32."""
    hidden, other = gpt2_shapes(layers, d)
    g = torch.Generator().manual_seed(3)
    mk = lambda s: (torch.randn(*s, generator=g) * 0.02).requires_grad_(True)
    hp = [mk(s) for s in hidden]
    op = [mk(s) for s in other]
    for p in hp + op:
        p.grad = torch.randn(*p.shape, generator=g) * 0.01
    case = f"gpt2-{layers}x{d}"
    adam = torch.optim.AdamW(hp + op, lr=1e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    emit("step", f"adamw/{case}", "torch", 0.0, timeit(adam.step, reps))
    adam_rest = torch.optim.AdamW(op, lr=1e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    if cpu_has_bf16_dot() or d < 256:
        muon = torch.optim.Muon(hp, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0)
        emit("step", f"muon/{case}", "torch.optim.Muon-bf16", 0.0, timeit(lambda: (muon.step(), adam_rest.step()), reps))
    else:
        print(json.dumps({"skip": f"torch.optim.Muon muon/{case}", "why": "its NS5 runs in bf16; this CPU lacks "
                          "avx512_bf16/amx_bf16 (~100x slower than f32); the same step in f32 is measured instead"}), flush=True)
    bufs = [torch.zeros_like(p) for p in hp]

    @torch.no_grad()
    def muon_f32():
        for p, b in zip(hp, bufs):
            b.lerp_(p.grad, 1 - 0.95)
            u = p.grad.lerp(b, 0.95)
            X = ns_torch(torch, u, [MUON] * 5, 0.0)
            p.add_(X, alpha=-0.02 * max(1, p.size(0) / p.size(1)) ** 0.5)
        adam_rest.step()

    emit("step", f"muon/{case}", "torch-muon-f32", 0.0, timeit(muon_f32, reps))


def gpu_time(torch, fn, reps, sync=None):
    """Seconds per run: each sample queues `inner` runs and synchronizes
    once (inner chosen on the warm-up so a sample lasts >= 20 ms), the same
    protocol as lmo-bench's GPU suites."""
    sync = sync or torch.cuda.synchronize
    fn()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    one = max(time.perf_counter() - t, 1e-6)
    inner = min(1000, max(1, math.ceil(0.02 / one)))
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        out.append((time.perf_counter() - t) / inner)
    return out


def jordan_ns5(G, steps=5, eps=1e-7):
    """K. Jordan's zeropower_via_newtonschulz5 (Muon reference): bf16, the
    quintic (3.4445, -4.7750, 2.0315), Frobenius normalization."""
    a, b, c = MUON
    X = G.bfloat16()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


def gpu_peers(torch, suite, shapes, reps):
    """The GPU suites' peers. LMO_BENCH_GPU_PEERS_ON_CPU=1 runs the same code
    on the CPU (a smoke test of this script where no GPU is present; its
    figures mean nothing)."""
    sync = None
    if os.environ.get("LMO_BENCH_GPU_PEERS_ON_CPU") == "1":
        dev = torch.device("cpu")
        sync = lambda: None  # noqa: E731
    elif not torch.cuda.is_available():
        print(json.dumps({"skip": suite, "why": "torch.cuda.is_available() is False"}), flush=True)
        return
    else:
        dev = torch.device("cuda")
        print(json.dumps({"versions": {"gpu": torch.cuda.get_device_name(0),
                                       "torch_cuda": str(torch.version.cuda)}}), flush=True)
    g = torch.Generator(device=dev).manual_seed(7)

    def timed(fn):
        return gpu_time(torch, fn, reps, sync)

    for (m, n) in shapes:
        if suite == "gpu-gemm":
            A = torch.randn(m, n, device=dev, generator=g, dtype=torch.bfloat16)
            B = torch.randn(n, n, device=dev, generator=g, dtype=torch.bfloat16)
            emit(suite, f"bf16/{m}x{n}x{n}", "torch-cublas", 2.0 * m * n * n, timed(lambda: A @ B))
        elif suite == "gpu-orth":
            G = torch.randn(m, n, device=dev, generator=g, dtype=torch.bfloat16)
            fl = ns_flops([MUON] * 5, m, n)
            case = f"muon/bf16/{m}x{n}"
            with torch.no_grad():
                emit(suite, case, "torch-eager", fl, timed(lambda: jordan_ns5(G)))
                compiled = torch.compile(jordan_ns5)
                emit(suite, case, "torch-compile", fl, timed(lambda: compiled(G)))
        elif suite == "gpu-step":
            layers, d = m, n
            hidden, _ = gpt2_shapes(layers, d)
            mk = lambda s, sc: (torch.randn(*s, device=dev, generator=g) * sc)
            hp = [mk(s, 0.02).requires_grad_(True) for s in hidden]
            for p in hp:
                p.grad = mk(p.shape, 0.01)
            case = f"gpt2-hidden-{layers}x{d}"
            muon = torch.optim.Muon(hp, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.0)
            emit(suite, f"muon/{case}", "torch.optim.Muon-bf16", 0.0, timed(muon.step))
            adam = torch.optim.AdamW(hp, lr=1e-3, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0, fused=True)
            emit(suite, f"adamw/{case}", "torch-fused", 0.0, timed(adam.step))


def ns_flops(coeffs, m, n):
    k, l = min(m, n), max(m, n)
    return sum(4.0 * k * k * l + (2.0 * k**3 if c != 0 else 0.0) for (_, _, c) in coeffs)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("suite")
    p.add_argument("--shapes", required=True)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sets", default="muon")
    p.add_argument("--precisions", default="f32")
    # Our runner's Newton–Schulz forms (plain, gram); the peers have only
    # the plain form, so they accept the option and ignore it.
    p.add_argument("--forms", default="plain")
    p.add_argument("--impls", default="numpy,torch")
    a = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    impls = a.impls.split(",")
    np = torch = None
    try:
        import numpy as np  # noqa: F811
    except ImportError as e:
        print(json.dumps({"skip": "numpy", "why": str(e)}), flush=True)
    if "scipy" in impls:
        try:
            import scipy
            import scipy.linalg  # noqa: F401 (loads scipy's OpenBLAS for the kernel report)
            scipy_version = scipy.__version__
        except ImportError as e:
            scipy_version = None
            print(json.dumps({"skip": "scipy", "why": str(e)}), flush=True)
    else:
        scipy_version = None
    if "torch" in impls:
        try:
            import torch  # noqa: F811
            torch.set_num_threads(a.threads)
        except ImportError as e:
            print(json.dumps({"skip": "torch", "why": str(e)}), flush=True)
    versions = {"python": sys.version.split()[0]}
    if np is not None:
        versions["numpy"] = np.__version__
    if scipy_version is not None:
        versions["scipy"] = scipy_version
    if torch is not None:
        versions["torch"] = torch.__version__
        versions["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    print(json.dumps({"versions": versions}), flush=True)
    if not a.suite.startswith("gpu-"):
        # What the peers run, and what they are judged against (a bundle's
        # output is read back on another machine).
        print(json.dumps({"peer_machine": {"simd_level": cpu_level(), "threads": a.threads}}), flush=True)
        print(json.dumps({"peer_kernels": peer_kernels(impls, torch)}), flush=True)
    if np is None and a.suite in ("gemm", "orth"):
        print(json.dumps({"skip": f"{a.impls} {a.suite}", "why": "numpy (needed for the inputs) is missing"}), flush=True)
    rng = None if np is None else np.random.default_rng(7)
    for (m, n) in shapes:
        if a.suite == "gemm":
            if np is None:
                continue
            A = rng.standard_normal((m, n), dtype=np.float32)
            B = rng.standard_normal((n, n), dtype=np.float32)
            if "numpy" in impls:
                emit("gemm", f"{m}x{n}x{n}", "numpy-sgemm", 2.0 * m * n * n, timeit(lambda: A @ B, a.reps))
            if torch is not None:
                tA, tB = torch.from_numpy(A), torch.from_numpy(B)
                emit("gemm", f"{m}x{n}x{n}", "torch-sgemm", 2.0 * m * n * n, timeit(lambda: tA @ tB, a.reps))
        elif a.suite == "orth":
            if np is None:
                continue
            G = rng.standard_normal((m, n))
            for set_name in a.sets.split(","):
                coeffs, delta = schedule(set_name)
                fl = ns_flops(coeffs, m, n)
                for prec in a.precisions.split(","):
                    case = f"{set_name}/{prec}/{m}x{n}"
                    if "numpy" in impls and prec in ("f32", "f64"):
                        Gp = G.astype(np.float32 if prec == "f32" else np.float64)
                        emit("orth", case, "numpy", fl, timeit(lambda: ns_numpy(np, Gp, coeffs, delta), a.reps))
                    if torch is not None and prec == "bf16" and not cpu_has_bf16_dot() and m * n > 256 * 256:
                        print(json.dumps({"skip": f"torch {case}", "why": "CPU lacks avx512_bf16/amx_bf16: "
                                          "PyTorch bf16 matmul is ~100x slower than f32 here (8 s at 768x768)"}), flush=True)
                    elif torch is not None:
                        dt = {"f32": torch.float32, "f64": torch.float64, "bf16": torch.bfloat16}[prec]
                        tG = torch.from_numpy(G).to(dt)
                        with torch.no_grad():
                            emit("orth", case, "torch", fl, timeit(lambda: ns_torch(torch, tG, coeffs, delta), a.reps))
        elif a.suite == "step":
            if torch is None:
                continue
            step_peers(torch, m, n, a.reps)
        elif a.suite.startswith("gpu-"):
            if torch is not None:
                gpu_peers(torch, a.suite, [(m, n)], a.reps)
        elif a.suite == "brox":
            if "scipy" not in impls:
                continue
            try:
                from scipy.optimize._trustregion_exact import IterativeSubproblem
            except ImportError as e:
                print(json.dumps({"skip": "scipy", "why": str(e)}), flush=True)
                continue
            A, g = trs_instance(np, m)
            out = {}

            def run():
                sub = IterativeSubproblem(np.zeros(m), lambda x: 0.0, lambda x: g, lambda x: A)
                p, _ = sub.solve(1.0)
                out["p"], out["lam"] = p, sub.lambda_current

            samples = timeit(run, a.reps)
            p, lam = out["p"], out["lam"]
            res = np.linalg.norm(A @ p + lam * p + g)
            denom = np.abs(np.linalg.eigvalsh(A)).max() * np.linalg.norm(p) + np.linalg.norm(g) + lam * np.linalg.norm(p)
            emit("brox", f"trs/{m}", "scipy", 0.0, samples, kkt_residual=float(res / denom))
        else:
            raise SystemExit(f"unknown suite {a.suite}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
