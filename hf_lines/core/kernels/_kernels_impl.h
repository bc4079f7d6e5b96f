/* Kernel bodies for one storage type; _native.c includes this file once per dtype with
 *   T      the stored element type,
 *   LOAD   T -> float (exact),
 *   STORE  float -> T (round to nearest even, as torch),
 *   NAME   a token pasted onto every function name.
 *
 * stats[0] += ||tau_MTL||^2, stats[1] += ||out - base||^2 (from the rounded output),
 * stats[2] += a probe that is NaN when any input value is NaN or infinite.
 */
#define FN2(a, b) a##_##b
#define FN1(a, b) FN2(a, b)
#define FN(a) FN1(a, NAME)

/* The edit of one model, tau = ft - base, every operation rounded in float32, then once to T:
 *   s < 0.5:   out = base + s * tau
 *   s >= 0.5:  out = ft - tau * (1 - s)     (1 - s rounded to float32 first)
 * Anchoring on the nearer end keeps the rounding error small near both ends; the branch is
 * on the signed s, so an extrapolation below 0 stays anchored on base. s = 0 and s = 1
 * copy base and ft as stored: the formula gives their values but turns -0.0 into +0.0.
 * methods.arithmetic.lines_edit does the same operations in the same order (byte-identical). */
HOT static void FN(lerp)(const T *b, const T *m, T *o, int64_t n, float s, double *stats) {
    float bb[BLK], mm[BLK], tau[BLK], d[BLK];
    double st0 = 0, st1 = 0;
    float probe = 0.0f;
    const float u = 1.0f - s;
    const int copy = s == 0.0f || s == 1.0f, near_base = s < 0.5f;
    const T *src = s == 0.0f ? b : m;
    for (int64_t start = 0; start < n; start += BLK) {
        const int64_t len = n - start < BLK ? n - start : BLK;
        const T *bp = b + start, *mp = m + start, *sp = src + start;
        T *op = o + start;
        for (int64_t j = 0; j < len; j++) {
            bb[j] = LOAD(bp[j]);
            mm[j] = LOAD(mp[j]);
        }
        /* s is the same for the whole tensor: one loop per case, each vectorizes */
        if (copy) {
            for (int64_t j = 0; j < len; j++) {
                tau[j] = mm[j] - bb[j];
                const T r = sp[j];
                op[j] = r;
                d[j] = LOAD(r) - bb[j];
            }
        } else if (near_base) {
            for (int64_t j = 0; j < len; j++) {
                tau[j] = mm[j] - bb[j];
                const T r = STORE(bb[j] + s * tau[j]);
                op[j] = r;
                d[j] = LOAD(r) - bb[j];
            }
        } else {
            for (int64_t j = 0; j < len; j++) {
                tau[j] = mm[j] - bb[j];
                const T r = STORE(mm[j] - tau[j] * u);
                op[j] = r;
                d[j] = LOAD(r) - bb[j];
            }
        }
        st0 += sumsq(tau, len);
        st1 += sumsq(d, len);
        probe += nonfinite_probe(bb, len) + nonfinite_probe(mm, len);
    }
    stats[0] += st0;
    stats[1] += st1;
    stats[2] += probe;
}

/* Several models: acc = 0; for t in task order: acc = acc + w_t * (m_t - base); out = base + s * acc,
 * every operation rounded in float32 (no fused multiply-add), then once to T.
 * methods.arithmetic.weighted_sum_edit does the same operations in the same order (byte-identical). */
HOT static void FN(wsum)(const T *b, const T *const *m, const float *w, int nt, T *o, int64_t n, float s,
                         double *stats) {
    float bb[BLK], acc[BLK], mt[BLK], d[BLK];
    double st0 = 0, st1 = 0;
    float probe = 0.0f;
    for (int64_t start = 0; start < n; start += BLK) {
        const int64_t len = n - start < BLK ? n - start : BLK;
        const T *bp = b + start;
        T *op = o + start;
        for (int64_t j = 0; j < len; j++) {
            bb[j] = LOAD(bp[j]);
            acc[j] = 0.0f;
        }
        probe += nonfinite_probe(bb, len);
        for (int t = 0; t < nt; t++) {
            const T *mp = m[t] + start;
            const float wt = w[t];
            for (int64_t j = 0; j < len; j++) mt[j] = LOAD(mp[j]);
            for (int64_t j = 0; j < len; j++) acc[j] += wt * (mt[j] - bb[j]);
            probe += nonfinite_probe(mt, len);
        }
        for (int64_t j = 0; j < len; j++) {
            const T r = STORE(bb[j] + s * acc[j]);
            op[j] = r;
            d[j] = LOAD(r) - bb[j];
        }
        st0 += sumsq(acc, len);
        st1 += sumsq(d, len);
    }
    stats[0] += st0;
    stats[1] += st1;
    stats[2] += probe;
}

