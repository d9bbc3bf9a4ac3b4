/*
 * tensorpng._native: the PNG image data (IDAT payload) of 8-bit images, fast, in C.
 *
 * The design follows fpnge (https://github.com/veluca93/fpnge): speed comes from doing less,
 * not from clever matching.
 *   1. One filter for the whole image (None, Sub, Up or Average), chosen like the NumPy path
 *      does it: smallest sum of |residual| (bytes read as signed) over ~16 sampled rows, the
 *      earlier filter on a tie. Both paths pick the same filter and write the same residuals.
 *   2. One dynamic Huffman block whose code comes from a histogram of the sampled rows'
 *      residuals (every symbol counted at least once, so any byte can be coded). Code
 *      lengths are limited to 13 bits so that a table of two-literal codes (26 bits, for
 *      images over 64 KiB) and the codes of four literals (52 bits), merged without waiting
 *      on the bit writer, fit between two flushes of a 64-bit bit buffer.
 *   3. The only LZ77 matches are runs of 8 or more zero bytes, written as a literal 0 and
 *      then matches at distance 1: masks and flat areas stay small.
 *   4. Stored blocks (of the same filtered scanlines) when the sample says Huffman coding
 *      would not pay (noise), or when the coded data grows past the stored size: the output
 *      never exceeds raw + framing.
 *   5. Adler-32 of the scanlines. Runtime dispatch: with AVX2, the row filters (the same C
 *      compiled for AVX2) and Adler-32 (intrinsics) use it; the scalar path gives identical
 *      bytes. `set_scalar(True)` or TENSORPNG_NATIVE_SCALAR=1 forces the scalar path.
 *   6. Channels-first samples (PyTorch's C x H x W) are read as they lie: each row is
 *      interleaved into scratch as the encoder reaches it. On request the smallest and largest
 *      sample byte are found on the way (the metadata record's min and max), in the rows the
 *      filter has just brought into the cache, instead of two passes over the image.
 *
 * The GIL is released during the work. The output goes into a per-thread scratch buffer kept
 * between calls (a fresh worst-case buffer per call costs page faults: about half the speed),
 * then is copied into the returned bytes object. The PNG framing (chunks, CRC-32) is Python's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define TP_X86 1
#include <immintrin.h>
#endif

#ifdef _MSC_VER /* MSVC: no GCC attributes; the scalar path only */
#define __attribute__(x)
#define restrict __restrict
#endif

#ifndef _WIN32
#include <pthread.h>
#define TP_PTHREAD 1
#endif

#define MAX_CODE_BITS 13     /* literal/length code limit (see point 2 above) */
#define SAMPLE_ROWS 16       /* rows sampled to choose the filter and build the histogram */
#define MIN_RUN 8            /* zero runs at least this long become distance-1 matches */
#define STORED_BLOCK 65535   /* bytes per stored block (the format's maximum) */
#define SLACK 128            /* bytes the bit writer may run past its limit before noticing */
#define HEADER_MAX 640       /* bytes of the dynamic block header, at most */
#define KEEP_SCRATCH (64u << 20) /* larger scratch buffers are freed after the call */

static int force_scalar = 0;
static int have_avx2 = 0;

/* ------------------------------------------------------------------------------------------
 * Row filters (PNG spec 9.2). `cur` and `prev` are rows of n bytes (prev all zero for row
 * 0), bpp the bytes per pixel; out[i] = cur[i] - prediction. The bytes on the left of the
 * first pixel count as 0, so those bpp bytes are done on their own and the main loops read
 * cur[i - bpp] freely: plain loops that compilers vectorize.
 * ---------------------------------------------------------------------------------------- */
enum { F_NONE = 0, F_SUB = 1, F_UP = 2, F_AVG = 3, N_FILTERS = 4 };

static inline __attribute__((always_inline)) void filter_row_body(int kind, const uint8_t *restrict cur,
                                                                   const uint8_t *restrict prev,
                                                                   uint8_t *restrict out, size_t n,
                                                                   size_t bpp) {
    size_t head = bpp < n ? bpp : n, i;
    switch (kind) {
    case F_SUB:
        for (i = 0; i < head; i++) out[i] = cur[i];
        for (i = head; i < n; i++) out[i] = (uint8_t)(cur[i] - cur[i - bpp]);
        break;
    case F_UP:
        for (i = 0; i < n; i++) out[i] = (uint8_t)(cur[i] - prev[i]);
        break;
    case F_AVG:
        for (i = 0; i < head; i++) out[i] = (uint8_t)(cur[i] - (prev[i] >> 1));
        for (i = head; i < n; i++) out[i] = (uint8_t)(cur[i] - ((cur[i - bpp] + prev[i]) >> 1));
        break;
    default:
        memcpy(out, cur, n);
    }
}

/* Sum of |residual| with residuals read as signed bytes: the spec's filter heuristic. */
static inline __attribute__((always_inline)) uint64_t cost_body(const uint8_t *restrict p, size_t n) {
    uint64_t total = 0;
    uint32_t part = 0;
    size_t i = 0;
    while (i < n) { /* 32-bit partial sums vectorize; flushed before they could overflow */
        size_t stop = n - i > (1u << 20) ? i + (1u << 20) : n;
        for (part = 0; i < stop; i++) {
            int8_t v = (int8_t)p[i];
            part += (uint32_t)(v < 0 ? -v : v);
        }
        total += part;
    }
    return total;
}

static void filter_row_scalar(int kind, const uint8_t *cur, const uint8_t *prev, uint8_t *out, size_t n,
                              size_t bpp) {
    filter_row_body(kind, cur, prev, out, n, bpp);
}
static uint64_t cost_scalar(const uint8_t *p, size_t n) { return cost_body(p, n); }

#ifdef TP_X86
__attribute__((target("avx2"))) static void filter_row_avx2(int kind, const uint8_t *cur, const uint8_t *prev,
                                                            uint8_t *out, size_t n, size_t bpp) {
    filter_row_body(kind, cur, prev, out, n, bpp);
}
__attribute__((target("avx2"))) static uint64_t cost_avx2(const uint8_t *p, size_t n) { return cost_body(p, n); }
#endif

static inline int simd(void) { return have_avx2 && !force_scalar; }

static void filter_row(int kind, const uint8_t *cur, const uint8_t *prev, uint8_t *out, size_t n, size_t bpp) {
#ifdef TP_X86
    if (simd()) {
        filter_row_avx2(kind, cur, prev, out, n, bpp);
        return;
    }
#endif
    filter_row_scalar(kind, cur, prev, out, n, bpp);
}

static uint64_t cost(const uint8_t *p, size_t n) {
#ifdef TP_X86
    if (simd()) return cost_avx2(p, n);
#endif
    return cost_scalar(p, n);
}

/* ------------------------------------------------------------------------------------------
 * Adler-32 (RFC 1950). Scalar: sums reduced modulo 65521 every 5552 bytes, the most that
 * cannot overflow 32 bits. AVX2: 32 bytes a step; s1 from sums of absolute differences
 * against zero, s2 from byte * (32..1) dot products plus 32 * the s1 of earlier steps.
 * ---------------------------------------------------------------------------------------- */
#define ADLER_BASE 65521u
#define ADLER_NMAX 5552

static uint32_t adler32_scalar(uint32_t adler, const uint8_t *p, size_t n) {
    uint32_t s1 = adler & 0xffff, s2 = adler >> 16;
    while (n > 0) {
        size_t block = n < ADLER_NMAX ? n : ADLER_NMAX;
        n -= block;
        while (block--) {
            s1 += *p++;
            s2 += s1;
        }
        s1 %= ADLER_BASE;
        s2 %= ADLER_BASE;
    }
    return (s2 << 16) | s1;
}

#ifdef TP_X86
__attribute__((target("avx2"))) static uint64_t hsum_epi32(__m256i v) {
    uint32_t lanes[8];
    uint64_t total = 0;
    _mm256_storeu_si256((__m256i *)lanes, v);
    for (int i = 0; i < 8; i++) total += lanes[i];
    return total;
}

