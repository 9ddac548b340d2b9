"""The paper projection of docs/distributed.md (8 and 64 GPUs): Muon's
Newton-Schulz cost and the sharded step's communication against the
forward/backward time, under the assumptions stated there.

    python3 bench/dist_projection.py
"""

RATE = 400e12  # achieved bf16 FLOP/s per GPU (fwd+bwd and NS5 GEMMs)
TOKENS = 524288  # global tokens per step
LINKS = {8: 350e9, 64: 45e9}  # ring bus bandwidth per GPU, bytes/s


def ns5(m, n, steps=5):
    a, b = min(m, n), max(m, n)
    return steps * (4 * a * a * b + 2 * a**3)


def model(d, layers, vocab=50257, ctx=1024):
    hidden = [(3 * d, d), (d, d), (4 * d, d), (d, 4 * d)]
    flops = sum(ns5(*s) for s in hidden) * layers
    largest = max(ns5(*s) for s in hidden)
    vectors = 3 * d + d + 4 * d + d + d + d
    params = vocab * d + ctx * d + layers * (sum(a * b for a, b in hidden) + vectors)
    return flops, largest, params


def main():
    print(
        "| model | GPUs | fwd+bwd | NS5, one GPU | NS5 sharded | grads reduce to owners | params broadcast "
        "| sharded total / ZeRO-1 | ZeRO-1 AdamW |"
    )
    for name, d, layers in [("GPT-2 small", 768, 12), ("1.3 B", 2048, 24)]:
        flops, largest, p = model(d, layers)
        for n, bw in LINKS.items():
            fb = 6 * p * TOKENS / (n * RATE)
            one = flops / RATE
            # LPT: at most the average plus the largest block.
            sharded = max(flops / n, largest) / RATE
            ring = (n - 1) / n
            # bf16 reduce to each block's owner: reduce-scatter + gather
            # (Rabenseifner), the owner receiving its 1/n share once more.
            grads = (2 * p) * ring * (1 + 1 / n) / bw
            bcast = (4 * p) * ring / bw  # f32 parameters
            zero1 = 2 * (2 * p) * ring / bw  # bf16 reduce-scatter + all-gather
            print(
                f"| {name} ({p / 1e6:.0f} M) | {n} | {fb * 1e3:.0f} ms | {one * 1e3:.1f} ms ({100 * one / fb:.1f} %) "
                f"| {sharded * 1e3:.2f} ms ({100 * sharded / fb:.1f} %) | {grads * 1e3:.1f} ms | {bcast * 1e3:.1f} ms "
                f"| {(grads + bcast) / zero1:.2f}× | {zero1 * 1e3:.1f} ms |"
            )


if __name__ == "__main__":
    main()
