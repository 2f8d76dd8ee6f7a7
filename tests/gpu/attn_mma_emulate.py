#!/usr/bin/env python3
"""Lane-by-lane numpy emulation of attn_mma_kernel (kernels/cuda/attn.cuh), for checking its
indexing without a GPU.

The PTX semantics are written here once, from the PTX ISA's fragment tables, independently
of the kernel: ldmatrix .x4 (with and without .trans), mma.sync m16n8k16 (A, B, C/D fragment
layouts), cp.async with zero fill. The kernel's own code (tile list, row mapping, causal
limits, cp.async chunking into the padded two-stage shared layout, ldmatrix row addresses,
warp-level tile skipping and masking, online softmax in log2 units, P rounded to bf16,
output writes) is then replayed per block, per warp and per lane against those semantics,
and the output is compared with a direct float64 softmax over the same bf16 inputs.

Shared memory padding starts as NaN and the output as NaN: a read of padding or of an
unwritten word, or a row the kernel never writes, shows up as NaN. Block-table entries past
a sequence's blocks are out of range, so reading one raises.

    python3 tests/gpu/attn_mma_emulate.py          # every shape, a few minutes on 1 core
    python3 tests/gpu/attn_mma_emulate.py --quick  # the small shapes only
"""
import sys

import numpy as np

BK = 64  # ATTN_MMA_BK
LOG2E = 1.4426950408889634