__attribute__((target("avx2"))) static uint32_t adler32_avx2(uint32_t adler, const uint8_t *p, size_t n) {
    uint64_t s1 = adler & 0xffff, s2 = adler >> 16;
    const __m256i weights = _mm256_setr_epi8(32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                                             16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m256i ones = _mm256_set1_epi16(1), zero = _mm256_setzero_si256();
    while (n >= 32) {
        size_t steps = n / 32 < ADLER_NMAX / 32 ? n / 32 : ADLER_NMAX / 32;
        __m256i v1 = zero, v1_before = zero, v2 = zero;
        n -= steps * 32;
        for (size_t k = 0; k < steps; k++, p += 32) {
            __m256i bytes = _mm256_loadu_si256((const __m256i *)p);
            v1_before = _mm256_add_epi32(v1_before, v1);
            v1 = _mm256_add_epi32(v1, _mm256_sad_epu8(bytes, zero));
            v2 = _mm256_add_epi32(v2, _mm256_madd_epi16(_mm256_maddubs_epi16(bytes, weights), ones));
        }
        s2 += 32 * steps * s1 + 32 * hsum_epi32(v1_before) + hsum_epi32(v2);
        s1 += hsum_epi32(v1);
        s1 %= ADLER_BASE;
        s2 %= ADLER_BASE;
    }
    return adler32_scalar((uint32_t)((s2 << 16) | s1), p, n);
}
#endif

static uint32_t adler32(uint32_t adler, const uint8_t *p, size_t n) {
#ifdef TP_X86
    if (simd()) return adler32_avx2(adler, p, n);
#endif
    return adler32_scalar(adler, p, n);
}

/* ------------------------------------------------------------------------------------------
 * Smallest and largest byte of a buffer: the mapping record's min and max of 8-bit samples, in
 * one pass instead of NumPy's two (min, then max). Scalar: plain loops the compiler vectorizes.
 * ---------------------------------------------------------------------------------------- */
static inline __attribute__((always_inline)) void byte_range_body(const uint8_t *restrict p, size_t n,
                                                                   uint8_t *low, uint8_t *high) {
    uint8_t lo = 255, hi = 0;
    for (size_t i = 0; i < n; i++) {
        lo = p[i] < lo ? p[i] : lo;
        hi = p[i] > hi ? p[i] : hi;
    }
    *low = lo, *high = hi;
}

static void byte_range_scalar(const uint8_t *p, size_t n, uint8_t *low, uint8_t *high) {
    byte_range_body(p, n, low, high);
}

#ifdef TP_X86
__attribute__((target("avx2"))) static void byte_range_avx2(const uint8_t *p, size_t n, uint8_t *low,
                                                            uint8_t *high) {
    /* 128 bytes a step in four pairs of accumulators (one pair would wait on itself) */
    __m256i lo[4], hi[4];
    for (int k = 0; k < 4; k++) lo[k] = _mm256_set1_epi8(-1), hi[k] = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 128 <= n; i += 128)
        for (int k = 0; k < 4; k++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(p + i + 32 * k));
            lo[k] = _mm256_min_epu8(lo[k], v), hi[k] = _mm256_max_epu8(hi[k], v);
        }
    uint8_t lanes_lo[32], lanes_hi[32], tail_lo, tail_hi;
    _mm256_storeu_si256((__m256i *)lanes_lo, _mm256_min_epu8(_mm256_min_epu8(lo[0], lo[1]), _mm256_min_epu8(lo[2], lo[3])));
    _mm256_storeu_si256((__m256i *)lanes_hi, _mm256_max_epu8(_mm256_max_epu8(hi[0], hi[1]), _mm256_max_epu8(hi[2], hi[3])));
    byte_range_scalar(lanes_lo, 32, low, &tail_hi);
    byte_range_scalar(lanes_hi, 32, &tail_lo, high);
    if (i < n) {
        byte_range_scalar(p + i, n - i, &tail_lo, &tail_hi);
        *low = tail_lo < *low ? tail_lo : *low;
        *high = tail_hi > *high ? tail_hi : *high;
    }
}
#endif

static void byte_range(const uint8_t *p, size_t n, uint8_t *low, uint8_t *high) {
#ifdef TP_X86
    if (simd()) {
        byte_range_avx2(p, n, low, high);
        return;
    }
#endif
    byte_range_scalar(p, n, low, high);
}

/* ------------------------------------------------------------------------------------------
 * Huffman code lengths. A Huffman tree from the sorted weights (two-queue method), then, if
 * it is deeper than `limit`, the code lengths are rebalanced as in JPEG (ITU T.81 Annex K.3):
 * repeatedly two deepest leaves move up and a leaf above the limit moves down one level,
 * which keeps the code complete. The most frequent symbols get the shortest codes.
 * ---------------------------------------------------------------------------------------- */
typedef struct {
    uint64_t weight;
    int symbol;
} Leaf;

static int leaf_order(const void *a, const void *b) {
    const Leaf *x = a, *y = b;
    if (x->weight != y->weight) return x->weight < y->weight ? -1 : 1;
    return x->symbol - y->symbol; /* deterministic whatever qsort does with ties */
}

/* Lengths for symbols 0..n-1 (n <= 288) of frequencies `freq` (0: unused, length 0). */
static void code_lengths(const uint64_t *freq, int n, int limit, uint8_t *length) {
    Leaf leaves[288];
    uint64_t weight[2 * 288];
    int parent[2 * 288], depth[2 * 288], count[64] = {0};
    int used = 0;
    memset(length, 0, (size_t)n);
    for (int s = 0; s < n; s++)
        if (freq[s]) leaves[used++] = (Leaf){freq[s], s};
    if (used == 0) return;
    if (used == 1) {
        length[leaves[0].symbol] = 1;
        return;
    }
    qsort(leaves, (size_t)used, sizeof(Leaf), leaf_order);
    for (int i = 0; i < used; i++) weight[i] = leaves[i].weight;
    /* Nodes 0..used-1 are the leaves in ascending weight; internal nodes are appended in
     * ascending weight too, so the two lightest are always at the heads of the two queues. */
    int next_leaf = 0, next_node = used, end = used;
    for (; end < 2 * used - 1; end++) {
        int pick[2];
        for (int k = 0; k < 2; k++) {
            if (next_leaf < used && (next_node >= end || weight[next_leaf] <= weight[next_node]))
                pick[k] = next_leaf++;
            else
                pick[k] = next_node++;
        }
        weight[end] = weight[pick[0]] + weight[pick[1]];
        parent[pick[0]] = parent[pick[1]] = end;
    }
    depth[end - 1] = 0;
    for (int i = end - 2; i >= 0; i--) depth[i] = depth[parent[i]] + 1;
    int deepest = 0;
    for (int i = 0; i < used; i++) {
        int d = depth[i] < 63 ? depth[i] : 63;
        count[d]++;
        if (d > deepest) deepest = d;
    }
    for (int bits = deepest; bits > limit; bits--) {
        while (count[bits] > 0) {
            int j = bits - 2;
            while (count[j] == 0) j--;
            count[bits] -= 2;
            count[bits - 1] += 1;
            count[j + 1] += 2;
            count[j] -= 1;
        }
    }
    /* Longest codes to the lightest leaves (the leaves are in ascending weight). */
    int leaf = 0;
    for (int bits = deepest < limit ? deepest : limit; bits >= 1; bits--)
        for (int k = 0; k < count[bits]; k++) length[leaves[leaf++].symbol] = (uint8_t)bits;
}

/* Canonical codes (RFC 1951 3.2.2), bit-reversed because deflate writes them MSB first. */
static void canonical_codes(const uint8_t *length, int n, uint16_t *code) {
    int count[16] = {0}, next[16];
    for (int s = 0; s < n; s++) count[length[s]]++;
    count[0] = 0;
    next[0] = 0;
    for (int bits = 1, c = 0; bits < 16; bits++) {
        c = (c + count[bits - 1]) << 1;
        next[bits] = c;
    }
    for (int s = 0; s < n; s++) {
        int len = length[s], c = len ? next[len]++ : 0, reversed = 0;
        for (int b = 0; b < len; b++) reversed |= ((c >> b) & 1) << (len - 1 - b);
        code[s] = (uint16_t)reversed;
    }
}

