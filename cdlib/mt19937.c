/* torch.rand's float32 numbers of a CPU generator (`randkernel`): the generator's Mersenne Twister
 * (ATen/core/MT19937RNGEngine.h, at::mt19937) advanced as torch advances it, one 32-bit word a
 * number, whose low 24 bits times 2^-24 are the number (ATen's uniform_real_distribution<float>).
 * torch draws the words one call at a time; here the state's twist and the words' tempering run in
 * loops over the whole state, which the compiler vectorises: the same words, in the same order. */
#include <stdint.h>

#define N 624
#define M 397
#define MATRIX_A 0x9908b0dfU
#define UMASK 0x80000000U
#define LMASK 0x7fffffffU

static inline uint32_t twisted(uint32_t u, uint32_t v) {
  return (((u & UMASK) | (v & LMASK)) >> 1) ^ ((v & 1U) ? MATRIX_A : 0U);
}

/* at::mt19937's next_state, in loops without a dependence inside a vector: s[i] reads s[i + 1]
 * (not yet written) and s[i + M] (old, i < N - M) or s[i + M - N] (written 227 words before) */
static void twist(uint32_t *s) {
  int i;
  for (i = 0; i < N - M; i++) /* 0..226: the old s[i + M] */
    s[i] = s[i + M] ^ twisted(s[i], s[i + 1]);
  for (i = N - M; i < 2 * (N - M); i++) /* 227..453: s[0..227), written by the loop above */
    s[i] = s[i + M - N] ^ twisted(s[i], s[i + 1]);
  for (i = 2 * (N - M); i < N - 1; i++) /* 454..622: s[227..396), written by the loop above */
    s[i] = s[i + M - N] ^ twisted(s[i], s[i + 1]);
  s[N - 1] = s[M - 1] ^ twisted(s[N - 1], s[0]);
}

/* out[0..n): the next n numbers of the generator whose state is s and next word s[*pos] (*pos = N:
 * the state is spent, twist first); s and *pos are advanced past them */
void mt_uniform(uint32_t *s, int64_t *pos, float *out, int64_t n) {
  int64_t p = *pos, done = 0;
  while (done < n) {
    if (p == N) {
      twist(s);
      p = 0;
    }
    int64_t take = N - p < n - done ? N - p : n - done;
    const uint32_t *w = s + p;
    float *o = out + done;
    for (int64_t i = 0; i < take; i++) {
      uint32_t y = w[i];
      y ^= y >> 11;
      y ^= (y << 7) & 0x9d2c5680U;
      y ^= (y << 15) & 0xefc60000U;
      y ^= y >> 18;
      o[i] = (float)(int32_t)(y & 0xffffffU) * 0x1p-24f;
    }
    p += take;
    done += take;
  }
  *pos = p;
}