def bf16(x):
    """Round float32 values to bf16 (nearest even), returned as float32."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


# ---- PTX semantics -----------------------------------------------------------------------
def ldmatrix_x4(smem, addr, trans=False):
    """addr[lane]: bf16 element index of the row that lane gives (lanes 8i..8i+7: rows 0..7
    of matrix i). Returns regs[4][32][2]: register i of each lane as (low, high) halves."""
    regs = np.empty((4, 32, 2), np.float32)
    lane = np.arange(32)
    for i in range(4):
        rows = addr[8 * i: 8 * i + 8]
        assert all(r % 8 == 0 for r in rows), "ldmatrix rows must be 16-byte aligned"
        mat = np.stack([smem[r: r + 8] for r in rows])  # (8 rows, 8 cols)
        if not trans:  # lane: row lane/4, cols 2(lane%4), +1
            regs[i, :, 0] = mat[lane // 4, 2 * (lane % 4)]
            regs[i, :, 1] = mat[lane // 4, 2 * (lane % 4) + 1]
        else:  # lane: rows 2(lane%4), +1 at col lane/4
            regs[i, :, 0] = mat[2 * (lane % 4), lane // 4]
            regs[i, :, 1] = mat[2 * (lane % 4) + 1, lane // 4]
    return regs


def mma_16816(d, a, b0, b1):
    """d[4][32] f32 accumulators, a[4][32][2], b0/b1[32][2] per lane (m16n8k16, row.col)."""
    lane = np.arange(32)
    g, q = lane // 4, lane % 4
    A = np.zeros((16, 16))
    A[g, 2 * q], A[g, 2 * q + 1] = a[0, :, 0], a[0, :, 1]
    A[g + 8, 2 * q], A[g + 8, 2 * q + 1] = a[1, :, 0], a[1, :, 1]
    A[g, 2 * q + 8], A[g, 2 * q + 9] = a[2, :, 0], a[2, :, 1]
    A[g + 8, 2 * q + 8], A[g + 8, 2 * q + 9] = a[3, :, 0], a[3, :, 1]
    B = np.zeros((16, 8))
    B[2 * q, g], B[2 * q + 1, g] = b0[:, 0], b0[:, 1]
    B[2 * q + 8, g], B[2 * q + 9, g] = b1[:, 0], b1[:, 1]
    C = np.zeros((16, 8))
    C[g, 2 * q], C[g, 2 * q + 1] = d[0], d[1]
    C[g + 8, 2 * q], C[g + 8, 2 * q + 1] = d[2], d[3]
    D = (A @ B + C).astype(np.float32)
    d[0], d[1] = D[g, 2 * q], D[g, 2 * q + 1]
    d[2], d[3] = D[g + 8, 2 * q], D[g + 8, 2 * q + 1]


# ---- the kernel, replayed ----------------------------------------------------------------
def rows_per_tile(max_q, group, hd):  # cuda_attn_rows_per_tile, tensor-core part
    rows = max_q * group
    assert hd in (32, 64, 80, 128)
    if rows >= 128 and hd >= 80:
        return 128
    assert rows >= 64
    return 64


def make_tiles(q_start, group, rpt):  # cuda_attn_tiles
    tiles = []
    for s in range(len(q_start) - 1):
        rows = (q_start[s + 1] - q_start[s]) * group
        tiles += [(s, r0) for r0 in range(0, rows, rpt)]
    return tiles


def run_block(A, tile, kh, NW, out, stats):
    HD = A["hd"]
    KC, NT, ROWS, NS, RS, CH = HD // 16, HD // 8, NW * 16, BK // 8, HD + 8, HD // 8
    TILE = BK * RS
    paged = A["paged"]
    seq, row0 = tile
    q_start, group = A["q_start"], A["group"]
    q0 = q_start[seq]
    n_s = q_start[seq + 1] - q0
    n_rows = min(ROWS, n_s * group - row0)
    ctx = A["ctx"][seq] if paged else 0
    kbeg = 0 if paged else q0
    kend = ctx - n_s + (row0 + n_rows - 1) // group + 1 if paged else q0 + n_s
    kv_heads = A["n_kv_heads"] if paged else A["n_heads"]
    scale = np.float32(A["scale"] * LOG2E)
    smem = np.full(2 * 2 * TILE, np.nan, np.float32)  # padding stays NaN

    def kv_row(j):
        if not paged:
            return j
        bs = A["block_size"]
        blk = A["block_tables"][seq][j // bs]
        assert blk * bs < A["n_slots"], "read an unused block-table entry"
        return blk * bs + j % bs

    def load_tile(t, st):
        j0 = kbeg + t * BK
        base = st * 2 * TILE
        nthreads = NW * 32
        written = np.zeros(2 * TILE, bool)
        for tid in range(nthreads):
            for u in range(tid, BK * CH, nthreads):
                jj, c = u // CH, u % CH
                j = j0 + jj
                ok = j < kend
                row = kv_row(j) if ok else 0
                off = (row * kv_heads + kh) * HD + 8 * c
                for which, src in ((0, A["k"]), (TILE, A["v"])):
                    dst = base + which + jj * RS + 8 * c
                    assert not written[which + jj * RS + 8 * c], "two copies to one chunk"
                    written[which + jj * RS + 8 * c: which + jj * RS + 8 * c + 8] = True
                    smem[dst: dst + 8] = src[off: off + 8] if ok else 0.0
        # every key row of both tiles written, padding untouched
        w = written.reshape(2, BK, RS)
        assert w[:, :, :HD].all() and not w[:, :, HD:].any()

    lane = np.arange(32)
    g, qd = lane // 4, lane % 4
    mi, mr = lane >> 3, lane & 7
    n_kt = (kend - kbeg + BK - 1) // BK
    warps = []
    for warp in range(NW):
        lim = np.empty((2, 32), np.int64)
        th = np.empty((2, 32), np.int64)
        for i in range(2):
            lr = warp * 16 + g + 8 * i
            sr = row0 + lr
            tok, head = q0 + sr // group, kh * group + sr % group
            th[i] = tok * A["n_heads"] + head
            lim[i] = np.where(lr >= n_rows, -1, ctx - n_s + sr // group if paged else kend - 1)
        wmax = int(lim.max())
        wmin = int(np.where(lim < 0, 2**31 - 1, lim).min())
        qf = np.zeros((KC, 4, 32, 2), np.float32)
        for i in range(2):
            for kc in range(KC):
                for ln in range(32):
                    if lim[i, ln] >= 0:
                        c = th[i, ln] * HD + 16 * kc + 2 * qd[ln]
                        qf[kc, i, ln] = A["q"][c: c + 2]
                        qf[kc, 2 + i, ln] = A["q"][c + 8: c + 10]
        warps.append(dict(lim=lim, th=th, wmax=wmax, wmin=wmin, qf=qf,
                          o=np.zeros((NT, 4, 32), np.float32),
                          m=np.full((2, 32), -np.inf, np.float32), l=np.zeros((2, 32), np.float32)))

    if n_kt > 0:
        load_tile(0, 0)
    for t in range(n_kt):
        # in the kernel tile t + 1 is copied (other stage) while t is computed; the
        # emulation copies it after t, which is what the barriers guarantee it sees
        j0 = kbeg + t * BK
        sk = (t & 1) * 2 * TILE
        sv = sk + TILE
        for w in warps:
            if not j0 <= w["wmax"]:
                stats["skipped"] += 1
                continue
            stats["computed"] += 1
            sc = np.zeros((NS, 4, 32), np.float32)
            for p in range(NS // 2):
                ka = sk + (16 * p + 8 * (mi >> 1) + mr) * RS + 8 * (mi & 1)
                for kc in range(KC):
                    b = ldmatrix_x4(smem, ka + 16 * kc)
                    mma_16816(sc[2 * p], w["qf"][kc], b[0], b[1])
                    mma_16816(sc[2 * p + 1], w["qf"][kc], b[2], b[3])
            mask = j0 + BK - 1 > w["wmin"]
            stats["masked" if mask else "unmasked"] += 1
            lim = w["lim"]
            for i in range(2):
                mx = np.full(32, -np.inf, np.float32)
                for n in range(NS):
                    for e in range(2):
                        v = sc[n, 2 * i + e] * scale
                        if mask:
                            j = j0 + n * 8 + qd * 2 + e
                            v = np.where(j > lim[i], -np.inf, v).astype(np.float32)
                        sc[n, 2 * i + e] = v
                        mx = np.maximum(mx, v)
                mx = np.maximum(mx, mx[lane ^ 1])  # __shfl_xor 1, 2
                mx = np.maximum(mx, mx[lane ^ 2])
                mn = np.maximum(w["m"][i], mx)
                with np.errstate(invalid="ignore"):
                    corr = np.where(mn == -np.inf, 1.0, np.exp2(w["m"][i] - mn)).astype(np.float32)
                ls = np.zeros(32, np.float32)
                for n in range(NS):
                    for e in range(2):
                        v = sc[n, 2 * i + e]
                        with np.errstate(invalid="ignore"):
                            pv = np.where(v == -np.inf, 0.0, np.exp2(v - mn)).astype(np.float32)
                        sc[n, 2 * i + e] = pv
                        ls += pv
                w["l"][i] = w["l"][i] * corr + ls
                w["m"][i] = mn
                w["o"][:, 2 * i] *= corr
                w["o"][:, 2 * i + 1] *= corr
            for kc2 in range(BK // 16):
                pf = np.empty((4, 32, 2), np.float32)
                pf[0] = bf16(np.stack([sc[2 * kc2, 0], sc[2 * kc2, 1]], 1))
                pf[1] = bf16(np.stack([sc[2 * kc2, 2], sc[2 * kc2, 3]], 1))
                pf[2] = bf16(np.stack([sc[2 * kc2 + 1, 0], sc[2 * kc2 + 1, 1]], 1))
                pf[3] = bf16(np.stack([sc[2 * kc2 + 1, 2], sc[2 * kc2 + 1, 3]], 1))
                va = sv + (16 * kc2 + 8 * (mi & 1) + mr) * RS + 8 * (mi >> 1)
                for p in range(NT // 2):
                    b = ldmatrix_x4(smem, va + 16 * p, trans=True)
                    mma_16816(w["o"][2 * p], pf, b[0], b[1])
                    mma_16816(w["o"][2 * p + 1], pf, b[2], b[3])
        if t + 1 < n_kt:
            load_tile(t + 1, (t + 1) & 1)

    for w in warps:
        l = w["l"].copy()
        l = l + l[:, lane ^ 1]
        l = l + l[:, lane ^ 2]
        for i in range(2):
            for ln in range(32):
                if w["lim"][i, ln] < 0:
                    continue
                inv = np.float32(1.0) / l[i, ln] if l[i, ln] > 0 else np.float32(0.0)
                base = w["th"][i, ln] * HD
                for n in range(NT):
                    c = base + 2 * (n * 4 + qd[ln])
                    assert np.isnan(out[c]) and np.isnan(out[c + 1]), "output written twice"
                    out[c] = bf16(w["o"][n, 2 * i, ln] * inv)
                    out[c + 1] = bf16(w["o"][n, 2 * i + 1, ln] * inv)


# ---- cases -------------------------------------------------------------------------------
def reference_rows(A, tok_heads):
    """float64 softmax for the (token, head) pairs given, from the same bf16 inputs."""
    HD, ref = A["hd"], {}
    for tok, h in tok_heads:
        s = int(np.searchsorted(A["q_start"], tok, side="right") - 1)
        q = A["q"][(tok * A["n_heads"] + h) * HD:][:HD].astype(np.float64)
        if A["paged"]:
            kvh, kvn = h // A["group"], A["n_kv_heads"]
            last = A["ctx"][s] - (A["q_start"][s + 1] - A["q_start"][s]) + (tok - A["q_start"][s])
            bs = A["block_size"]
            rows = [A["block_tables"][s][j // bs] * bs + j % bs for j in range(last + 1)]
        else:
            kvh, kvn = h, A["n_heads"]
            rows = list(range(A["q_start"][s], A["q_start"][s + 1]))
        idx = (np.array(rows)[:, None] * kvn + kvh) * HD + np.arange(HD)[None, :]
        K, V = A["k"][idx].astype(np.float64), A["v"][idx].astype(np.float64)
        sc = K @ q * A["scale"]
        p = np.exp(sc - sc.max())
        ref[(tok, h)] = p @ V / p.sum()
    return ref


def make_paged(rng, heads, kv_heads, hd, bs, q_len, ctx):
    n = len(q_len)
    q_start = np.concatenate([[0], np.cumsum(q_len)]).astype(np.int64)
    nb = [(c + bs - 1) // bs for c in ctx]
    used = sum(nb)
    n_blocks = used + 3
    perm = rng.permutation(n_blocks - 1)
    max_blocks = max(nb) + 1
    bt, u = [], 0
    for s in range(n):
        row = []
        for b in range(max_blocks):
            if b < nb[s]:
                row.append(1 + int(perm[u]))
                u += 1
            else:
                row.append(1 << 28)
        bt.append(row)
    n_slots = n_blocks * bs
    A = dict(paged=True, hd=hd, n_heads=heads, n_kv_heads=kv_heads, group=heads // kv_heads,
             q_start=q_start, ctx=list(ctx), block_size=bs, block_tables=bt, n_slots=n_slots,
             scale=1.0 / np.sqrt(hd))
    A["q"] = bf16(4 * rng.uniform(-1, 1, q_start[-1] * heads * hd))
    A["k"] = bf16(rng.uniform(-1, 1, n_slots * kv_heads * hd))
    A["v"] = bf16(rng.uniform(-1, 1, n_slots * kv_heads * hd))
    return A


def make_varlen(rng, heads, hd, q_len):
    cu = np.concatenate([[0], np.cumsum(q_len)]).astype(np.int64)
    N = cu[-1] * heads * hd
    A = dict(paged=False, hd=hd, n_heads=heads, n_kv_heads=heads, group=1, q_start=cu,
             scale=1.0 / np.sqrt(hd))
    A["q"] = bf16(4 * rng.uniform(-1, 1, N))
    A["k"] = bf16(rng.uniform(-1, 1, N))
    A["v"] = bf16(rng.uniform(-1, 1, N))
    return A


def check(name, A, pick=None, kv_pick=None):
    """Runs the tiles (all, or the indices in pick) for the KV heads (all, or kv_pick) and
    compares every row they own with the reference."""
    q_start, group, hd = A["q_start"], A["group"], A["hd"]
    max_q = int(np.max(np.diff(q_start)))
    rpt = rows_per_tile(max_q, group, hd)
    NW = rpt // 16
    tiles = make_tiles(q_start, group, rpt)
    n_kvh = A["n_kv_heads"] if A["paged"] else A["n_heads"]
    out = np.full(q_start[-1] * A["n_heads"] * hd, np.nan, np.float32)
    stats = dict(skipped=0, computed=0, masked=0, unmasked=0)
    owned = []
    for ti in (range(len(tiles)) if pick is None else pick):
        ti = ti % len(tiles)
        for kh in (range(n_kvh) if kv_pick is None else kv_pick):
            run_block(A, tiles[ti], kh, NW, out, stats)
            seq, r0 = tiles[ti]
            n_rows = min(rpt, (q_start[seq + 1] - q_start[seq]) * group - r0)
            for r in range(r0, r0 + n_rows):
                owned.append((int(q_start[seq] + r // group), kh * group + r % group))
    ref = reference_rows(A, owned)
    num = den = 0.0
    worst = 0.0
    for (tok, h), r in ref.items():
        got = out[(tok * A["n_heads"] + h) * hd:][:hd].astype(np.float64)
        assert np.isfinite(got).all(), f"{name}: row ({tok}, {h}) not written or NaN"
        num += ((got - r) ** 2).sum()
        den += (r ** 2).sum()
        worst = max(worst, np.abs(got - r).max())
    # rows no block owns stay unwritten
    mask = np.ones(out.size, bool)
    for tok, h in owned:
        mask[(tok * A["n_heads"] + h) * hd:][:hd] = False
    assert np.isnan(out[mask]).all(), f"{name}: a row outside the emulated tiles was written"
    rel = np.sqrt(num / den)
    print(f"{name:52s} rows/tile {rpt:3d} tiles {len(tiles):4d} rows checked {len(owned):6d} "
          f"rel {rel:.2e} max {worst:.2e}  warp-tiles {stats['computed']} computed "
          f"({stats['masked']} masked) {stats['skipped']} skipped", flush=True)
    assert rel < 1e-2, f"{name}: relative error {rel}"
    return rel


def main():
    quick = "--quick" in sys.argv
    rng = np.random.default_rng(int.from_bytes(np.random.bytes(4), "little"))
    # test_ops' tensor-core cases (paged, then varlen)
    check("paged 8/2 hd128 q{40,1,24} ctx{40,77,90}",
          make_paged(rng, 8, 2, 128, 16, [40, 1, 24], [40, 77, 90]))
    check("paged 4/4 hd64 bs8 q{70} ctx{100}", make_paged(rng, 4, 4, 64, 8, [70], [100]))
    check("paged 32/8 hd128 q{17,3} ctx{300,3}",
          make_paged(rng, 32, 8, 128, 16, [17, 3], [300, 3]))
    check("paged 4/1 hd32 q{20,1} ctx{40,9}", make_paged(rng, 4, 1, 32, 16, [20, 1], [40, 9]))
    check("varlen 2 heads hd32 {100}", make_varlen(rng, 2, 32, [100]))
    check("varlen 16 heads hd80 {70,5,130}", make_varlen(rng, 16, 80, [70, 5, 130]),
          kv_pick=[0, 7, 15])
    # ragged and short segments, partial key and row tiles, hd 64 and 80 at 64 and 128 rows
    check("varlen 3 heads hd64 {1,64,65,129,2}", make_varlen(rng, 3, 64, [1, 64, 65, 129, 2]))
    check("varlen 2 heads hd80 {64,63,1}", make_varlen(rng, 2, 80, [64, 63, 1]))
    check("paged 16/2 hd80 bs4 q{9,33} ctx{200,33}",
          make_paged(rng, 16, 2, 80, 4, [9, 33], [200, 33]))
    if quick:
        return
    # test_ops' longer cases: a 300-token chunk after 397 cached tokens, ragged ViT segments
    check("paged 32/8 hd128 q{300,45} ctx{697,45} (tiles 0,9,10,11; kv 5)",
          make_paged(rng, 32, 8, 128, 16, [300, 45], [697, 45]), pick=[0, 9, 10, 11],
          kv_pick=[5])
    check("varlen 4 heads hd80 {129,1,64,500,63} (head 2)",
          make_varlen(rng, 4, 80, [129, 1, 64, 500, 63]), kv_pick=[2])
    # prefill 2k causal, GQA 32/8, hd 128: first, second, a middle and the last tiles
    check("prefill 2k 32/8 hd128 (tiles 0,1,33,63; kv 0,7)",
          make_paged(rng, 32, 8, 128, 16, [2048], [2048]), pick=[0, 1, 33, 63], kv_pick=[0, 7])
    # a chunk after earlier chunks: keys before the chunk, block size 16
    check("prefill chunk 512 after 1500, 32/8 hd128 (tiles 0,31)",
          make_paged(rng, 32, 8, 128, 16, [512], [2012]), pick=[0, 31], kv_pick=[3])
    # ViT, one 1024x1024 image: 5 329 rows, 16 heads of 80; first, a middle, the last tile
    check("vit 5329 rows 16 heads hd80 (tiles 0,20,41; heads 0,15)",
          make_varlen(rng, 16, 80, [5329]), pick=[0, 20, 41], kv_pick=[0, 15])


if __name__ == "__main__":
    main()
