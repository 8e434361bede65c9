// The kernels' bodies, included twice by kernels.c: K(name) names a function for one instruction
// set (name_base, name_avx2) and TARGET is its target attribute. Plain loops over restrict pointers
// with selects instead of branches, which the loop vectoriser turns into SIMD at each width.
// No include guard: that is the point.

// e^x: Cody–Waite range reduction x = n·ln2 + r and cephes' degree-6 polynomial for e^r, x clamped
// to [−87.3, 88.3] (no denormal results). The same operations, in the same order, as the engine's
// Swift version before it moved here (relative error ~1e-7).
static inline TARGET float K(fexp)(float v) {
    float x = v < -87.3f ? -87.3f : v;
    x = x > 88.3f ? 88.3f : x;
    float shifted = x * 1.44269504f + 12582912.0f;
    float n = shifted - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.1219444e-4f;
    float p = 1.98756915e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits;
    memcpy(&bits, &shifted, 4);
    int32_t e = (int32_t)((uint32_t)(bits - 0x4B400000 + 127) << 23);
    float scale;
    memcpy(&scale, &e, 4);
    return y * scale;
}

// erfc(z) = t·exp(−z² + P(t)), z = |x|/√2, t = 1/(1 + z/2): Numerical Recipes' Chebyshev fit
// (relative error < 1.2e-7). Returns t and P(t).
static inline TARGET float K(erfc_poly)(float x, float *t_out) {
    float z = (x < 0 ? -x : x) * 0.70710678118654752f;
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    *t_out = t;
    return p;
}

static TARGET void K(relu)(const float *restrict x, float *restrict y, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] = 0.0f >= x[i] ? 0.0f : x[i];   // max(x, 0) as Swift writes it: NaN stays NaN
}

static TARGET void K(relu_backward)(const float *restrict x, const float *restrict dy, float *restrict g, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) g[i] = x[i] > 0 ? dy[i] : 0.0f;
}

// y = x·Φ(x), Φ(x) = ½ erfc(−x/√2).
static TARGET void K(gelu)(const float *restrict x, float *restrict y, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float v = x[i], t;
        float p = K(erfc_poly)(v, &t);
        float half = 0.5f * t * K(fexp)(p - 0.5f * v * v);
        float cdf = v >= 0 ? 1 - half : half;
        y[i] = v * cdf;
    }
}

// g = dy·(Φ(x) + x·φ(x)), φ(x) = e^(−x²/2)/√(2π).
static TARGET void K(gelu_backward)(const float *restrict x, const float *restrict dy, float *restrict g, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float v = x[i], t;
        float p = K(erfc_poly)(v, &t);
        float e = K(fexp)(-0.5f * v * v);
        float half = 0.5f * t * e * K(fexp)(p);
        float cdf = v >= 0 ? 1 - half : half;
        g[i] = dy[i] * (cdf + v * e * 0.39894228040143268f);
    }
}

static inline TARGET float K(quick_gate)(float v) { return 1.0f / (1.0f + K(fexp)(-1.702f * v)); }

static TARGET void K(quick_gelu)(const float *restrict x, float *restrict y, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) { float v = x[i]; y[i] = v * K(quick_gate)(v); }
}

static TARGET void K(quick_gelu_backward)(const float *restrict x, const float *restrict dy, float *restrict g, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float v = x[i], s = K(quick_gate)(v);
        g[i] = dy[i] * (s + 1.702f * v * s * (1 - s));
    }
}

static TARGET void K(add)(float *restrict a, const float *restrict b, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) a[i] += b[i];
}

// Eight partial sums, lane l holding x[j] for j ≡ l (mod 8) from the start of x, then
// ((s0+s1)+(s2+s3))+((s4+s5)+(s6+s7)) — the same bits at every vector width.
static inline TARGET float K(sum8)(const float *restrict x, size_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) s[l] += x[j + l];
    for (int l = 0; j < n; j++, l++) s[l] += x[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline TARGET float K(dot8)(const float *restrict x, const float *restrict y, size_t n) {
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) s[l] += x[j + l] * y[j + l];
    for (int l = 0; j < n; j++, l++) s[l] += x[j] * y[j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

static inline TARGET float K(max8)(const float *restrict x, size_t n) {
    float m[8];
    for (int l = 0; l < 8; l++) m[l] = -INFINITY;
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) m[l] = x[j + l] > m[l] ? x[j + l] : m[l];
    for (int l = 0; j < n; j++, l++) m[l] = x[j] > m[l] ? x[j] : m[l];
    float r = m[0];
    for (int l = 1; l < 8; l++) r = m[l] > r ? m[l] : r;
    return r;
}

static TARGET void K(softmax_rows)(float *restrict x, size_t n, size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        float *row = x + r * n;
        float m = K(max8)(row, n);
        for (size_t j = 0; j < n; j++) row[j] = K(fexp)(row[j] - m);
        float inv = 1.0f / K(sum8)(row, n);
        for (size_t j = 0; j < n; j++) row[j] *= inv;
    }
}

