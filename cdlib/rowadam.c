/* Deferred Adam's row kernels (`sparse.RowAdam`; built and loaded by `rowkernel.py`): the catch-up
 * of rows whose steps were deferred and Adam's step of the rows with a gradient, in place on the
 * tables, one pass over each row; and Adam's step of a whole table (`adam_whole`). Each computes
 * what RowAdam's Python path computes with torch's CPU kernels, operation for operation in the same
 * order (built with -ffp-contract=off: a fused multiply-add only where torch's build has one), or
 * what is provably the same, so the numbers are the same to the bit; where torch's results depend
 * on an element's place in a tensor (its vector loops against their scalar rest), the place the
 * element would have in the Python path's tensor is passed in. `rowkernel` checks all of it against
 * torch when it loads the kernels, and uses them only if every bit agrees. */
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

/* Adam's scalars at step `step`, as torch's fused CPU kernel computes them: c1 = 1 - beta1,
 * c2 = 1 - beta2, b2 = beta2, bc2 = sqrt(1 - beta2^step), eps, neg = -lr / (1 - beta1^step). */
typedef struct {
    float c1, c2, b2, bc2, eps, neg;
} step_t;

static step_t step_of(const hyper_t *h, double step) {
    double step_size = h->lr / (1 - pow(h->beta1, step));
    step_t s = {(float)(1 - h->beta1), (float)(1 - h->beta2), (float)h->beta2,
                (float)sqrt(1 - pow(h->beta2, step)), (float)h->eps, (float)(-step_size)};
    return s;
}

/* Adam's step of n elements with gradient g, all in torch's vector loop or all in its scalar rest
 * (`vector`), by torch's formulas (`adam_rows`). */