/* ------------------------------------------------------------------------------------------
 * Bit writer: a 64-bit buffer, stored 8 bytes at a time (holds at most 7 bits after a flush,
 * so up to 56 bits may be added between flushes, and a flush never sees 64).
 * ---------------------------------------------------------------------------------------- */
typedef struct {
    uint8_t *out, *limit; /* limit: past it, the coded data is larger than stored blocks */
    uint64_t buffer;
    unsigned bits;
} Bits;

static inline void put_bits(Bits *w, uint64_t value, unsigned count) {
    w->buffer |= value << w->bits;
    w->bits += count;
}

static inline void flush_bits(Bits *w) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(w->out, &w->buffer, 8);
#else
    for (int i = 0; i < 8; i++) w->out[i] = (uint8_t)(w->buffer >> (8 * i));
#endif
    w->out += w->bits >> 3;
    w->buffer >>= w->bits & ~7u; /* bits < 64: callers add at most 56 bits between flushes */
    w->bits &= 7;
}

/* ------------------------------------------------------------------------------------------
 * Symbols: literals, and the zero runs. A run of n >= MIN_RUN zeros is a literal 0, then
 * matches at distance 1 of 3..258 bytes (never leaving 1 or 2 bytes for a last match), then
 * at most 2 literal zeros. The same tokenizer counts symbols for the histogram and writes
 * them, so the estimate and the output agree.
 * ---------------------------------------------------------------------------------------- */
static const uint16_t LENGTH_BASE[29] = {3,  4,  5,  6,  7,  8,  9,  10, 11,  13,  15,  17,  19,  23, 27,
                                         31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258};
static const uint8_t LENGTH_EXTRA[29] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                         2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};

typedef struct {
    uint32_t literal[256]; /* code | length << 16 */
    uint32_t match[259];   /* for length 3..258: code, extra bits and the 1-bit distance code */
    uint8_t match_bits[259];
    uint16_t length_symbol[259]; /* 257.. for each match length */
    uint32_t *pair;              /* NULL, or for two bytes a | b << 8: codes | lengths << 26 */
} Codes;

#define PAIR_CODE 0x3ffffffu
#define PAIR_MIN_BYTES ((size_t)64 << 10) /* images this large build the two-literal table */

static void length_symbols(uint16_t *symbol) {
    for (int s = 0; s < 29; s++) {
        int top = s == 28 ? 258 : LENGTH_BASE[s] + (1 << LENGTH_EXTRA[s]) - 1;
        for (int len = LENGTH_BASE[s]; len <= top && len <= 258; len++) symbol[len] = (uint16_t)(257 + s);
    }
}

/* 8 bytes as a little-endian number: the first byte in the low bits, on any machine. */
static inline uint64_t load64(const uint8_t *p) {
    uint64_t word;
    memcpy(&word, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    return word;
}

static inline size_t load_run(const uint8_t *p, size_t i, size_t n) {
    /* length of the zero run at p[i], which is known to start with MIN_RUN zeros */
    size_t j = i + MIN_RUN;
    while (j + 8 <= n && load64(p + j) == 0) j += 8;
    while (j < n && p[j] == 0) j++;
    return j - i;
}

static inline unsigned nonzero_prefix(uint64_t word) {
    /* bytes up to and including the last nonzero one, of a load64 word != 0 */
#if defined(__GNUC__)
    return 8 - (unsigned)(__builtin_clzll(word) >> 3);
#else
    unsigned k = 8;
    while ((word >> (8 * (k - 1))) == 0) k--;
    return k;
#endif
}

/* Zero bytes at the start (in memory order) of a load64 word. */
static inline unsigned leading_zero_bytes(uint64_t word) {
    if (!word) return 8;
#if defined(__GNUC__)
    return (unsigned)__builtin_ctzll(word) >> 3;
#else
    unsigned k = 0;
    while (!((word >> (8 * k)) & 0xff)) k++;
    return k;
#endif
}

/* How many bytes of the nonzero `word` at p[i] to write as literals: 8, or fewer when a run
 * of MIN_RUN zeros starts inside the word (its last bytes are zero and the zeros go on).
 * In a photo most words end, or their successors start, with a nonzero byte: one test. */
static inline unsigned literal_bytes(const uint8_t *p, size_t i, size_t n, uint64_t word) {
    unsigned k, zeros = 0;
    if (i + 16 <= n) {
        uint64_t next = load64(p + i + 8);
        if ((word >> 56) | (next & 0xff)) return 8;
        k = nonzero_prefix(word);
        zeros = leading_zero_bytes(next);
    } else {
        if (word >> 56) return 8;
        k = nonzero_prefix(word);
        while (zeros < k && i + 8 + zeros < n && p[i + 8 + zeros] == 0) zeros++;
    }
    return (8 - k) + zeros >= MIN_RUN ? k : 8;
}

/* Next match length of a run with `rest` >= 3 bytes left to cover. */
static inline unsigned next_match(size_t rest) {
    if (rest <= 258) return (unsigned)rest;
    return rest - 258 < 3 ? (unsigned)(rest - 3) : 258;
}

static void count_symbols(const uint8_t *p, size_t n, const uint16_t *length_symbol, uint64_t *freq) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t word = load64(p + i);
            if (word == 0) {
                size_t rest = load_run(p, i, n) - 1;
                i += rest + 1;
                freq[0]++;
                for (; rest >= 3; rest -= next_match(rest)) freq[length_symbol[next_match(rest)]]++;
                freq[0] += rest;
                continue;
            }
            unsigned k = literal_bytes(p, i, n, word);
            for (unsigned j = 0; j < k; j++) freq[p[i + j]]++;
            i += k;
        } else {
            freq[p[i++]]++;
        }
    }
}

/* The codes of four literals, the bytes of `four` (first in the low bits), merged into one
 * value of *count <= 52 bits without waiting on the bit writer (which would chain every
 * literal to the one before). */
static inline __attribute__((always_inline)) uint64_t code4(const Codes *c, int pair, uint32_t four,
                                                            unsigned *count) {
    if (pair) { /* a table for two literals at a time (larger images) */
        uint32_t e0 = c->pair[four & 0xffff], e1 = c->pair[four >> 16];
        *count = (e0 >> 26) + (e1 >> 26);
        return (e0 & PAIR_CODE) | (uint64_t)(e1 & PAIR_CODE) << (e0 >> 26);
    }
    const uint32_t *lit = c->literal;
    uint32_t e0 = lit[four & 255], e1 = lit[(four >> 8) & 255], e2 = lit[(four >> 16) & 255], e3 = lit[four >> 24];
    uint64_t low = (e0 & 0xffff) | (uint64_t)(e1 & 0xffff) << (e0 >> 16);
    uint64_t high = (e2 & 0xffff) | (uint64_t)(e3 & 0xffff) << (e2 >> 16);
    unsigned low_count = (e0 >> 16) + (e1 >> 16);
    *count = low_count + (e2 >> 16) + (e3 >> 16);
    return low | high << low_count;
}

/* Eight literals: two puts of four codes (at most 52 bits each). Always two: one put when
 * all eight fit 56 bits was a branch that went either way on 10-20% of a photo's words, and
 * its mispredictions cost more than the second flush (10% of the encoder's speed). */
static inline __attribute__((always_inline)) void put8(Bits *w, const Codes *c, int pair, uint64_t word) {
    unsigned low_count, high_count;
    uint64_t low = code4(c, pair, (uint32_t)word, &low_count);
    uint64_t high = code4(c, pair, (uint32_t)(word >> 32), &high_count);
    put_bits(w, low, low_count);
    flush_bits(w);
    put_bits(w, high, high_count);
    flush_bits(w);
}

static int write_symbols_to(Bits *w, const Codes *c, int pair, const uint8_t *p, size_t n);
static int write_literals(Bits *w, const Codes *c, int pair, const uint8_t *p, size_t n);

/* Whether p[0..n) holds MIN_RUN (8) zero bytes in a row. AVX2: a bit per byte that is zero,
 * 32 at a time after the previous 32; r &= r >> 1, >> 2, >> 4 leaves bit i set where bytes
 * i..i+7 are all zero. The answer is the same on both paths. */