/* Radix histograms of |w_t (m_t - base)| as float32 bits, added into counts[t][bits >> shift]
 * and inexact[t][...] (those with nonzero low bits), both (nt, 2^(31 - shift)) int64 row-major.
 * One increment per value: the key carries the inexact flag as its lowest bit, and four
 * interleaved sub-histograms per task keep repeated bins from serialising the increments
 * (branches on the flag cost more than the histogram itself). Block by block, all tasks at
 * once, so the base is read and converted once. sub: nt * 4 * 2^(32 - shift) uint32, zero on
 * entry and left zero: only the range of keys seen is flushed and cleared, so a call on a small
 * tensor costs as little as its values. */
HOT static void FN(ties_hist)(const T *b, const T *const *m, const float *w, int nt, int64_t n, int shift,
                              int64_t *counts, int64_t *inexact, uint32_t *sub, double *stats) {
    uint32_t keys[BLK];
    float bb[BLK], mt[BLK];
    const int64_t nbins = (int64_t)1 << (31 - shift), nkeys = 2 * nbins;
    const uint32_t low_mask = (1u << shift) - 1u;
    uint32_t kmin[MAX_TASKS], kmax[MAX_TASKS];
    float probe = 0.0f;
    for (int t = 0; t < nt; t++) {
        kmin[t] = UINT32_MAX;
        kmax[t] = 0;
    }
    int64_t since_flush = 0;
    for (int64_t start = 0; start < n; start += BLK) {
        const int64_t len = n - start < BLK ? n - start : BLK;
        const T *bp = b + start;
        for (int64_t j = 0; j < len; j++) bb[j] = LOAD(bp[j]);
        probe += nonfinite_probe(bb, len);
        for (int t = 0; t < nt; t++) {
            const T *mp = m[t] + start;
            const float wt = w[t];
            uint32_t *c0 = sub + (size_t)t * 4 * nkeys, *c1 = c0 + nkeys, *c2 = c1 + nkeys, *c3 = c2 + nkeys;
            for (int64_t j = 0; j < len; j++) mt[j] = LOAD(mp[j]);
            uint32_t lo = UINT32_MAX, hi = 0;
            for (int64_t j = 0; j < len; j++) {
                const uint32_t bits = float_bits(fabsf((mt[j] - bb[j]) * wt));
                const uint32_t key = ((bits >> shift) << 1) | ((bits & low_mask) != 0);
                keys[j] = key;
                lo = key < lo ? key : lo;
                hi = key > hi ? key : hi;
            }
            kmin[t] = lo < kmin[t] ? lo : kmin[t];
            kmax[t] = hi > kmax[t] ? hi : kmax[t];
            probe += nonfinite_probe(mt, len);
            int64_t j = 0;
            for (; j + 4 <= len; j += 4) {
                c0[keys[j]]++;
                c1[keys[j + 1]]++;
                c2[keys[j + 2]]++;
                c3[keys[j + 3]]++;
            }
            for (; j < len; j++) c0[keys[j]]++;
        }
        since_flush += len;
        if (since_flush >= ((int64_t)1 << 31) || start + len >= n) { /* before a uint32 count can wrap */
            for (int t = 0; t < nt; t++) {
                if (kmin[t] > kmax[t]) continue;
                uint32_t *c0 = sub + (size_t)t * 4 * nkeys, *c1 = c0 + nkeys, *c2 = c1 + nkeys, *c3 = c2 + nkeys;
                int64_t *ct = counts + t * nbins, *ix = inexact + t * nbins;
                for (int64_t k = kmin[t] >> 1; k <= (int64_t)(kmax[t] >> 1); k++) {
                    const int64_t exact = (int64_t)c0[2 * k] + c1[2 * k] + c2[2 * k] + c3[2 * k];
                    const int64_t above = (int64_t)c0[2 * k + 1] + c1[2 * k + 1] + c2[2 * k + 1] + c3[2 * k + 1];
                    ct[k] += exact + above;
                    ix[k] += above;
                }
                const size_t from = kmin[t] & ~1u, count = (kmax[t] | 1u) - from + 1;
                for (int q = 0; q < 4; q++) memset(c0 + q * nkeys + from, 0, sizeof(uint32_t) * count);
                kmin[t] = UINT32_MAX;
                kmax[t] = 0;
            }
            since_flush = 0;
        }
    }
    stats[2] += probe;
}