static inline __attribute__((always_inline)) void
adam_plain(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
           int64_t n, step_t s, int vector) {
    for (int64_t j = 0; j < n; j++) {
        float gv = g[j], t = s.c2 * gv;
        m[j] = fmaf(s.c1, gv - m[j], m[j]);
        v[j] = vector ? fmaf(t, gv, v[j] * s.b2) : fmaf(v[j], s.b2, t * gv);
        p[j] = p[j] + (s.neg * m[j]) / (sqrtf(v[j]) / s.bc2 + s.eps);
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
    step_t s = step_of(h, step);
    for (int64_t i = 0; i < n; i++) {
        int64_t r = rows[i];
        float *pr = p + r * width, *mr = m + r * width, *vr = v + r * width;
        const float *gr = g + i * width;
        if (last[r] < now)
            catch_up_row(h, pr, mr, vr, width, last[r], now, in_vector(h, i, n));
        int64_t split = scalar - i * width;
        split = split < 0 ? 0 : split > width ? width : split;
        adam_plain(pr, mr, vr, gr, split, s, 1);
        adam_plain(pr + split, mr + split, vr + split, gr + split, width - split, s, 0);
        last[r] = now + 1;
    }
}

/* Adam's step `step` of a whole tensor of n elements with gradient g, in place, as torch's fused
 * CPU kernel steps it (the formulas of `adam_rows`; its scalar rest from element `scalar` on), to
 * the bit, without the subnormal arithmetic that costs a CPU a microcode assist per vector (a
 * whole-table step of a table whose rows go unread for hundreds of steps spends most of its time
 * there: their m decays by beta1 each step through the subnormal range to 0). Two exact shortcuts:
 * - m below 2^-125 (subnormal or next to it, where floats are integer multiples of 2^-149: m =
 *   M 2^-149, the bits of |m| are M): without gradient, fma(c1, 0 - m, m) (c1 = 1 - beta1) is
 *   round-to-even(M (1 - c1)) in units of 2^-149, computed in double, exact where 1 - c1 has at
 *   most 29 significant bits (`exact_w`; else no shortcut); with a gradient 2^-100 <= |g| < 2^60,
 *   g - m rounds to g and fma(c1, g, m) is 2^-64 fma(c1, 2^64 g, 2^64 m), every operand and
 *   result normal (2^64 m = M 2^-85);
 * - |new m| < 2^-100 and |p| >= p_min: the step moves p by less than half its ulp, so p stays
 *   (p_min bounds |fl(fl(step_size m) / d)| with d >= eps, as each rounding can at most give).
 * Every other element takes torch's operations (subnormal ones included, where they occur). */
#define TINY_M 0x01000000u  /* 2^-125, as float bits */
#define SMALL_M 0x0d800000u /* 2^-100 */
#define LOW_M 0x0e000000u   /* 2^-99 */
#define G_LOW 0x0d800000u   /* 2^-100 */
#define G_HIGH 0x5d800000u  /* 2^60 */
#define FINITE 0x7f800000u  /* infinity: the finite floats' bits are below */

static inline uint32_t bits_of(float x) {
    uint32_t u;
    __builtin_memcpy(&u, &x, 4);
    return u;
}

static inline float float_of(uint32_t u) {
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t pick(uint32_t mask, uint32_t a, uint32_t b) {
    return (a & mask) | (b & ~mask);
}

/* Whether M (1 - c1) is exact in double for every M < 2^24: 1 - c1 has at most 29 bits. */
static int exact_w(double w) {
    int e;
    double s = ldexp(frexp(w, &e), 29);
    return s == floor(s);
}

/* The same with the two shortcuts, chosen by integer masks so that the loop has no branch and
 * vectorises. */
static inline __attribute__((always_inline)) void
adam_shortcut(float *restrict p, float *restrict m, float *restrict v, const float *restrict g,
              int64_t n, step_t s, double w, uint32_t shortcut_m, uint32_t p_min, int vector) {
    float c1 = s.c1, c2 = s.c2, b2 = s.b2, bc2 = s.bc2, eps = s.eps, neg = s.neg;
    for (int64_t j = 0; j < n; j++) {
        float gv = g[j], t = c2 * gv;
        uint32_t mb = bits_of(m[j]), am = mb & 0x7fffffffu, ag = bits_of(gv) & 0x7fffffffu;
        /* 0 < |m| < 2^-125, m = M 2^-149 (M = am), and no gradient: the integer shortcut; or a
         * gradient of 2^-100 <= |g| < 2^60: the scaled one; m read as 0 by torch's formula */
        uint32_t tiny = shortcut_m & -(uint32_t)(am - 1 < TINY_M - 1);
        uint32_t by_int = tiny & -(uint32_t)(ag == 0);
        uint32_t scaled = tiny & -(uint32_t)(ag - G_LOW < G_HIGH - G_LOW);
        float m_in = float_of(mb & ~(by_int | scaled));
        float m_hw = fmaf(c1, gv - m_in, m_in);
        double x = (double)am * w, even = (x + 0x1p52) - 0x1p52; /* round to even, x < 2^24 */
        /* (the scaled shortcut's operands 0 in the other lanes: no subnormal result there) */
        float m_up = float_of((bits_of((float)am * 0x1p-85f) | (mb & 0x80000000u)) & scaled);
        float m_sc = fmaf(c1, float_of(bits_of(gv) & scaled) * 0x1p64f, m_up) * 0x1p-64f;
        uint32_t mn = pick(by_int, (uint32_t)even | (mb & 0x80000000u),
                           pick(scaled, bits_of(m_sc), bits_of(m_hw)));
        float v_new = vector ? fmaf(t, gv, v[j] * b2) : fmaf(v[j], b2, t * gv);
        /* |new m| < 2^-100 and p_min <= |p| finite: p stays, m read as 0 by the step */
        uint32_t pb = bits_of(p[j]), ap = pb & 0x7fffffffu;
        uint32_t stay = -(uint32_t)(((mn & 0x7fffffffu) < SMALL_M) & (ap - p_min < FINITE - p_min));
        float m_p = float_of(mn & ~stay);
        float p_hw = p[j] + (neg * m_p) / (sqrtf(v_new) / bc2 + eps);
        m[j] = float_of(mn);
        v[j] = v_new;
        p[j] = float_of(pick(stay, pb, bits_of(p_hw)));
    }
}

/* Blocks of 64 elements: one with an m of 0 < |m| < 2^-99 takes the shortcuts, the others
 * torch's formulas alone (the same numbers either way: the choice is one of speed). */
static inline __attribute__((always_inline)) void
adam_span(float *p, float *m, float *v, const float *g, int64_t n, step_t s, double w,
          uint32_t shortcut_m, uint32_t p_min, int vector) {
    for (int64_t at = 0; at < n; at += 64) {
        int64_t k = n - at < 64 ? n - at : 64;
        uint32_t low = 0;
        for (int64_t j = 0; j < k; j++)
            low |= (bits_of(m[at + j]) & 0x7fffffffu) - 1 < LOW_M - 1;
        if (low)
            adam_shortcut(p + at, m + at, v + at, g + at, k, s, w, shortcut_m, p_min, vector);
        else
            adam_plain(p + at, m + at, v + at, g + at, k, s, vector);
    }
}

void adam_whole(const hyper_t *h, float *p, float *m, float *v, const float *g, int64_t n,
                double step, int64_t scalar) {
    step_t s = step_of(h, step);
    float c1 = s.c1, eps = s.eps, neg = s.neg;
    double w = 1.0 - (double)c1;
    /* (c1 >= 2^-20: c1 g normal where |g| >= 2^-100) */
    uint32_t shortcut_m = c1 >= 0x1p-20f && c1 < 1 && exact_w(w) ? 0xffffffffu : 0;
    /* |fl(neg m)| <= |neg| 2^-100 (1 + 2^-23) + 2^-149, over d >= eps, rounded, below |p| 2^-25 <
     * ulp(p) / 2 (p normal) */
    double bound = (fabs((double)neg) * ldexp(1.0, -100) * (1 + ldexp(1.0, -23)) + ldexp(1.0, -149))
                       / (double)eps * (1 + ldexp(1.0, -23)) + ldexp(1.0, -149);
    double pm = bound * ldexp(1.0, 26);
    uint32_t p_min = eps > 0 && pm < 0x1p100 ? bits_of((float)(pm > 0x1p-125 ? pm : 0x1p-125)) : FINITE;
    int64_t split = scalar < 0 ? 0 : scalar > n ? n : scalar;
    adam_span(p, m, v, g, split, s, w, shortcut_m, p_min, 1);
    adam_span(p + split, m + split, v + split, g + split, n - split, s, w, shortcut_m, p_min, 0);
}