static int has_zero_run_scalar(const uint8_t *p, size_t n, size_t run) {
    for (size_t i = 0; i < n; i++) {
        run = p[i] ? 0 : run + 1;
        if (run >= MIN_RUN) return 1;
    }
    return 0;
}

#ifdef TP_X86
__attribute__((target("avx2"))) static int has_zero_run_avx2(const uint8_t *p, size_t n) {
    const __m256i zero = _mm256_setzero_si256();
    uint64_t window = 0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i bytes = _mm256_loadu_si256((const __m256i *)(p + i));
        uint32_t zeros = (uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(bytes, zero));
        window = window >> 32 | (uint64_t)zeros << 32;
        uint64_t r = window & window >> 1;
        r &= r >> 2;
        r &= r >> 4;
        if (r & 0x01FFFFFFFFFFFFFFull) return 1; /* runs ending by bit 63 */
    }
    /* the zero bytes just before p + i, then the tail one byte at a time */
    size_t run = window ? (size_t)__builtin_clzll(~window | 1) : 0;
    return has_zero_run_scalar(p + i, n - i, i ? run : 0);
}
#endif

/* p[0..n) when it holds no run of MIN_RUN zeros: the tokenizer would find only literals. */
static inline __attribute__((always_inline)) int write_literals(Bits *w, const Codes *c, int pair,
                                                                const uint8_t *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        put8(w, c, pair, load64(p + i));
        if (w->out > w->limit) return -1;
    }
    for (; i < n; i++) {
        put_bits(w, c->literal[p[i]] & 0xffff, c->literal[p[i]] >> 16);
        flush_bits(w);
    }
    return w->out > w->limit ? -1 : 0;
}

static inline __attribute__((always_inline)) int write_symbols_to(Bits *w, const Codes *c, int pair,
                                                                  const uint8_t *p, size_t n) {
    size_t i = 0;
    const uint32_t *lit = c->literal;
#define PUT_LITERAL(b) put_bits(w, lit[b] & 0xffff, lit[b] >> 16)
    while (i + 8 <= n) {
        uint64_t word = load64(p + i);
        if (word == 0) {
            size_t rest = load_run(p, i, n) - 1;
            i += rest + 1;
            PUT_LITERAL(0);
            while (rest >= 3) {
                unsigned len = next_match(rest);
                rest -= len;
                put_bits(w, c->match[len], c->match_bits[len]); /* <= 19 bits */
                flush_bits(w);
                if (w->out > w->limit) return -1;
            }
            while (rest--) PUT_LITERAL(0);
            flush_bits(w);
            continue;
        }
        unsigned k = literal_bytes(p, i, n, word);
        if (k == 8) { /* the common case */
            put8(w, c, pair, word);
        } else {
            for (unsigned j = 0; j < k; j++) {
                PUT_LITERAL(p[i + j]);
                if (j == 3) flush_bits(w);
            }
            flush_bits(w);
        }
        i += k;
        if (w->out > w->limit) return -1;
    }
    for (; i < n; i++) {
        PUT_LITERAL(p[i]);
        flush_bits(w);
    }
#undef PUT_LITERAL
    return w->out > w->limit ? -1 : 0;
}

/* The row loop, for one instruction set: `runs` says whether p[0..n) holds a zero run. */
static inline __attribute__((always_inline)) int write_symbols_body(Bits *writer, const Codes *c, const uint8_t *p,
                                                                    size_t n, int runs) {
    /* The writer's state in a local copy: stores through its byte pointer could alias the
     * caller's struct, which would reload it from memory after every flush (2x slower). */
    Bits local = *writer;
    int status;
    if (!runs) /* most rows of a photo: literals only, no test for runs */
        status = c->pair ? write_literals(&local, c, 1, p, n) : write_literals(&local, c, 0, p, n);
    else /* two copies of the loop, with and without the two-literal table */
        status = c->pair ? write_symbols_to(&local, c, 1, p, n) : write_symbols_to(&local, c, 0, p, n);
    *writer = local;
    return status;
}

__attribute__((noinline)) static int write_symbols_scalar(Bits *writer, const Codes *c, const uint8_t *p, size_t n) {
    return write_symbols_body(writer, c, p, n, has_zero_run_scalar(p, n, 0));
}

#ifdef TP_X86
/* The same C with BMI2's shifts by a register (shlx/shrx), which the bit writer is made of. */
__attribute__((target("avx2,bmi2"), noinline)) static int write_symbols_avx2(Bits *writer, const Codes *c,
                                                                           const uint8_t *p, size_t n) {
    return write_symbols_body(writer, c, p, n, has_zero_run_avx2(p, n));
}
#endif

/* Write p[0..n) as symbols. Returns 0, or -1 once the output passes the limit. */
static int write_symbols(Bits *writer, const Codes *c, const uint8_t *p, size_t n) {
#ifdef TP_X86
    if (simd()) return write_symbols_avx2(writer, c, p, n);
#endif
    return write_symbols_scalar(writer, c, p, n);
}

/* ------------------------------------------------------------------------------------------
 * The dynamic block header (RFC 1951 3.2.7): 286 literal/length and 2 distance code lengths,
 * run-length coded with symbols 16/17/18 and a Huffman code of its own (limit 7 bits).
 * ---------------------------------------------------------------------------------------- */
static const uint8_t CL_ORDER[19] = {16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15};

static void write_header(Bits *w, const uint8_t *lengths /* 286 + 2 */) {
    enum { N = 288 };
    uint16_t token[N], extra[N];
    int tokens = 0;
    for (int i = 0; i < N;) {
        int run = 1;
        while (i + run < N && lengths[i + run] == lengths[i]) run++;
        int value = lengths[i], left = run;
        if (value == 0) {
            while (left >= 11) {
                int take = left < 138 ? left : 138;
                token[tokens] = 18, extra[tokens++] = (uint16_t)(take - 11);
                left -= take;
            }
            if (left >= 3) token[tokens] = 17, extra[tokens++] = (uint16_t)(left - 3), left = 0;
        } else {
            token[tokens] = (uint16_t)value, extra[tokens++] = 0;
            left--;
            while (left >= 3) {
                int take = left < 6 ? left : 6;
                token[tokens] = 16, extra[tokens++] = (uint16_t)(take - 3);
                left -= take;
            }
        }
        while (left-- > 0) token[tokens] = (uint16_t)value, extra[tokens++] = 0;
        i += run;
    }
    uint64_t freq[19] = {0};
    for (int t = 0; t < tokens; t++) freq[token[t]]++;
    /* zlib rejects an incomplete code-length code: make sure two symbols have codes */
    int used = 0;
    for (int s = 0; s < 19; s++) used += freq[s] != 0;
    for (int s = 0; used < 2; s++)
        if (!freq[s]) freq[s] = 1, used++;
    uint8_t cl_length[19];
    uint16_t cl_code[19];
    code_lengths(freq, 19, 7, cl_length);
    canonical_codes(cl_length, 19, cl_code);
    int hclen = 19;
    while (hclen > 4 && cl_length[CL_ORDER[hclen - 1]] == 0) hclen--;
    put_bits(w, 1 | (2 << 1), 3); /* BFINAL, BTYPE = 2 (dynamic Huffman) */
    put_bits(w, 286 - 257, 5);
    put_bits(w, 2 - 1, 5);
    put_bits(w, (uint64_t)(hclen - 4), 4);
    flush_bits(w);
    for (int k = 0; k < hclen; k++) {
        put_bits(w, cl_length[CL_ORDER[k]], 3);
        flush_bits(w);
    }
    static const uint8_t EXTRA_BITS[3] = {2, 3, 7};
    for (int t = 0; t < tokens; t++) {
        put_bits(w, cl_code[token[t]], cl_length[token[t]]);
        if (token[t] >= 16) put_bits(w, extra[t], EXTRA_BITS[token[t] - 16]);
        flush_bits(w);
    }
}