/* Second radix pass for one task: low[bits & mask] over the magnitudes whose key is `bin`. */
HOT static void FN(ties_hist_low)(const T *b, const T *m, float w, int64_t n, int shift, int64_t bin, int64_t *low) {
    const uint32_t low_mask = (1u << shift) - 1u;
    for (int64_t j = 0; j < n; j++) {
        const uint32_t bits = float_bits(fabsf((LOAD(m[j]) - LOAD(b[j])) * w));
        if ((int64_t)(bits >> shift) == bin) low[bits & low_mask]++;
    }
}

/* TIES: trim |tau_t| < thr_t, elect the sign of the sum, mean (or sum) of the agreeing values;
 * out = base + s * merged, tau_t = (m_t - base) * w_t. One sweep over the tasks keeps, per entry,
 * the sum of the kept values and the sum and count of the positive and of the negative ones,
 * each accumulated from 0 in task order; mean = sum / max(count, 1). methods.ties sums in the
 * same order (never torch.sum over the task dimension, whose order depends on N), so the
 * results are byte-identical for any number of tasks. Entries whose kept values cancel exactly
 * (sum 0, some value kept) get the positive merge here, a bit in `amb` ((n + 7) / 8 bytes, zeroed)
 * and their negative merge in negv[k] (k-th flagged entry; room for n + BLK floats, touched only
 * as used); ties_settle applies those when the tensor's sign total is not positive. Norms of the
 * flagged entries go to pos_stats (their positive merge), not to stats. Every loop is
 * branch-free, so it vectorizes. Returns how many were flagged. */