static TARGET void K(softmax_backward_rows)(const float *restrict p, float *restrict ds, size_t n, size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        const float *pr = p + r * n;
        float *sr = ds + r * n;
        float dot = K(dot8)(pr, sr, n);
        for (size_t j = 0; j < n; j++) sr[j] = pr[j] * (sr[j] - dot);
    }
}

static TARGET void K(layer_norm)(const float *restrict x, const float *restrict gamma, const float *restrict beta, float eps,
                                 float *restrict xhat, float *restrict inv_std, float *restrict y, size_t d, size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        const float *row = x + r * d;
        float *h = xhat + r * d, *out = y + r * d;
        float mean = K(sum8)(row, d) / (float)d;
        for (size_t j = 0; j < d; j++) h[j] = row[j] - mean;     // centred, squared next
        float var = K(dot8)(h, h, d) / (float)d;
        float s = 1.0f / sqrtf(var + eps);
        inv_std[r] = s;
        for (size_t j = 0; j < d; j++) { float v = h[j] * s; h[j] = v; out[j] = v * gamma[j] + beta[j]; }
    }
}

// dx = (1/σ)(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂)), ĝ = dy ⊙ γ; acc[0..d) += dy ⊙ x̂, acc[d..2d) += dy.
static TARGET void K(layer_norm_backward)(const float *restrict dy, const float *restrict xhat, const float *restrict inv_std,
                                          const float *restrict gamma, float *restrict dx, float *restrict acc, float *restrict scratch,
                                          size_t d, size_t lo, size_t hi) {
    for (size_t r = lo; r < hi; r++) {
        const float *dr = dy + r * d, *hr = xhat + r * d;
        float *o = dx + r * d;
        for (size_t j = 0; j < d; j++) scratch[j] = dr[j] * gamma[j];
        float m1 = K(sum8)(scratch, d) / (float)d;
        float m2 = K(dot8)(scratch, hr, d) / (float)d;
        float s = inv_std[r];
        for (size_t j = 0; j < d; j++) o[j] = s * (scratch[j] - m1 - hr[j] * m2);
        for (size_t j = 0; j < d; j++) { acc[j] += dr[j] * hr[j]; acc[d + j] += dr[j]; }
    }
}

// torch.optim.SGD with momentum: d = g + λw; buf = d (first) or μ·buf + (1−δ)·d; w −= lr·(d + μ·buf or buf).
static TARGET void K(sgd_momentum)(float *restrict w, const float *restrict g, float *restrict b, float lr, float mu, float damp,
                                   float wd, int nesterov, int first, size_t lo, size_t hi) {
    if (first) { for (size_t i = lo; i < hi; i++) b[i] = g[i] + wd * w[i]; }
    else { for (size_t i = lo; i < hi; i++) b[i] = mu * b[i] + damp * (g[i] + wd * w[i]); }
    if (nesterov) { for (size_t i = lo; i < hi; i++) w[i] -= lr * ((g[i] + wd * w[i]) + mu * b[i]); }
    else { for (size_t i = lo; i < hi; i++) w[i] -= lr * b[i]; }
}

static TARGET void K(adamw)(float *restrict w, const float *restrict g, float *restrict m, float *restrict v, float step_size,
                            float irb, float b1, float b2, float eps, float decay, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) {
        float wi = w[i] * decay;
        float mi = b1 * m[i] + (1 - b1) * g[i];
        float vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
        m[i] = mi; v[i] = vi;
        w[i] = wi - step_size * mi / (sqrtf(vi) * irb + eps);
    }
}