/* The two-literal table: for bytes a, b at index a | b << 8, code(a) | code(b) << len(a) in
 * the low 26 bits (two 13-bit codes), len(a) + len(b) above. 64 Ki entries: vectorized, it
 * costs a few microseconds instead of ~40. */
static inline __attribute__((always_inline)) void build_pairs_body(const uint16_t *codes, const uint8_t *lengths,
                                                                    uint32_t *pair) {
    uint32_t code[256], length[256];
    for (int a = 0; a < 256; a++) code[a] = codes[a], length[a] = lengths[a];
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t high = code[b], count = length[b], *row = pair + (b << 8);
        for (uint32_t a = 0; a < 256; a++) row[a] = (code[a] | high << length[a]) | (length[a] + count) << 26;
    }
}

static void build_pairs_scalar(const uint16_t *codes, const uint8_t *lengths, uint32_t *pair) {
    build_pairs_body(codes, lengths, pair);
}

#ifdef TP_X86
__attribute__((target("avx2"))) static void build_pairs_avx2(const uint16_t *codes, const uint8_t *lengths,
                                                             uint32_t *pair) {
    build_pairs_body(codes, lengths, pair);
}
#endif

static void build_pairs(const uint16_t *codes, const uint8_t *lengths, uint32_t *pair) {
#ifdef TP_X86
    if (simd()) {
        build_pairs_avx2(codes, lengths, pair);
        return;
    }
#endif
    build_pairs_scalar(codes, lengths, pair);
}

/* ------------------------------------------------------------------------------------------
 * The encoder.
 * ---------------------------------------------------------------------------------------- */
/* Samples held channels-first (PyTorch's C x H x W): one plane per byte of a pixel. Rows are
 * interleaved into two scratch rows as the encoder reaches them (each row once in the main
 * pass), instead of a copy of the whole image beforehand: that copy cost as much as the
 * encoding. */
typedef struct {
    const uint8_t *data; /* bpp planes of height x width bytes, one after the other */
    size_t width;
    uint8_t *rows[2]; /* scratch: the interleaved rows y and y - 1, at [y & 1] */
    size_t held[2];   /* the row each holds (SIZE_MAX: none) */
} Planes;

typedef struct {
    const uint8_t *data; /* height rows of row_bytes sample bytes (unless planes) */
    size_t height, row_bytes, bpp;
    uint8_t *line, *zero; /* scratch: one filtered scanline (filter byte first), a zero row */
    uint32_t *pair;       /* scratch for the two-literal table, or NULL (small images) */
    Planes *planes;       /* NULL, or the channels-first samples (data unused) */
    uint8_t *range;       /* NULL, or the smallest and largest sample byte, kept up to date */
} Image;

static inline __attribute__((always_inline)) void interleave_body(const uint8_t *restrict p, size_t plane,
                                                                   size_t k, size_t width, uint8_t *restrict out) {
    size_t x; /* a loop per channel count: constant strides, which the compiler vectorizes */
    switch (k) {
    case 2:
        for (x = 0; x < width; x++) out[2 * x] = p[x], out[2 * x + 1] = p[plane + x];
        break;
    case 3:
        for (x = 0; x < width; x++) out[3 * x] = p[x], out[3 * x + 1] = p[plane + x], out[3 * x + 2] = p[2 * plane + x];
        break;
    case 4:
        for (x = 0; x < width; x++)
            out[4 * x] = p[x], out[4 * x + 1] = p[plane + x], out[4 * x + 2] = p[2 * plane + x],
                    out[4 * x + 3] = p[3 * plane + x];
        break;
    default:
        for (x = 0; x < width; x++)
            for (size_t c = 0; c < k; c++) out[k * x + c] = p[c * plane + x];
    }
}

static void interleave_scalar(const uint8_t *p, size_t plane, size_t k, size_t width, uint8_t *out) {
    interleave_body(p, plane, k, width, out);
}

#ifdef TP_X86
__attribute__((target("avx2"))) static void interleave_avx2(const uint8_t *p, size_t plane, size_t k,
                                                            size_t width, uint8_t *out) {
    interleave_body(p, plane, k, width, out);
}
#endif

/* Row y of the image as pixel-interleaved bytes. */
static const uint8_t *row_at(const Image *im, size_t y) {
    Planes *pl = im->planes;
    if (!pl) return im->data + y * im->row_bytes;
    uint8_t *row = pl->rows[y & 1];
    if (pl->held[y & 1] != y) {
        const uint8_t *p = pl->data + y * pl->width;
        size_t plane = im->height * pl->width;
#ifdef TP_X86
        if (simd())
            interleave_avx2(p, plane, im->bpp, pl->width, row);
        else
#endif
            interleave_scalar(p, plane, im->bpp, pl->width, row);
        pl->held[y & 1] = y;
    }
    return row;
}

/* Filter row y into im->line[0..1+row_bytes): the filter byte, then the residuals. */
static void filter_line(const Image *im, int kind, size_t y) {
    const uint8_t *cur = row_at(im, y), *prev = y ? row_at(im, y - 1) : im->zero;
    im->line[0] = (uint8_t)kind;
    filter_row(kind, cur, prev, im->line + 1, im->row_bytes, im->bpp);
}

/* filter_line for the pass that writes the row, which also keeps im->range. */
static void filter_next(const Image *im, int kind, size_t y) {
    filter_line(im, kind, y);
    if (im->range) {
        uint8_t low, high;
        byte_range(row_at(im, y), im->row_bytes, &low, &high);
        im->range[0] = low < im->range[0] ? low : im->range[0];
        im->range[1] = high > im->range[1] ? high : im->range[1];
    }
}

/* The NumPy path's sample: up to SAMPLE_ROWS rows evenly spaced from row 1 (row 0 alone for
 * a one-row image, where only None and Sub compete). */
static size_t sample_rows(size_t height, size_t *first, size_t *step) {
    if (height < 2) {
        *first = 0, *step = 1;
        return 1;
    }
    *first = 1;
    *step = (height - 1) / SAMPLE_ROWS > 1 ? (height - 1) / SAMPLE_ROWS : 1;
    size_t count = (height - 2) / *step + 1;
    return count < SAMPLE_ROWS ? count : SAMPLE_ROWS;
}

/* The filter, and in *residual the mean |residual| per byte of the sampled rows with it. */
static int choose_filter(const Image *im, double *residual) {
    size_t first, step, rows = sample_rows(im->height, &first, &step);
    int candidates = im->height < 2 ? 2 : N_FILTERS, best = 0;
    uint64_t best_cost = UINT64_MAX;
    for (int kind = 0; kind < candidates; kind++) {
        uint64_t total = 0;
        for (size_t r = 0; r < rows; r++) {
            filter_line(im, kind, first + r * step);
            total += cost(im->line + 1, im->row_bytes);
        }
        if (total < best_cost) best_cost = total, best = kind;
    }
    *residual = (double)best_cost / (double)(rows * im->row_bytes);
    return best;
}

