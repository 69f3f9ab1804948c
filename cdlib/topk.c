/* Each row's k highest finite scores, highest first (`topkernel`): the item ids, -1 where a row has
 * fewer than k finite scores (its -inf entries, training positives masked out). The answer is
 * unique where the row's k + 1 highest finite scores are distinct, and then it is torch.topk's,
 * whatever order torch breaks ties in; a row with a tie among them, a NaN or a +inf is flagged
 * instead (ok[row] = 0) and left to torch.
 *
 * Two passes over a row. The first takes the maximum of each block of `BLOCK` scores; the (k + 1)-th
 * highest of those maxima is a bound that the k + 1 highest scores reach (k + 1 blocks hold a score
 * at least as high), so the second pass reads only the blocks whose maximum reaches it and keeps
 * their scores that reach it (a few more than k + 1), of which a selection and a sort take the
 * k + 1 highest. Both passes order the scores by their `key`s. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLOCK 32

/* a float's bits as an int32 in the floats' order (-0 just below +0; no NaN): integer maxima
 * vectorise where float ones, which must keep NaN and -0, do not */
static inline int32_t key(float x) {
  int32_t i;
  memcpy(&i, &x, 4);
  return i >= 0 ? i : i ^ 0x7fffffff;
}

/* the key of the maximum of x[0..m), and whether a NaN or a +inf is among them (into *odd) */
static inline int32_t block_max(const float *x, int64_t m, int *odd) {
  int32_t mx = INT32_MIN;
  uint32_t o = 0;
  for (int64_t t = 0; t < m; t++) {
    int32_t i;
    memcpy(&i, x + t, 4);
    uint32_t u = (uint32_t)i;
    o |= ((u & 0x7fffffffu) > 0x7f800000u) | (u == 0x7f800000u); /* NaN, +inf */
    int32_t kx = i >= 0 ? i : i ^ 0x7fffffff;
    mx = kx > mx ? kx : mx;
  }
  *odd |= o != 0;
  return mx;
}

/* the keys x[0..n) (and ix alongside, where given) reordered so that the r + 1 highest come first,
 * the (r + 1)-th highest at x[r], which it returns (Hoare's selection) */
static int32_t select_high(int32_t *x, int64_t *ix, int64_t n, int64_t r) {
  int64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    int32_t pivot = x[lo + (hi - lo) / 2];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (x[i] > pivot) i++;
      while (x[j] < pivot) j--;
      if (i <= j) {
        int32_t t = x[i]; x[i] = x[j]; x[j] = t;
        if (ix) { int64_t ti = ix[i]; ix[i] = ix[j]; ix[j] = ti; }
        i++; j--;
      }
    }
    if (r <= j) hi = j;
    else if (r >= i) lo = i;
    else break;
  }
  return x[r];
}

/* scores [B x I] (row-major), out [B x k], ok [B]; buffers: I keys and int64s (the candidates), and
 * the row's ceil(I / BLOCK) block maxima (keys) twice */
void top_k(const float *scores, int64_t B, int64_t I, int64_t k, int64_t *out, uint8_t *ok,
           int32_t *ck, int64_t *ci, int32_t *maxima, int32_t *work) {
  const int64_t cap = k + 1, blocks = (I + BLOCK - 1) / BLOCK;
  for (int64_t b = 0; b < B; b++) {
    const float *row = scores + b * I;
    int odd = 0; /* a NaN or a +inf in the row */
    for (int64_t j = 0; j < blocks; j++) {
      const float *x = row + j * BLOCK;
      int64_t m = I - j * BLOCK < BLOCK ? I - j * BLOCK : BLOCK;
      maxima[j] = m == BLOCK ? block_max(x, BLOCK, &odd) : block_max(x, m, &odd);
    }
    int64_t n = 0;
    int bad = odd;
    if (!bad) {
      int32_t bound = INT32_MIN;
      if (blocks > cap) {
        for (int64_t j = 0; j < blocks; j++) work[j] = maxima[j];
        bound = select_high(work, NULL, blocks, cap - 1);
      }
      for (int64_t j = 0; j < blocks; j++) { /* the candidates: the finite scores that reach it */
        if (maxima[j] < bound) continue;
        int64_t i0 = j * BLOCK, m = I - i0 < BLOCK ? I - i0 : BLOCK;
        for (int64_t t = 0; t < m; t++) {
          float x = row[i0 + t];
          if (key(x) >= bound && x != -INFINITY) { ck[n] = key(x); ci[n] = i0 + t; n++; }
        }
      }
      if (n > cap) select_high(ck, ci, n, cap - 1);
      n = n < cap ? n : cap;
      for (int64_t j = 1; j < n; j++) { /* the k + 1 highest, sorted (insertion) */
        int32_t x = ck[j];
        int64_t xi = ci[j], at = j;
        for (; at > 0 && ck[at - 1] < x; at--) { ck[at] = ck[at - 1]; ci[at] = ci[at - 1]; }
        ck[at] = x; ci[at] = xi;
      }
      /* (as floats, in which +0 and -0 tie: the keys order them, a refinement of the floats') */
      for (int64_t j = 0; j + 1 < n && !bad; j++) bad = !(row[ci[j]] > row[ci[j + 1]]);
    }
    ok[b] = !bad;
    for (int64_t j = 0; j < k; j++) out[b * k + j] = !bad && j < n ? ci[j] : -1;
  }
}
