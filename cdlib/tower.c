/* NeuMF's scores of every item for a batch of users, the MLP tower fused (`towerkernel`): for user
 * b and item i,
 *
 *   out[b, i] = (sum_j w[j] relu(sum_k W2[j, k] relu(a[k, b] + c[k, i]) + b2[j]) + gmf[b, i]) + bias
 *
 * with a = W_u p'_u + b1 [e x B] and c = W_i q'_i [e x I] the first layer's user and item halves
 * (feature-major), as `models.NeuMF.score_all_feature_major` computes it with torch: the same
 * operations in the same order (each sum over k and over j a chain of fused multiply-adds from 0, as
 * this machine's BLAS runs them where `towerkernel` has checked it), each pair's tower in registers
 * instead of four passes over [e x pairs] buffers. Compiled with -ffp-contract=off: no other
 * contraction than the fmaf calls. relu(x) is x < 0 ? 0 : x, as torch's clamp_min (NaN and -0 kept). */
#include <math.h>
#include <stdint.h>

#define BLOCK 64   /* items a block: their tower's units stay in registers and L1 */
#define MAX_E 64   /* the widest first layer the kernel takes (`towerkernel.MAX_E`) */

static inline float relu(float x) { return x < 0.0f ? 0.0f : x; }

/* one block of n items (BLOCK where the block is full: the compiler then keeps the sums of `acc`
 * and `s` in vector registers) for user b */
static inline void block(const float *a, const float *ck, const float *w2, const float *b2,
                         const float *w, const float *gb, float bias, float *ob, int64_t e,
                         int64_t h, int64_t B, int64_t I, int64_t n) {
  float units[MAX_E][BLOCK], s[BLOCK], acc[BLOCK];
  for (int64_t k = 0; k < e; k++) {
    const float ak = a[k * B];
    for (int64_t t = 0; t < n; t++) units[k][t] = relu(ak + ck[k * I + t]);
  }
  for (int64_t t = 0; t < n; t++) s[t] = 0.0f;
  for (int64_t j = 0; j < h; j++) {
    for (int64_t t = 0; t < n; t++) acc[t] = 0.0f;
    for (int64_t k = 0; k < e; k++) {
      const float wk = w2[j * e + k];
      for (int64_t t = 0; t < n; t++) acc[t] = fmaf(wk, units[k][t], acc[t]);
    }
    const float bj = b2[j], wj = w[j];
    for (int64_t t = 0; t < n; t++) s[t] = fmaf(wj, relu(acc[t] + bj), s[t]);
  }
  for (int64_t t = 0; t < n; t++) ob[t] = (s[t] + gb[t]) + bias;
}

/* a full block, e and h as the caller gives them or fixed at compile time (`FIXED`): one signature,
 * so that `tower_scores` picks its function once */
typedef void (*full_block)(const float *a, const float *ck, const float *w2, const float *b2,
                           const float *w, const float *gb, float bias, float *ob, int64_t e,
                           int64_t h, int64_t B, int64_t I);

static void block_e_h(const float *a, const float *ck, const float *w2, const float *b2,
                      const float *w, const float *gb, float bias, float *ob, int64_t e, int64_t h,
                      int64_t B, int64_t I) {
  block(a, ck, w2, b2, w, gb, bias, ob, e, h, B, I, BLOCK);
}

/* `block` of a full block with e and h known to the compiler (the d = 4 and 8 students): its loops
 * unrolled and vectorised, 1.4 (e = 4) to 1.7 (e = 8) times faster than with e and h read at run
 * time (one thread, 64-100 users x 20,021-30,351 items); the same operations in the same order */
#define FIXED(E, H)                                                                              \
  static void block_##E##_##H(const float *a, const float *ck, const float *w2, const float *b2, \
                              const float *w, const float *gb, float bias, float *ob, int64_t e, \
                              int64_t h, int64_t B, int64_t I) {                                 \
    (void)e, (void)h;                                                                            \
    block(a, ck, w2, b2, w, gb, bias, ob, E, H, B, I, BLOCK);                                    \
  }
FIXED(8, 4)
FIXED(4, 2)

void tower_scores(const float *a, const float *c, const float *w2, const float *b2, const float *w,
                  const float *gmf, float bias, float *out, int64_t e, int64_t h, int64_t B,
                  int64_t I) {
  const full_block full = e == 8 && h == 4 ? block_8_4 : e == 4 && h == 2 ? block_4_2 : block_e_h;
  for (int64_t b = 0; b < B; b++) {
    const float *gb = gmf + b * I;
    float *ob = out + b * I;
    int64_t i0 = 0;
    for (; i0 + BLOCK <= I; i0 += BLOCK)
      full(a + b, c + i0, w2, b2, w, gb + i0, bias, ob + i0, e, h, B, I);
    if (i0 < I) block(a + b, c + i0, w2, b2, w, gb + i0, bias, ob + i0, e, h, B, I, I - i0);
  }
}