HOT static int64_t FN(ties_merge)(const T *b, const T *const *m, const float *w, int nt, const float *thr, int64_t n,
                                  float s, int mean, T *o, double *stats, int64_t *sign_total, uint8_t *amb,
                                  float *negv, double *pos_stats, float *mts) {
    float bb[BLK] VALIGN, sum[BLK] VALIGN, ps[BLK] VALIGN, pc[BLK] VALIGN, ns[BLK] VALIGN, nc[BLK] VALIGN,
        merged[BLK], d[BLK];
    uint8_t flag[BLK + 8];
    double st0 = 0, st1 = 0;
    float probe = 0.0f;
    int64_t signs = 0, namb = 0;
    for (int64_t start = 0; start < n; start += BLK) {
        const int64_t len = n - start < BLK ? n - start : BLK;
        if (start + PREFETCH_BLOCKS * BLK < n) { /* a later block's lines arrive while this one computes */
            const char *later = (const char *)(b + start + PREFETCH_BLOCKS * BLK);
            for (size_t q = 0; q < BLK * sizeof(T); q += 64) __builtin_prefetch(later + q, 0, 0);
            for (int t = 0; t < nt; t++) {
                later = (const char *)(m[t] + start + PREFETCH_BLOCKS * BLK);
                for (size_t q = 0; q < BLK * sizeof(T); q += 64) __builtin_prefetch(later + q, 0, 0);
            }
        }
        const int64_t padded = (len + VL - 1) / VL * VL; /* zero lanes past the end add nothing */
        const T *bp = b + start;
        T *op = o + start;
        for (int64_t j = 0; j < len; j++) bb[j] = LOAD(bp[j]);
        for (int64_t j = len; j < padded; j++) bb[j] = 0.0f;
        probe += nonfinite_probe(bb, len);
        for (int t = 0; t < nt; t++) {
            const T *mp = m[t] + start;
            float *mt = mts + (size_t)t * BLK;
            for (int64_t j = 0; j < len; j++) mt[j] = LOAD(mp[j]);
            for (int64_t j = len; j < padded; j++) mt[j] = 0.0f;
            probe += nonfinite_probe(mt, len);
        }
        /* the five accumulators of 16 entries stay in registers across the tasks */
        for (int64_t j = 0; j < padded; j += VL) {
            const vf base = *(const vf *)(bb + j), one = base * 0.0f + 1.0f;
            vf vsum = base * 0.0f, vps = vsum, vpc = vsum, vns = vsum, vnc = vsum;
            for (int t = 0; t < nt; t++) {
                const vf x = (*(const vf *)(mts + (size_t)t * BLK + j) - base) * w[t];
                const vf k = (vf)((vi)x & (vabs(x) >= thr[t]));
                const vi pos = k > 0.0f, neg = k < 0.0f;
                vsum += k;
                vps += (vf)((vi)k & pos);
                vpc += (vf)((vi)one & pos);
                vns += (vf)((vi)k & neg);
                vnc += (vf)((vi)one & neg);
            }
            *(vf *)(sum + j) = vsum;
            *(vf *)(ps + j) = vps;
            *(vf *)(pc + j) = vpc;
            *(vf *)(ns + j) = vns;
            *(vf *)(nc + j) = vnc;
        }
        int32_t blk_signs = 0, blk_amb = 0;
        for (int64_t j = 0; j < len; j++) {
            blk_signs += (sum[j] > 0.0f) - (sum[j] < 0.0f);
            const int neg = sum[j] < 0.0f;
            const float tot = neg ? ns[j] : ps[j], cnt = neg ? nc[j] : pc[j];
            merged[j] = mean ? tot / (cnt > 1.0f ? cnt : 1.0f) : tot;
            const T r = STORE(bb[j] + s * merged[j]);
            op[j] = r;
            d[j] = LOAD(r) - bb[j];
            const int f = (sum[j] == 0.0f) & (cnt > 0.0f);
            flag[j] = (uint8_t)f;
            blk_amb += f;
        }
        signs += blk_signs;
        if (blk_amb) { /* common in half precision, where task vectors are a few ulps */
            /* start is a multiple of BLK, so of 8: whole bytes of the mask, eight flags (0 or 1
             * bytes) packed into one by a multiplication */
            for (int64_t j = len; j < (len + 7) / 8 * 8; j++) flag[j] = 0;
            for (int64_t j = 0; j < len; j += 8) {
                uint64_t eight;
                memcpy(&eight, flag + j, 8);
                amb[(start + j) >> 3] = (uint8_t)((eight * 0x0102040810204080ull) >> 56);
            }
            /* visiting only the flagged entries, in order: their negative merge for ties_settle,
             * and their norms moved from stats to pos_stats */
            for (int64_t j = 0; j < len; j += 64) {
                uint64_t bits = 0;
                memcpy(&bits, amb + ((start + j) >> 3), (size_t)((len - j + 7) / 8 < 8 ? (len - j + 7) / 8 : 8));
                while (bits) {
                    const int64_t i = j + __builtin_ctzll(bits);
                    bits &= bits - 1;
                    negv[namb++] = mean ? ns[i] / (nc[i] > 1.0f ? nc[i] : 1.0f) : ns[i];
                    pos_stats[0] += (double)merged[i] * merged[i];
                    pos_stats[1] += (double)d[i] * d[i];
                    merged[i] = 0.0f;
                    d[i] = 0.0f;
                }
            }
        }
        st0 += sumsq(merged, len);
        st1 += sumsq(d, len);
    }
    stats[0] += st0;
    stats[1] += st1;
    stats[2] += probe;
    *sign_total += signs;
    return namb;
}

/* The flagged entries of ties_merge, in index order: out = base + s * negv[k]; adds their norms. */
static void FN(ties_settle)(const T *b, T *o, int64_t n, float s, const uint8_t *amb, const float *negv,
                            double *stats) {
    int64_t k = 0;
    for (int64_t word = 0; word < (n + 63) >> 6; word++) {
        uint64_t bits = 0;
        const int64_t first = word << 3, bytes = ((n + 7) >> 3) - first < 8 ? ((n + 7) >> 3) - first : 8;
        memcpy(&bits, amb + first, (size_t)bytes); /* little-endian: bit i of the word is entry 64 word + i */
        while (bits) {
            const int64_t i = (word << 6) + __builtin_ctzll(bits);
            bits &= bits - 1;
            const float bf = LOAD(b[i]);
            const T r = STORE(bf + s * negv[k]);
            o[i] = r;
            const float d = LOAD(r) - bf;
            stats[0] += (double)negv[k] * negv[k];
            stats[1] += (double)d * d;
            k++;
        }
    }
}

#undef FN
#undef FN1
#undef FN2