static size_t stored_size(size_t total) {
    size_t blocks = total ? (total + STORED_BLOCK - 1) / STORED_BLOCK : 1;
    return 2 + total + 5 * blocks + 4;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Stored blocks of the filtered scanlines (the same filter as the coded path would use, so
 * that both write the same scanlines): `out` must hold stored_size bytes. */
static size_t write_stored(const Image *im, int kind, uint8_t *out) {
    size_t total = im->height * (1 + im->row_bytes), left_in_block = 0, left = total;
    uint8_t *o = out;
    uint32_t adler = 1;
    *o++ = 0x78, *o++ = 0x01;
    for (size_t y = 0; y < im->height; y++) {
        const uint8_t *p = im->line;
        size_t n = 1 + im->row_bytes;
        filter_next(im, kind, y);
        adler = adler32(adler, p, n);
        while (n > 0) {
            if (left_in_block == 0) {
                size_t block = left < STORED_BLOCK ? left : STORED_BLOCK;
                *o++ = left == block; /* BFINAL on the last block, BTYPE 0 */
                o[0] = (uint8_t)block, o[1] = (uint8_t)(block >> 8);
                o[2] = (uint8_t)~block, o[3] = (uint8_t)(~block >> 8);
                o += 4;
                left_in_block = block;
                left -= block;
            }
            size_t take = n < left_in_block ? n : left_in_block;
            memcpy(o, p, take);
            o += take, p += take, n -= take, left_in_block -= take;
        }
    }
    put_be32(o, adler);
    return (size_t)(o + 4 - out);
}

/* Huffman coding of the filtered scanlines; -1 if it would not beat stored blocks. `out` has
 * room for `capacity` (the stored size) + HEADER_MAX + SLACK bytes. */
static long long write_huffman(const Image *im, int kind, uint8_t *out, size_t capacity) {
    uint16_t length_symbol[259];
    length_symbols(length_symbol);

    /* Histogram of the sampled rows, every symbol at least once; the estimated size decides
     * whether coding is worth trying at all. */
    uint64_t freq[288] = {0};
    size_t first, step, rows = sample_rows(im->height, &first, &step);
    for (size_t r = 0; r < rows; r++) {
        filter_line(im, kind, first + r * step);
        count_symbols(im->line, 1 + im->row_bytes, length_symbol, freq);
    }
    for (int s = 0; s < 286; s++) freq[s]++;
    uint8_t lengths[288];
    uint16_t codes[288];
    code_lengths(freq, 286, MAX_CODE_BITS, lengths);
    lengths[286] = lengths[287] = 1; /* two 1-bit distance codes; only code 0 (distance 1) used */
    uint64_t estimate = 0, sampled = rows * (1 + (uint64_t)im->row_bytes);
    for (int s = 0; s < 286; s++) estimate += freq[s] * lengths[s];
    if (estimate >= sampled * 8 * 98 / 100) return -1; /* within 2% of raw: store */
    canonical_codes(lengths, 286, codes);

    Codes c;
    for (int s = 0; s < 256; s++) c.literal[s] = codes[s] | (uint32_t)lengths[s] << 16;
    for (int len = 3; len <= 258; len++) {
        int s = length_symbol[len], extra_bits = LENGTH_EXTRA[s - 257];
        uint32_t value = codes[s] | (uint32_t)(len - LENGTH_BASE[s - 257]) << lengths[s];
        /* then the distance code 0 (one bit, 0) and no distance extra bits */
        c.match[len] = value;
        c.match_bits[len] = (uint8_t)(lengths[s] + extra_bits + 1);
    }
    c.pair = im->pair;
    if (c.pair) build_pairs(codes, lengths, c.pair);

    Bits w = {out + 2, out + capacity, 0, 0};
    out[0] = 0x78, out[1] = 0x01;
    write_header(&w, lengths);
    uint32_t adler = 1;
    for (size_t y = 0; y < im->height; y++) {
        filter_next(im, kind, y);
        adler = adler32(adler, im->line, 1 + im->row_bytes);
        if (write_symbols(&w, &c, im->line, 1 + im->row_bytes)) return -1;
    }
    put_bits(&w, codes[256], lengths[256]); /* end of block */
    flush_bits(&w);
    if (w.bits) put_bits(&w, 0, 8 - w.bits), flush_bits(&w);
    if (w.out + 4 > w.limit) return -1;
    put_be32(w.out, adler);
    return (long long)(w.out + 4 - out);
}

/* ------------------------------------------------------------------------------------------
 * Per-thread scratch memory, kept between calls (freed when the thread exits).
 * ---------------------------------------------------------------------------------------- */
typedef struct {
    uint8_t *memory;
    size_t size;
} Scratch;

#ifdef TP_PTHREAD
static pthread_key_t scratch_key;
static int scratch_key_ready = 0;

static void scratch_free(void *p) {
    Scratch *s = p;
    free(s->memory);
    free(s);
}
#endif

/* `size` bytes of scratch memory: the thread's kept buffer, or a temporary one (*temporary). */
static uint8_t *scratch_get(size_t size, int *temporary) {
    *temporary = 1;
#ifdef TP_PTHREAD
    if (scratch_key_ready && size <= KEEP_SCRATCH) {
        Scratch *s = pthread_getspecific(scratch_key);
        if (!s) {
            s = calloc(1, sizeof(Scratch));
            if (!s || pthread_setspecific(scratch_key, s)) {
                free(s);
                return malloc(size);
            }
        }
        if (s->size < size) {
            free(s->memory);
            s->size = size < (1u << 16) ? 1u << 16 : size;
            s->memory = malloc(s->size);
            if (!s->memory) {
                s->size = 0;
                return NULL;
            }
        }
        *temporary = 0;
        return s->memory;
    }
#endif
    return malloc(size);
}

/* The zlib stream of the image, at *result; 0 on failure to allocate (no exception set: the
 * GIL is released). *allocation: memory the caller frees, or NULL (the thread's scratch). */
static size_t encode(const uint8_t *data, size_t height, size_t row_bytes, size_t bpp, double flat, int planar,
                     uint8_t *range, uint8_t **result, uint8_t **allocation) {
    size_t stored = stored_size(height * (1 + row_bytes)), bound = stored + HEADER_MAX + SLACK;
    size_t line = (1 + row_bytes + 15) & ~(size_t)15, total = height * (1 + row_bytes);
    size_t pair = total >= PAIR_MIN_BYTES ? 65536 * sizeof(uint32_t) : 0;
    int temporary;
    uint8_t *memory = scratch_get(pair + bound + (planar ? 4 : 2) * line, &temporary);
    *allocation = temporary ? memory : NULL;
    if (!memory) return 0;
    /* the two-literal table first, aligned as malloc aligns; then the output, two (or four) lines */
    uint8_t *out = memory + pair;
    Planes planes = {data, row_bytes / bpp, {out + bound + 2 * line, out + bound + 3 * line}, {SIZE_MAX, SIZE_MAX}};
    Image im = {data,        height, row_bytes, bpp, out + bound, out + bound + line, pair ? (uint32_t *)memory : NULL,
                planar ? &planes : NULL, range};
    memset(im.zero, 0, row_bytes);
    if (range) range[0] = 255, range[1] = 0;
    double residual;
    int kind = choose_filter(&im, &residual);
    *result = NULL;
    if (residual < flat) { /* the caller uses another deflate */
        if (range) byte_range(data, height * row_bytes, range, range + 1);
        return 1;
    }
    long long size = write_huffman(&im, kind, out, stored);
    *result = out;
    return size >= 0 ? (size_t)size : write_stored(&im, kind, out);
}

/* ------------------------------------------------------------------------------------------
 * float32 values to 8-bit PNG samples: sample = trunc(clamp(x * gain + offset, 0, 255)), the
 * `+ 0.5` of the round-half-up folded into `offset`, NaN written as 0, +-inf clamped. The same
 * float32 roundings as the NumPy path (tensorpng/scaling.py): the product, then the sum, never
 * fused (an FMA rounds once: other samples; no function here is compiled for FMA). One pass
 * instead of NumPy's five (min, max, multiply, add, cast), which also counts NaN and finds the
 * smallest and largest value (NaN left out, +-inf kept). `period` channels repeat along the
 * values (1 for one plane of channels-first samples). AVX2: 32 values a step, with the same
 * operations lane by lane (MINPS/MAXPS return their second operand for NaN, as `x < low ? x :
 * low` does), so both paths write the same samples.
 * ---------------------------------------------------------------------------------------- */
#if defined(__GNUC__) && !defined(__clang__) /* GCC fuses across statements by default */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
#define CONVERT_BLOCK 64 /* pixels per block: gains tiled over one block keep the loop plain */

typedef struct {
    size_t nans;
    float low, high;
    uint32_t zeros; /* 1: a +0.0 was seen, 2: a -0.0 (which of them min and max give is a matter of order) */
} ValueStats;

typedef struct {
    float gain[CONVERT_BLOCK * 4], offset[CONVERT_BLOCK * 4];
    size_t block; /* CONVERT_BLOCK * period values: a multiple of 32 */
} Tiled;

static void tile(Tiled *t, const float *gains, const float *offsets, size_t period) {
    t->block = CONVERT_BLOCK * period;
    for (size_t j = 0; j < t->block; j++) t->gain[j] = gains[j % period], t->offset[j] = offsets[j % period];
}

/* Values [j, stop) of one block, one at a time (the tail of the AVX2 path). */
static inline void convert_values(const float *s, uint8_t *o, const float *gain, const float *offset, size_t j,
                                  size_t stop, ValueStats *stats) {
    for (; j < stop; j++) {
        float x = s[j];
        stats->low = x < stats->low ? x : stats->low;
        stats->high = x > stats->high ? x : stats->high;
        stats->nans += x != x;
        stats->zeros |= x == 0.0f ? (signbit(x) ? 2u : 1u) : 0u;
        float v = x * gain[j]; /* rounded, then the sum rounded: not fused (see above) */
        v = v + offset[j];
        v = v > 0.0f ? v : 0.0f; /* NaN too */
        v = v < 255.0f ? v : 255.0f;
        o[j] = (uint8_t)v;
    }
}

static void convert_scalar(const float *src, uint8_t *out, size_t n, const Tiled *t, ValueStats *stats) {
    for (size_t start = 0; start < n; start += t->block) {
        size_t count = n - start < t->block ? n - start : t->block;
        convert_values(src + start, out + start, t->gain, t->offset, 0, count, stats);
    }
}

#ifdef TP_X86
__attribute__((target("avx2"))) static void convert_avx2(const float *src, uint8_t *out, size_t n, const Tiled *t,
                                                         ValueStats *stats) {
    __m256 low = _mm256_set1_ps(stats->low), high = _mm256_set1_ps(stats->high);
    __m256 zero = _mm256_setzero_ps(), top = _mm256_set1_ps(255.0f);
    __m256i nans = _mm256_setzero_si256(), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i positive = _mm256_setzero_si256(), negative = _mm256_setzero_si256();
    __m256i sign = _mm256_set1_epi32((int)0x80000000u);
    for (size_t start = 0; start < n; start += t->block) {
        size_t count = n - start < t->block ? n - start : t->block, j = 0;
        const float *s = src + start;
        uint8_t *o = out + start;
        for (; j + 32 <= count; j += 32) {
            __m256i word[4];
            for (int k = 0; k < 4; k++) {
                __m256 x = _mm256_loadu_ps(s + j + 8 * k);
                low = _mm256_min_ps(x, low);
                high = _mm256_max_ps(x, high);
                nans = _mm256_sub_epi32(nans, _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
                __m256i bits = _mm256_castps_si256(x);
                positive = _mm256_or_si256(positive, _mm256_cmpeq_epi32(bits, _mm256_setzero_si256()));
                negative = _mm256_or_si256(negative, _mm256_cmpeq_epi32(bits, sign));
                __m256 v = _mm256_mul_ps(x, _mm256_loadu_ps(t->gain + j + 8 * k));
                v = _mm256_add_ps(v, _mm256_loadu_ps(t->offset + j + 8 * k));
                v = _mm256_min_ps(_mm256_max_ps(v, zero), top); /* max(NaN, 0) is 0 */
                word[k] = _mm256_cvttps_epi32(v);
            }
            /* 32 int32 in 0..255 to 32 bytes: the packs work per 128-bit lane, the permute
             * puts the lanes back in order */
            __m256i packed = _mm256_packus_epi16(_mm256_packs_epi32(word[0], word[1]),
                                                 _mm256_packs_epi32(word[2], word[3]));
            _mm256_storeu_si256((__m256i *)(o + j), _mm256_permutevar8x32_epi32(packed, order));
        }
        convert_values(s, o, t->gain, t->offset, j, count, stats);
    }
    float lows[8], highs[8];
    uint32_t counts[8];
    _mm256_storeu_ps(lows, low), _mm256_storeu_ps(highs, high);
    _mm256_storeu_si256((__m256i *)counts, nans);
    stats->zeros |= (_mm256_testz_si256(positive, positive) ? 0u : 1u) | (_mm256_testz_si256(negative, negative) ? 0u : 2u);
    for (int k = 0; k < 8; k++) {
        stats->low = lows[k] < stats->low ? lows[k] : stats->low;
        stats->high = highs[k] > stats->high ? highs[k] : stats->high;
        stats->nans += counts[k];
    }
}
#endif

static void convert(const float *src, uint8_t *out, size_t n, const Tiled *t, ValueStats *stats) {
#ifdef TP_X86
    if (simd()) {
        /* the lanes count NaN in 32 bits: blocks of at most 2**31 values per call */
        for (size_t start = 0; start < n; start += (size_t)1 << 31) {
            size_t count = n - start < (size_t)1 << 31 ? n - start : (size_t)1 << 31;
            convert_avx2(src + start, out + start, count, t, stats);
        }
        return;
    }
#endif
    convert_scalar(src, out, n, t, stats);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* ------------------------------------------------------------------------------------------
 * Python interface.
 * ---------------------------------------------------------------------------------------- */
PyDoc_STRVAR(deflate_image_doc,
             "deflate_image(data, height, row_bytes, bpp, flat=0.0, planar=False, ranged=False, /)\n"
             "    -> bytes | None | tuple[bytes | None, int, int]\n\n"
             "The zlib stream (PNG IDAT payload) of `height` rows of `row_bytes` 8-bit sample bytes\n"
             "held C-contiguously in `data` (any buffer), `bpp` bytes per pixel (1..8). None when\n"
             "the sampled rows' mean |residual| per byte is under `flat` (mask-like images, which an\n"
             "LZ77 deflate codes much smaller). `planar`: `data` holds the samples channels-first,\n"
             "`bpp` planes of height x (row_bytes / bpp) bytes. `ranged`: return (stream, smallest\n"
             "byte, largest byte), found on the way. The GIL is released while it works.");

static PyObject *deflate_image(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t height, row_bytes, bpp;
    double flat = 0.0;
    int planar = 0, ranged = 0;
    uint8_t range[2] = {0, 0};
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnn|dpp:deflate_image", &view, &height, &row_bytes, &bpp, &flat, &planar, &ranged))
        return NULL;
    if (height < 1 || row_bytes < 1 || bpp < 1 || bpp > 8 || view.len / row_bytes != height ||
        view.len % row_bytes != 0 || (planar && row_bytes % bpp != 0)) {
        PyErr_Format(PyExc_ValueError,
                     "deflate_image: %zd bytes are not %zd rows of %zd bytes, or bpp %zd is not 1..8 "
                     "(or, planar, does not divide the row)",
                     view.len, height, row_bytes, bpp);
        PyBuffer_Release(&view);
        return NULL;
    }
    uint8_t *stream = NULL, *allocation = NULL;
    size_t size;
    Py_BEGIN_ALLOW_THREADS;
    size = encode(view.buf, (size_t)height, (size_t)row_bytes, (size_t)bpp, flat, planar, ranged ? range : NULL,
                  &stream, &allocation);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    if (size == 0) {
        free(allocation);
        return PyErr_NoMemory();
    }
    if (stream == NULL) {
        free(allocation);
        if (ranged) return Py_BuildValue("(Oii)", Py_None, (int)range[0], (int)range[1]);
        Py_RETURN_NONE;
    }
    /* The copy into the new object runs without the GIL too: on a large image, its page
     * faults take milliseconds. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (out) {
        char *target = PyBytes_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS;
        memcpy(target, stream, size);
        Py_END_ALLOW_THREADS;
    }
    free(allocation);
    if (out && ranged) return Py_BuildValue("(Nii)", out, (int)range[0], (int)range[1]);
    return out;
}

PyDoc_STRVAR(filter_image_doc,
             "filter_image(data, height, row_bytes, bpp, out, /) -> int\n\n"
             "Filter like deflate_image (one filter chosen from sampled rows) into `out`, a writable\n"
             "C-contiguous buffer of height * (1 + row_bytes) bytes: each row's filter byte, then\n"
             "its residuals. Returns the filter. For 16-bit images, which another deflate codes.\n"
             "The GIL is released while it works.");

static PyObject *filter_image(PyObject *self, PyObject *args) {
    Py_buffer view, out;
    Py_ssize_t height, row_bytes, bpp;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnw*:filter_image", &view, &height, &row_bytes, &bpp, &out)) return NULL;
    if (height < 1 || row_bytes < 1 || bpp < 1 || bpp > 8 || view.len / row_bytes != height ||
        view.len % row_bytes != 0 || out.len != height * (row_bytes + 1)) {
        PyErr_Format(PyExc_ValueError,
                     "filter_image: %zd bytes are not %zd rows of %zd bytes, bpp %zd is not 1..8, or the "
                     "output has %zd bytes",
                     view.len, height, row_bytes, bpp, out.len);
        PyBuffer_Release(&view);
        PyBuffer_Release(&out);
        return NULL;
    }
    int kind = -1;
    Py_BEGIN_ALLOW_THREADS;
    uint8_t *zero = calloc((size_t)row_bytes, 1);
    if (zero) {
        double residual;
        Image im = {view.buf, (size_t)height, (size_t)row_bytes, (size_t)bpp, out.buf, zero, NULL, NULL, NULL};
        kind = choose_filter(&im, &residual);
        for (size_t y = 0; y < im.height; y++) { /* straight into the output rows */
            im.line = (uint8_t *)out.buf + y * (1 + im.row_bytes);
            filter_line(&im, kind, y);
        }
        free(zero);
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    PyBuffer_Release(&out);
    if (kind < 0) return PyErr_NoMemory();
    return PyLong_FromLong(kind);
}

PyDoc_STRVAR(byte_range_doc,
             "byte_range(data, /) -> tuple[int, int]\n\n"
             "The smallest and the largest byte of a non-empty buffer. The GIL is released while it works.");

static PyObject *py_byte_range(PyObject *self, PyObject *args) {
    Py_buffer view;
    uint8_t low = 0, high = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:byte_range", &view)) return NULL;
    if (view.len < 1) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "byte_range: the buffer is empty");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS;
    byte_range(view.buf, (size_t)view.len, &low, &high);
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    return Py_BuildValue("(ii)", (int)low, (int)high);
}

PyDoc_STRVAR(adler32_doc, "adler32(data, value=1, /) -> int\n\nAdler-32 of a buffer (for tests).");

static PyObject *py_adler32(PyObject *self, PyObject *args) {
    Py_buffer view;
    unsigned long value = 1;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*|k:adler32", &view, &value)) return NULL;
    uint32_t result = adler32((uint32_t)value, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyLong_FromUnsignedLong(result);
}

PyDoc_STRVAR(convert_affine_doc,
             "convert_affine(values, out, gains, offsets, planar, /) -> tuple[int, float, float, bool]\n\n"
             "8-bit PNG samples trunc(clamp(x * gain + offset, 0, 255)) of C-contiguous float32 `values`\n"
             "into `out` (C-contiguous uint8, as many items), computed in float32; NaN written as 0.\n"
             "`gains` and `offsets`: 1..4 floats, one per channel. `planar`: the values are the\n"
             "channels' planes one after the other, else pixels of interleaved channels. Returns\n"
             "(NaN count, smallest value, largest value, both zeros): NaN left out (inf and -inf when\n"
             "every value is NaN); both zeros: the values hold 0.0 and -0.0, so that a zero extreme's\n"
             "sign depends on the order of comparisons. The GIL is released while it works.");

/* 1..4 floats of a sequence; their count, or -1 with an exception set. */
static Py_ssize_t float_list(PyObject *seq, float *values) {
    PyObject *fast = PySequence_Fast(seq, "convert_affine: gains and offsets are sequences of floats");
    if (!fast) return -1;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(fast);
    for (Py_ssize_t i = 0; i < count && i < 4; i++) {
        double value = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (value == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        values[i] = (float)value; /* as NumPy's astype(float32) rounds it */
    }
    Py_DECREF(fast);
    return count;
}

static PyObject *convert_affine(PyObject *self, PyObject *args) {
    Py_buffer view, out;
    PyObject *gain_seq, *offset_seq;
    float gains[4], offsets[4];
    int planar;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*OOp:convert_affine", &view, &out, &gain_seq, &offset_seq, &planar)) return NULL;
    Py_ssize_t channels = float_list(gain_seq, gains);
    Py_ssize_t offset_count = channels < 0 ? -1 : float_list(offset_seq, offsets);
    if (offset_count < 0) {
        PyBuffer_Release(&view);
        PyBuffer_Release(&out);
        return NULL;
    }
    size_t n = (size_t)view.len / sizeof(float);
    if (channels < 1 || channels > 4 || offset_count != channels || view.len % (Py_ssize_t)sizeof(float) != 0 ||
        (size_t)out.len != n || n % (size_t)channels != 0) {
        PyErr_Format(PyExc_ValueError,
                     "convert_affine: %zd bytes of float32 values into %zd bytes of samples with %zd gains and "
                     "%zd offsets (1..4, as many) is no conversion this function makes",
                     view.len, out.len, channels, offset_count);
        PyBuffer_Release(&view);
        PyBuffer_Release(&out);
        return NULL;
    }
    ValueStats stats = {0, INFINITY, -INFINITY, 0};
    Tiled tiled;
    Py_BEGIN_ALLOW_THREADS;
    if (planar) { /* one plane per channel, one gain each */
        size_t plane = n / (size_t)channels;
        for (Py_ssize_t c = 0; c < channels; c++) {
            tile(&tiled, gains + c, offsets + c, 1);
            convert((const float *)view.buf + (size_t)c * plane, (uint8_t *)out.buf + (size_t)c * plane, plane,
                    &tiled, &stats);
        }
    } else {
        tile(&tiled, gains, offsets, (size_t)channels);
        convert(view.buf, out.buf, n, &tiled, &stats);
    }
    Py_END_ALLOW_THREADS;
    PyBuffer_Release(&view);
    PyBuffer_Release(&out);
    return Py_BuildValue("(nddO)", (Py_ssize_t)stats.nans, (double)stats.low, (double)stats.high,
                         stats.zeros == 3u ? Py_True : Py_False);
}

PyDoc_STRVAR(set_scalar_doc,
             "set_scalar(flag, /) -> None\n\nForce the portable scalar path (True) or allow SIMD (False).");

static PyObject *set_scalar(PyObject *self, PyObject *arg) {
    (void)self;
    int flag = PyObject_IsTrue(arg);
    if (flag < 0) return NULL;
    force_scalar = flag;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(simd_doc, "simd() -> str\n\nThe instruction set in use: 'avx2' or 'scalar'.");

static PyObject *py_simd(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return PyUnicode_FromString(simd() ? "avx2" : "scalar");
}

PyDoc_STRVAR(cpu_features_doc, "cpu_features() -> tuple[str, ...]\n\nSIMD features this CPU offers us.");

static PyObject *cpu_features(PyObject *self, PyObject *unused) {
    (void)self, (void)unused;
    return have_avx2 ? Py_BuildValue("(s)", "avx2") : PyTuple_New(0);
}

static PyMethodDef methods[] = {
    {"deflate_image", deflate_image, METH_VARARGS, deflate_image_doc},
    {"filter_image", filter_image, METH_VARARGS, filter_image_doc},
    {"adler32", py_adler32, METH_VARARGS, adler32_doc},
    {"byte_range", py_byte_range, METH_VARARGS, byte_range_doc},
    {"convert_affine", convert_affine, METH_VARARGS, convert_affine_doc},
    {"set_scalar", set_scalar, METH_O, set_scalar_doc},
    {"simd", py_simd, METH_NOARGS, simd_doc},
    {"cpu_features", cpu_features, METH_NOARGS, cpu_features_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "tensorpng._native",
    "Native PNG image-data encoder for 8-bit images (see tensorpng/_native.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
#ifdef TP_X86
    __builtin_cpu_init();
    have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("bmi2"); /* every AVX2 CPU has BMI2 */
#endif
    const char *env = getenv("TENSORPNG_NATIVE_SCALAR");
    force_scalar = env != NULL && env[0] != '\0' && strcmp(env, "0") != 0;
#ifdef TP_PTHREAD
    if (!scratch_key_ready) scratch_key_ready = pthread_key_create(&scratch_key, scratch_free) == 0;
#endif
    return PyModule_Create(&module);
}