// SparseSGDM with a multiplier (NULL: all ones). A zero leaves w as it is (bit for bit, even −0.0 or
// with a non-finite gradient) and zeroes its buffer slot: a select of the old value, not a product.
// The loop-invariant choices (mask or none, first step or not) are separate loops: inside one loop
// the vectoriser turns `mask == NULL || mask[i]` and `first ? … : b[i]` into masked loads, and on
// AMD Zen a masked load whose lanes are all off still takes a microcode assist when the address is
// not mapped (mask == NULL), which made the step 4–9× slower than the same arithmetic unmasked.
static TARGET void K(sparse_sgdm)(float *restrict w, const float *restrict g, float *restrict b, const float *restrict mask,
                                  float lr, float mu, float damp, float wd, int nesterov, int first, size_t lo, size_t hi) {
    if (mu == 0) {
        if (mask == NULL) {
            for (size_t i = lo; i < hi; i++) w[i] = w[i] - lr * (g[i] + wd * w[i]);
        } else {
            for (size_t i = lo; i < hi; i++) {
                float nw = w[i] - lr * (g[i] + wd * w[i]);
                w[i] = mask[i] != 0 ? nw : w[i];
            }
        }
        return;
    }
    if (mask == NULL) {
        if (first) {
            for (size_t i = lo; i < hi; i++) {
                float d = g[i] + wd * w[i];
                b[i] = d;
                w[i] = w[i] - lr * (nesterov ? d + mu * d : d);
            }
        } else {
            for (size_t i = lo; i < hi; i++) {
                float d = g[i] + wd * w[i];
                float nb = mu * b[i] + damp * d;
                b[i] = nb;
                w[i] = w[i] - lr * (nesterov ? d + mu * nb : nb);
            }
        }
        return;
    }
    if (first) {
        for (size_t i = lo; i < hi; i++) {
            int on = mask[i] != 0;
            float d = g[i] + wd * w[i];
            float nw = w[i] - lr * (nesterov ? d + mu * d : d);
            b[i] = on ? d : 0.0f;
            w[i] = on ? nw : w[i];
        }
    } else {
        for (size_t i = lo; i < hi; i++) {
            int on = mask[i] != 0;
            float d = g[i] + wd * w[i];
            float nb = mu * b[i] + damp * d;
            float nw = w[i] - lr * (nesterov ? d + mu * nb : nb);
            b[i] = on ? nb : 0.0f;
            w[i] = on ? nw : w[i];
        }
    }
}

static TARGET void K(sparse_sgdm_entries)(float *restrict w, const float *restrict g, float *restrict b, const int32_t *restrict idx,
                                          float lr, float mu, float damp, float wd, int nesterov, int first, size_t lo, size_t hi) {
    for (size_t j = lo; j < hi; j++) {
        size_t i = (size_t)idx[j];
        float d = g[i] + wd * w[i];
        if (mu == 0) { w[i] -= lr * d; continue; }
        float nb = first ? d : mu * b[j] + damp * d;
        b[j] = nb;
        w[i] -= lr * (nesterov ? d + mu * nb : nb);
    }
}

// Masked AdamW (TaLoS's AdaptW): moments follow every gradient; w −= lr·λ·w and the Adam step only where the mask is 1.
static TARGET void K(masked_adamw)(float *restrict w, const float *restrict g, float *restrict m, float *restrict v,
                                   const float *restrict mask, float step_size, float irb, float b1, float b2, float eps,
                                   float decay, size_t lo, size_t hi) {
    // With and without a mask in separate loops, as in sparse_sgdm (no masked loads).
    if (mask == NULL) {
        for (size_t i = lo; i < hi; i++) {
            float mi = b1 * m[i] + (1 - b1) * g[i];
            float vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
            m[i] = mi; v[i] = vi;
            float wi = w[i] - decay * w[i];
            w[i] = wi - step_size * mi / (sqrtf(vi) * irb + eps);
        }
        return;
    }
    for (size_t i = lo; i < hi; i++) {
        float w0 = w[i], on = mask[i];
        float mi = b1 * m[i] + (1 - b1) * g[i];
        float vi = b2 * v[i] + (1 - b2) * g[i] * g[i];
        m[i] = mi; v[i] = vi;
        float wi = w0 - decay * w0;
        wi = wi - step_size * mi / (sqrtf(vi) * irb + eps);
        w[i] = on != 0 ? wi : w0;
    }
}

static TARGET void K(masked_adamw_entries)(float *restrict w, const float *restrict g, float *restrict m, float *restrict v,
                                           const int32_t *restrict idx, float step_size, float irb, float b1, float b2, float eps,
                                           float decay, size_t lo, size_t hi) {
    for (size_t j = lo; j < hi; j++) {
        size_t i = (size_t)idx[j];
        float mi = b1 * m[j] + (1 - b1) * g[i];
        float vi = b2 * v[j] + (1 - b2) * g[i] * g[i];
        m[j] = mi; v[j] = vi;
        float wi = w[i] - decay * w[i];
        w[i] = wi - step_size * mi / (sqrtf(vi) * irb + eps);
    }
}
