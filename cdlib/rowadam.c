/* Deferred Adam's row kernels (`sparse.RowAdam`; built and loaded by `rowkernel.py`): the catch-up
 * of rows whose steps were deferred and Adam's step of the rows with a gradient, in place on the
 * tables, one pass over each row. Each computes what RowAdam's Python path computes with torch's
 * CPU kernels, operation for operation in the same order (built with -ffp-contract=off: a fused
 * multiply-add only where torch's build has one), so the numbers are the same to the bit; where
 * torch's results depend on an element's place in a tensor (its vector loops against their scalar
 * rest), the place the element would have in the Python path's tensor is passed in. `rowkernel`
 * checks all of it against the Python path when it loads the kernels, and uses them only if every
 * bit agrees. */
#include <math.h>
#include <stdint.h>

typedef struct {
    double lr, beta1, beta2, eps;
    /* [6 x ntab]: F, E (`tail_sums`), then r^k, (r/sqrt(beta2))^k, beta1^k, beta2^k as torch's
     * vector loop computes them (r = beta1 / sqrt(beta2)) */
    const double *tab;
    int64_t ntab;
    int64_t pow_vector; /* doubles per step of torch.pow's vector loop (its rest: libm's pow) */
    void (*sqrt)(int, const float *, float *); /* torch.sqrt's (MKL's vsSqrt), or NULL: sqrtf */
} hyper_t;

#define BLOCK 256

static double power(const hyper_t *h, int which, double base, int64_t k, int vector) {
    return vector ? h->tab[(2 + which) * h->ntab + k] : pow(base, (double)k);
}

/* Adam's steps a+1..now without gradient of one row (`RowAdam._catch_up`): p -= m moved /
 * (sqrt(v) + eps'), m *= beta1^k, v *= beta2^k, k = now - a, sqrt as torch.sqrt computes it.
 * `vector`: the row's place in the Python path's [rows] tensors falls in torch.pow's vector loop
 * (its powers from the table, libm's pow otherwise). */
static void catch_up_row(const hyper_t *h, float *p, float *m, float *v, int64_t width, int64_t a,
                         int64_t now, int vector) {
    const double *F = h->tab, *E = h->tab + h->ntab;
    double r = h->beta1 / sqrt(h->beta2), r2 = r / sqrt(h->beta2);
    int64_t k = now - a;
    double steps = F[a] - power(h, 0, r, k, vector) * F[now];
    double e = h->eps * (E[a] - power(h, 1, r2, k, vector) * E[now]);
    float eps = steps > 0 ? (float)(e / steps) : (float)h->eps;
    float moved = (float)(steps * h->lr);
    float d1 = (float)power(h, 2, h->beta1, k, vector);
    float d2 = (float)power(h, 3, h->beta2, k, vector);
    float root[BLOCK];
    for (int64_t at = 0; at < width; at += BLOCK) {
        int64_t n = width - at < BLOCK ? width - at : BLOCK;
        if (h->sqrt)
            h->sqrt((int)n, v + at, root);
        else
            for (int64_t j = 0; j < n; j++)
                root[j] = sqrtf(v[at + j]);
        for (int64_t j = 0; j < n; j++) {
            float t1 = m[at + j] * moved;
            p[at + j] = p[at + j] + (-1.0f * t1) / (root[j] + eps);
            m[at + j] = m[at + j] * d1;
            v[at + j] = v[at + j] * d2;
        }
    }
}

static int in_vector(const hyper_t *h, int64_t i, int64_t n) {
    return i < n - n % h->pow_vector;
}

/* The stale rows among `rows` (n distinct; last[row] < now) brought up to step `now`. */
void catch_up(const hyper_t *h, float *p, float *m, float *v, int64_t *last, const int64_t *rows,
              int64_t n, int64_t width, int64_t now) {
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        if (last[r] < now) {
            catch_up_row(h, p + r * width, m + r * width, v + r * width, width, last[r], now,
                         in_vector(h, i, n));
            last[r] = now;
        }
    }
}

/* Adam's step `step` (bias corrections 1 - beta^step) of the rows `rows` (n distinct) whose summed
 * gradient is g [n x width], stale rows caught up to `now` first; every row's last step is then
 * now + 1. As torch's fused CPU kernel (FusedAdamKernel.cpp) steps the [n x width] copy the Python
 * path gathers: m <- lerp(m, g, 1 - beta1), one fused multiply-add; v <- beta2 v + (1 - beta2) g g,
 * contracted as fma(t, g, beta2 v) (t = (1 - beta2) g) by its vector loops, as fma(v, beta2, t g)
 * by its scalar rest (the copy's elements from `scalar` on); p <- p - step_size m / (sqrt(v) /
 * sqrt(1 - beta2^step) + eps). */
void adam_rows(const hyper_t *h, float *p, float *m, float *v, int64_t *last, const int64_t *rows,
               int64_t n, int64_t width, const float *g, int64_t now, double step, int64_t scalar) {
    double step_size = h->lr / (1 - pow(h->beta1, step));
    float c1 = (float)(1 - h->beta1), c2 = (float)(1 - h->beta2), b2 = (float)h->beta2;
    float bc2 = (float)sqrt(1 - pow(h->beta2, step)), eps = (float)h->eps;
    float neg = (float)(-step_size);
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        float *pr = p + r * width, *mr = m + r * width, *vr = v + r * width;
        const float *gr = g + i * width;
        if (last[r] < now)
            catch_up_row(h, pr, mr, vr, width, last[r], now, in_vector(h, i, n));
        int64_t split = scalar - i * width;
        split = split < 0 ? 0 : split > width ? width : split;
        for (int64_t j = 0; j < split; j++) {
            float gv = gr[j], t = c2 * gv;
            mr[j] = fmaf(c1, gv - mr[j], mr[j]);
            vr[j] = fmaf(t, gv, vr[j] * b2);
            pr[j] = pr[j] + (neg * mr[j]) / (sqrtf(vr[j]) / bc2 + eps);
        }
        for (int64_t j = split; j < width; j++) {
            float gv = gr[j], t = c2 * gv;
            mr[j] = fmaf(c1, gv - mr[j], mr[j]);
            vr[j] = fmaf(vr[j], b2, t * gv);
            pr[j] = pr[j] + (neg * mr[j]) / (sqrtf(vr[j]) / bc2 + eps);
        }
        last[r] = now + 1;
    }
}
