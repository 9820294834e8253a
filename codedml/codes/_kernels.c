/* codedml.codes._kernels: the encode's compiled loops, optional.

   copy_sq(dst, src, sq=None, stream=False, scale=1.0, wide=None, part=0, squares=True,
           simd=-1) -> float or None
   copy_i64(dst, src, wide=None, stream=False) -> int, mod_store(dst, src, p, stream=False):
   the GF(p) encode's copy of int64 residues (widened for its GEMM and range-checked in the
   same loop) and its reduction of the GEMM's exact products into int64 residues (see their
   comments below).

   Writes ``scale * src`` (the 2-D, or 1-D: one row, array ``src``) into ``dst`` of the same
   shape and the same element type (float64 'd' or float32 'f'), or float64 ``src`` into
   float32 ``dst`` (each row contiguous, rows at any stride), each product formed in double,
   then cast to ``dst``'s type (exactly numpy's ``np.multiply(src.astype(float64), scale)``
   cast to ``dst``; with ``scale`` 1 a plain copy), and returns the sum of squares of the values of ``src``, accumulated in double
   precision while they are in registers; with ``sq`` (a writable 1-D float64 array, one entry
   per row) each row's sum of squares is also added to its entry. A NaN or Inf anywhere in
   ``src`` makes the sum NaN or Inf. With ``wide`` (a float64 array of ``src``'s shape, for
   float32 ``dst`` and ``src``) the values of ``src`` widened to double are written there too,
   in the same loop: the float64 operand of a GEMM, from the one read of ``src``. With
   ``part`` > 0, ``sq`` has one entry per block of ``part`` columns instead (the last block
   may be short) and gets each block's sum of squares over all rows: the norms of column
   partitions (the gradient code's partitions of A) from the copy itself. With ``squares``
   false the sum is not formed (for a copy whose sum nobody reads: a source's second and later
   copies) and None is returned; ``sq`` then must not be given. Where the sum or ``wide`` is
   formed and the CPU has AVX2 and FMA (``COPY_SIMD`` 1), rows of one element type run an
   AVX2 loop (the values written are the same; the sums may differ in their last bits);
   ``simd`` 0 keeps the SSE2 loops. ``dst``,
   ``sq`` and ``wide`` must not overlap each other or ``src``: a call where the spans of
   their memory do is refused (ValueError naming the two). A 1-D array is one row: it pairs
   with a 1-D or a one-row 2-D array of as many columns.

   With ``stream`` true the stores are non-temporal (x86-64: MOVNTPD/MOVNTPS, then SFENCE):
   they go to memory without first reading the destination's cache lines (the read for
   ownership that every ordinary store into memory not in cache pays). That is how a large
   memcpy reaches the copy bound; numpy's copies of cache-sized chunks cannot. Use it for
   destinations nobody reads soon (tasks about to be sent): streamed lines are not left in
   the cache. Elsewhere (no SSE2) the flag is ignored.

   The GIL is released during the loop. Written against the stable buffer protocol; no
   numpy headers are needed. codedml/codes/_encode.py falls back to numpy where this
   module was not built (see docs/codes.md, "The encode kernel"). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#define CODEDML_SSE2 1
#else
#define CODEDML_SSE2 0
#endif

/* Bytes ahead of a row loop's reads that it asks the cache for (SSE prefetch): where several
   rows are read side by side (a systematic code's sources loaded into lincomb's tile) the
   hardware prefetchers fell behind; measured on a 2-core AMD EPYC (systematic MDS(17, 15)
   float64 at 4096, minimum of 9 interleaved encodes): 0.80-0.91x the time without, and the
   plain streamed copy of a 128 MiB matrix 0.85-0.90x. 2048 to 17408 bytes measured alike. */
#define PFD 2048
/* asks for the line PFD bytes past ``p`` (into L1), its address formed in integers: near a
   row's end it lies past the row, where pointer arithmetic would be undefined */
#define PF_AHEAD(p) _mm_prefetch((const char *)((uintptr_t)(p) + PFD), _MM_HINT_T0)
#if CODEDML_SSE2
/* a streamed store needs its destination 16-byte aligned (the row loops' scalar heads see to it) */
static inline void store_pd(double *p, __m128d v, int stream)
{
    if (stream)
        _mm_stream_pd(p, v);
    else
        _mm_storeu_pd(p, v);
}

static inline void store_ps(float *p, __m128 v, int stream)
{
    if (stream)
        _mm_stream_ps(p, v);
    else
        _mm_storeu_ps(p, v);
}
#endif

/* The scalar part every row loop shares, one function per pair of element types: elements
   [i, n) of ``s`` scaled by ``c`` in double and cast into ``d`` (with ``w``, also widened
   into it), four at a time then one by one, their squares added to ``a``. The row loops run
   it for the head up to a 16-byte boundary of a streamed destination (at most three
   elements, or the whole row when the destination is not aligned to its element size) and
   for the tail after their SSE2 loop; without SSE2 for the whole row. With ``c`` 1 and one
   element type the value is stored as loaded, without arithmetic: a product by 1.0 (or a
   widening) in a thread with denormals-are-zero set (``torch.set_flush_denormal``, code
   built with -ffast-math) would store a subnormal value as 0; a move keeps its bits. */
#if defined(__GNUC__)
/* inlined into every row loop, the AVX2 ones included: called there as a function, a
   scalar head or tail between AVX2 stores cost about as much as the row's vector loop
   (copy_sq of 5 x 128 float64 with squares: 2.8 against 1.65 us) */
#define SCALAR_INLINE static inline __attribute__((always_inline))
#else
#define SCALAR_INLINE static inline
#endif
/* numpy arrays may lie at any byte offset: the scalar loop, which takes such rows to their
   end, reads and writes them through types of alignment 1 (a plain pointer to a misaligned
   double is undefined behaviour in C, which UndefinedBehaviorSanitizer reported here; on
   x86 the same moves). */
#if defined(__GNUC__)
#define CODEDML_UNALIGNED __attribute__((aligned(1)))
#else
#define CODEDML_UNALIGNED
#endif
#define CODEDML_SCALAR(NAME, ST, DT)                                                         \
    SCALAR_INLINE void NAME(const void *sv, void *dv, double *w, Py_ssize_t i, Py_ssize_t n, \
                            double c, double a[4])                                           \
    {                                                                                        \
        typedef ST s_u CODEDML_UNALIGNED;                                                    \
        typedef DT d_u CODEDML_UNALIGNED;                                                    \
        const s_u *s = (const s_u *)sv;                                                      \
        d_u *d = (d_u *)dv;                                                                  \
        const int mv = c == 1.0 && sizeof(ST) == sizeof(DT);                                 \
        for (; i + 4 <= n; i += 4) {                                                         \
            double v0 = s[i], v1 = s[i + 1], v2 = s[i + 2], v3 = s[i + 3];                   \
            if (mv) {                                                                        \
                d[i] = (DT)s[i];                                                             \
                d[i + 1] = (DT)s[i + 1];                                                     \
                d[i + 2] = (DT)s[i + 2];                                                     \
                d[i + 3] = (DT)s[i + 3];                                                     \
            } else {                                                                         \
                d[i] = (DT)(v0 * c);                                                         \
                d[i + 1] = (DT)(v1 * c);                                                     \
                d[i + 2] = (DT)(v2 * c);                                                     \
                d[i + 3] = (DT)(v3 * c);                                                     \
            }                                                                                \
            if (w) {                                                                         \
                w[i] = v0;                                                                   \
                w[i + 1] = v1;                                                               \
                w[i + 2] = v2;                                                               \
                w[i + 3] = v3;                                                               \
            }                                                                                \
            a[0] += v0 * v0;                                                                 \
            a[1] += v1 * v1;                                                                 \
            a[2] += v2 * v2;                                                                 \
            a[3] += v3 * v3;                                                                 \
        }                                                                                    \
        for (; i < n; i++) {                                                                 \
            double v = s[i];                                                                 \
            d[i] = mv ? (DT)s[i] : (DT)(v * c);                                              \
            if (w)                                                                           \
                w[i] = v;                                                                    \
            a[0] += v * v;                                                                   \
        }                                                                                    \
    }

CODEDML_SCALAR(scalar_d, double, double)
CODEDML_SCALAR(scalar_f, float, float)
CODEDML_SCALAR(scalar_df, double, float)

#if CODEDML_SSE2
/* Elements before a 16-byte boundary of ``d`` (element size ``size``), which a streamed row
   writes one by one: all ``n`` when ``d`` is not even aligned to its element size (it never
   reaches a boundary, so the row is written by scalar stores); none without streaming. */
static inline Py_ssize_t head(const void *d, size_t size, Py_ssize_t n, int stream)
{
    uintptr_t p = (uintptr_t)d;
    if (!stream || !(p & 15))
        return 0;
    if (p % size)
        return n;
    Py_ssize_t h = (Py_ssize_t)(((16 - (p & 15)) & 15) / size);
    return h < n ? h : n;
}
#endif

#if CODEDML_SSE2
/* Without the sum of squares (a copy whose sum nobody reads: the second and later copies of
   one source): ``d = c * s`` from element ``i`` on, eight at a time; returns where it
   stopped (the caller's scalar loop does the tail). float32 with ``c`` 1 is a plain copy of
   the values as loaded; otherwise each product is formed in double and cast, as in the loops
   with squares. */
static Py_ssize_t plain_d(const double *s, double *d, Py_ssize_t i, Py_ssize_t n, int stream,
                          double c)
{
    __m128d cc = _mm_set1_pd(c);
    const int one = c == 1.0;
    for (; i + 8 <= n; i += 8) {
        __m128d v0 = _mm_loadu_pd(s + i), v1 = _mm_loadu_pd(s + i + 2);
        __m128d v2 = _mm_loadu_pd(s + i + 4), v3 = _mm_loadu_pd(s + i + 6);
        if (!one) {
            v0 = _mm_mul_pd(v0, cc);
            v1 = _mm_mul_pd(v1, cc);
            v2 = _mm_mul_pd(v2, cc);
            v3 = _mm_mul_pd(v3, cc);
        }
        store_pd(d + i, v0, stream);
        store_pd(d + i + 2, v1, stream);
        store_pd(d + i + 4, v2, stream);
        store_pd(d + i + 6, v3, stream);
    }
    return i;
}

static Py_ssize_t plain_f(const float *s, float *d, Py_ssize_t i, Py_ssize_t n, int stream,
                          double c)
{
    if (c == 1.0) {
        for (; i + 8 <= n; i += 8) {
            store_ps(d + i, _mm_loadu_ps(s + i), stream);
            store_ps(d + i + 4, _mm_loadu_ps(s + i + 4), stream);
        }
        return i;
    }
    __m128d cc = _mm_set1_pd(c);
    for (; i + 4 <= n; i += 4) {
        __m128 v = _mm_loadu_ps(s + i);
        __m128d l = _mm_mul_pd(_mm_cvtps_pd(v), cc);
        __m128d h = _mm_mul_pd(_mm_cvtps_pd(_mm_movehl_ps(v, v)), cc);
        store_ps(d + i, _mm_movelh_ps(_mm_cvtpd_ps(l), _mm_cvtpd_ps(h)), stream);
    }
    return i;
}
#endif

static double row_d(const double *s, double *d, double *w, Py_ssize_t n, int stream,
                    double c, int squares)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    Py_ssize_t i = 0;
#if CODEDML_SSE2
    {
        i = head(d, sizeof(double), n, stream);
        scalar_d(s, d, w, 0, i, c, a);
        if (!squares && !w) {
            scalar_d(s, d, NULL, plain_d(s, d, i, n, stream, c), n, c, a);
            return 0.0;
        }
        __m128d cc = _mm_set1_pd(c);
        const int one = c == 1.0;
        __m128d x0 = _mm_setzero_pd(), x1 = _mm_setzero_pd();
        __m128d x2 = _mm_setzero_pd(), x3 = _mm_setzero_pd();
        const int pf = (size_t)n * sizeof(*s) > 2 * PFD;   /* see row_f_avx2 */
        for (; i + 8 <= n; i += 8) {
            if (pf)
                PF_AHEAD(s + i);
            __m128d v0 = _mm_loadu_pd(s + i), v1 = _mm_loadu_pd(s + i + 2);
            __m128d v2 = _mm_loadu_pd(s + i + 4), v3 = _mm_loadu_pd(s + i + 6);
            /* with c 1 the values as loaded (a product by 1.0 would flush a subnormal
               under denormals-are-zero) */
            store_pd(d + i, one ? v0 : _mm_mul_pd(v0, cc), stream);
            store_pd(d + i + 2, one ? v1 : _mm_mul_pd(v1, cc), stream);
            store_pd(d + i + 4, one ? v2 : _mm_mul_pd(v2, cc), stream);
            store_pd(d + i + 6, one ? v3 : _mm_mul_pd(v3, cc), stream);
            if (w) {            /* the values as read, ordinary stores (read soon, from cache) */
                _mm_storeu_pd(w + i, v0);
                _mm_storeu_pd(w + i + 2, v1);
                _mm_storeu_pd(w + i + 4, v2);
                _mm_storeu_pd(w + i + 6, v3);
            }
            x0 = _mm_add_pd(x0, _mm_mul_pd(v0, v0));
            x1 = _mm_add_pd(x1, _mm_mul_pd(v1, v1));
            x2 = _mm_add_pd(x2, _mm_mul_pd(v2, v2));
            x3 = _mm_add_pd(x3, _mm_mul_pd(v3, v3));
        }
        double t[2];
        _mm_storeu_pd(t, _mm_add_pd(_mm_add_pd(x0, x1), _mm_add_pd(x2, x3)));
        a[1] += t[0];
        a[2] += t[1];
    }
#else
    (void)stream;
#endif
    scalar_d(s, d, w, i, n, c, a);
    if (!squares)
        return 0.0;
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* float32: each product formed in double, then cast to float (numpy's float64 product cast
   to float32: with c 1 the values as they are). With ``w``, the values widened to double are
   also stored there (ordinary stores: a buffer read soon, from cache) */
static double row_f(const float *s, float *d, double *w, Py_ssize_t n, int stream, double c,
                    int squares)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    Py_ssize_t i = 0;
#if CODEDML_SSE2
    {
        i = head(d, sizeof(float), n, stream);
        scalar_f(s, d, w, 0, i, c, a);
        if (!squares && !w) {
            scalar_f(s, d, NULL, plain_f(s, d, i, n, stream, c), n, c, a);
            return 0.0;
        }
        __m128d cc = _mm_set1_pd(c);
        const int one = c == 1.0;
        __m128d x0 = _mm_setzero_pd(), x1 = _mm_setzero_pd();
        __m128d x2 = _mm_setzero_pd(), x3 = _mm_setzero_pd();
        const int pf = (size_t)n * sizeof(*s) > 2 * PFD;   /* see row_f_avx2 */
        for (; i + 8 <= n; i += 8) {
            if (pf && !(i & 15))   /* one a cache line */
                PF_AHEAD(s + i);
            __m128 v0 = _mm_loadu_ps(s + i), v1 = _mm_loadu_ps(s + i + 4);
            /* in double: the low and high pairs of each quadruple */
            __m128d l0 = _mm_cvtps_pd(v0), h0 = _mm_cvtps_pd(_mm_movehl_ps(v0, v0));
            __m128d l1 = _mm_cvtps_pd(v1), h1 = _mm_cvtps_pd(_mm_movehl_ps(v1, v1));
            if (w) {            /* the values widened, ordinary stores (read soon, from cache) */
                _mm_storeu_pd(w + i, l0);
                _mm_storeu_pd(w + i + 2, h0);
                _mm_storeu_pd(w + i + 4, l1);
                _mm_storeu_pd(w + i + 6, h1);
            }
            if (one) {          /* a plain copy: the values as loaded */
                store_ps(d + i, v0, stream);
                store_ps(d + i + 4, v1, stream);
            } else {
                store_ps(d + i, _mm_movelh_ps(_mm_cvtpd_ps(_mm_mul_pd(l0, cc)),
                                              _mm_cvtpd_ps(_mm_mul_pd(h0, cc))), stream);
                store_ps(d + i + 4, _mm_movelh_ps(_mm_cvtpd_ps(_mm_mul_pd(l1, cc)),
                                                  _mm_cvtpd_ps(_mm_mul_pd(h1, cc))), stream);
            }
            x0 = _mm_add_pd(x0, _mm_mul_pd(l0, l0));
            x1 = _mm_add_pd(x1, _mm_mul_pd(h0, h0));
            x2 = _mm_add_pd(x2, _mm_mul_pd(l1, l1));
            x3 = _mm_add_pd(x3, _mm_mul_pd(h1, h1));
        }
        double t[2];
        _mm_storeu_pd(t, _mm_add_pd(_mm_add_pd(x0, x1), _mm_add_pd(x2, x3)));
        a[1] += t[0];
        a[2] += t[1];
    }
#else
    (void)stream;
#endif
    scalar_f(s, d, w, i, n, c, a);
    if (!squares)
        return 0.0;
    return (a[0] + a[1]) + (a[2] + a[3]);
}

/* float64 into float32: each product formed in double, then cast (numpy's float64 product
   cast to float32); the sum of squares is of the float64 values */
static double row_df(const double *s, float *d, Py_ssize_t n, int stream, double c)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    Py_ssize_t i = 0;
#if CODEDML_SSE2
    {
        i = head(d, sizeof(float), n, stream);
        scalar_df(s, d, NULL, 0, i, c, a);
        __m128d cc = _mm_set1_pd(c);
        __m128d x0 = _mm_setzero_pd(), x1 = _mm_setzero_pd();
        __m128d x2 = _mm_setzero_pd(), x3 = _mm_setzero_pd();
        for (; i + 8 <= n; i += 8) {
            __m128d v0 = _mm_loadu_pd(s + i), v1 = _mm_loadu_pd(s + i + 2);
            __m128d v2 = _mm_loadu_pd(s + i + 4), v3 = _mm_loadu_pd(s + i + 6);
            store_ps(d + i, _mm_movelh_ps(_mm_cvtpd_ps(_mm_mul_pd(v0, cc)),
                                          _mm_cvtpd_ps(_mm_mul_pd(v1, cc))), stream);
            store_ps(d + i + 4, _mm_movelh_ps(_mm_cvtpd_ps(_mm_mul_pd(v2, cc)),
                                              _mm_cvtpd_ps(_mm_mul_pd(v3, cc))), stream);
            x0 = _mm_add_pd(x0, _mm_mul_pd(v0, v0));
            x1 = _mm_add_pd(x1, _mm_mul_pd(v1, v1));
            x2 = _mm_add_pd(x2, _mm_mul_pd(v2, v2));
            x3 = _mm_add_pd(x3, _mm_mul_pd(v3, v3));
        }
        double t[2];
        _mm_storeu_pd(t, _mm_add_pd(_mm_add_pd(x0, x1), _mm_add_pd(x2, x3)));
        a[1] += t[0];
        a[2] += t[1];
    }
#else
    (void)stream;
#endif
    scalar_df(s, d, NULL, i, n, c, a);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

#if CODEDML_SSE2 && defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CODEDML_ROW_AVX2 1
#define ROW_A2 __attribute__((target("avx2,fma")))
#define ROW_INLINE ROW_A2 static inline __attribute__((always_inline))
/* whether copy_sq's row loops may use AVX2 and FMA (set at import where the CPU has both) */
static int row_avx2_ok = 0;

/* 8 floats or 4 doubles stored; streamed as two 16-byte halves, so that a destination
   aligned to 16 bytes (head()'s boundary, the SSE2 loops' own) needs no longer scalar head,
   nor (with the loops' eight-wide last step) a longer scalar tail, than the SSE2 loops
   beside the streamed stores (ordinary stores into lines being streamed measured 20x
   slower: the write-combining buffers flushed) */
ROW_A2 static inline void store8_ps(float *p, __m256 v, int stream)
{
    if (stream) {
        _mm_stream_ps(p, _mm256_castps256_ps128(v));
        _mm_stream_ps(p + 4, _mm256_extractf128_ps(v, 1));
    } else {
        _mm256_storeu_ps(p, v);
    }
}

/* 4 doubles by two 16-byte loads (as _mm256_loadu2_m128d, which GCC has only from 10 on) */
ROW_A2 static inline __m256d load4_pd(const double *p)
{
    return _mm256_insertf128_pd(_mm256_castpd128_pd256(_mm_loadu_pd(p)), _mm_loadu_pd(p + 2), 1);
}

ROW_A2 static inline void store4_ps(float *p, __m128 v, int stream)
{
    if (stream)
        _mm_stream_ps(p, v);
    else
        _mm_storeu_ps(p, v);
}

ROW_A2 static inline void store4_pd(double *p, __m256d v, int stream)
{
    if (stream) {
        _mm_stream_pd(p, _mm256_castpd256_pd128(v));
        _mm_stream_pd(p + 2, _mm256_extractf128_pd(v, 1));
    } else {
        _mm256_storeu_pd(p, v);
    }
}

/* the four accumulators' sums into a[0..3], lane by lane */
ROW_A2 static inline void fold4(__m256d x0, __m256d x1, __m256d x2, __m256d x3, double a[4])
{
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(_mm256_add_pd(x0, x1), _mm256_add_pd(x2, x3)));
    for (int k = 0; k < 4; k++)
        a[k] += t[k];
}

/* row_f with squares (or ``w``) on AVX2: 16 values a step, widened by halves of 8, each
   product formed in double and cast as there (with c 1 the values as loaded), the squares
   by fused multiply-adds into four accumulators of four (row_f: pairs, separate multiply
   and add; the sums may differ in their last bits, never the values written). Measured on
   the 2-core AMD EPYC: the gradient code's owned copies of A (blocks of 64 columns) and
   float32 copies with squares about 2x the SSE2 loop's rate. */
/* row_f_avx2 from element ``i`` on, its four accumulators' sums so far in ``x`` and the
   scalar ones in ``a`` (the accumulating walk's fused step hands a row over here after its
   whole steps of 16: the same sums in the same order as one call of row_f_avx2) */
ROW_INLINE double row_f_avx2_from(const float *s, float *d, double *w, Py_ssize_t n,
                                  int stream, double c, const char *nx, Py_ssize_t i,
                                  const __m256d *x, double a[4])
{
    const __m256d cc = _mm256_set1_pd(c);
    const int one = c == 1.0;
    /* prefetch only in rows longer than its distance: a short row (a column segment of a
       wider matrix) would ask for lines past its end that it never reads */
    const int pf = (size_t)n * sizeof(*s) > 2 * PFD;
    __m256d x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    for (; i + 16 <= n; i += 16) {
        if (pf)
            PF_AHEAD(s + i);
        if (nx)   /* the next run a walk copies, a line a step (into L2; the address in
                     integers: the next run may be shorter, and a prefetch never faults) */
            _mm_prefetch((const char *)((uintptr_t)nx + (uintptr_t)i * sizeof(float)),
                         _MM_HINT_T1);
        /* 16-byte loads: numpy's data is 16-byte aligned, and 32-byte loads from it split
           cache lines every other time (measured 1.05-1.08x the SSE2 loop's encode time
           from memory, where 16-byte loads ran at 0.92-0.94x in cache) */
        __m128 q0 = _mm_loadu_ps(s + i), q1 = _mm_loadu_ps(s + i + 4);
        __m128 q2 = _mm_loadu_ps(s + i + 8), q3 = _mm_loadu_ps(s + i + 12);
        __m256d l0 = _mm256_cvtps_pd(q0), h0 = _mm256_cvtps_pd(q1);
        __m256d l1 = _mm256_cvtps_pd(q2), h1 = _mm256_cvtps_pd(q3);
        if (w) {            /* the values widened, ordinary stores (read soon, from cache) */
            _mm256_storeu_pd(w + i, l0);
            _mm256_storeu_pd(w + i + 4, h0);
            _mm256_storeu_pd(w + i + 8, l1);
            _mm256_storeu_pd(w + i + 12, h1);
        }
        if (one) {
            store4_ps(d + i, q0, stream);
            store4_ps(d + i + 4, q1, stream);
            store4_ps(d + i + 8, q2, stream);
            store4_ps(d + i + 12, q3, stream);
        } else {
            store8_ps(d + i, _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(h0, cc)),
                                             _mm256_cvtpd_ps(_mm256_mul_pd(l0, cc))), stream);
            store8_ps(d + i + 8, _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(h1, cc)),
                                                 _mm256_cvtpd_ps(_mm256_mul_pd(l1, cc))), stream);
        }
        x0 = _mm256_fmadd_pd(l0, l0, x0);
        x1 = _mm256_fmadd_pd(h0, h0, x1);
        x2 = _mm256_fmadd_pd(l1, l1, x2);
        x3 = _mm256_fmadd_pd(h1, h1, x3);
    }
    if (i + 8 <= n) {   /* eight more, so that at most 7 go to the scalar tail, as in row_f
                           (ordinary stores beside streamed ones in a line are slow) */
        __m128 q0 = _mm_loadu_ps(s + i), q1 = _mm_loadu_ps(s + i + 4);
        __m256d l0 = _mm256_cvtps_pd(q0), h0 = _mm256_cvtps_pd(q1);
        if (w) {
            _mm256_storeu_pd(w + i, l0);
            _mm256_storeu_pd(w + i + 4, h0);
        }
        if (one) {
            store4_ps(d + i, q0, stream);
            store4_ps(d + i + 4, q1, stream);
        } else {
            store8_ps(d + i, _mm256_set_m128(_mm256_cvtpd_ps(_mm256_mul_pd(h0, cc)),
                                             _mm256_cvtpd_ps(_mm256_mul_pd(l0, cc))), stream);
        }
        x0 = _mm256_fmadd_pd(l0, l0, x0);
        x1 = _mm256_fmadd_pd(h0, h0, x1);
        i += 8;
    }
    fold4(x0, x1, x2, x3, a);
    scalar_f(s, d, w, i, n, c, a);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

ROW_INLINE double row_f_avx2(const float *s, float *d, double *w, Py_ssize_t n, int stream,
                              double c, const char *nx)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    Py_ssize_t i = head(d, sizeof(float), n, stream);
    scalar_f(s, d, w, 0, i, c, a);
    const __m256d x[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                          _mm256_setzero_pd()};
    return row_f_avx2_from(s, d, w, n, stream, c, nx, i, x, a);
}

/* row_d with squares (or ``w``) on AVX2: 16 values a step, the products by ``c`` exactly as
   row_d's (one multiply each), the squares by fused multiply-adds */
/* row_d_avx2 from element ``i`` on (see row_f_avx2_from) */
ROW_INLINE double row_d_avx2_from(const double *s, double *d, double *w, Py_ssize_t n,
                                  int stream, double c, const char *nx, Py_ssize_t i,
                                  const __m256d *x, double a[4])
{
    const __m256d cc = _mm256_set1_pd(c);
    const int one = c == 1.0;
    /* prefetch only in long rows (see row_f_avx2) */
    const int pf = (size_t)n * sizeof(*s) > 2 * PFD;
    __m256d x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3];
    for (; i + 16 <= n; i += 16) {
        if (pf) {
            PF_AHEAD(s + i);
            PF_AHEAD(s + i + 8);
        }
        if (nx) {   /* the next run a walk copies (see row_f_avx2_from) */
            _mm_prefetch((const char *)((uintptr_t)nx + (uintptr_t)i * sizeof(double)),
                         _MM_HINT_T1);
            _mm_prefetch((const char *)((uintptr_t)nx + (uintptr_t)(i + 8) * sizeof(double)),
                         _MM_HINT_T1);
        }
        /* two 16-byte loads each (see row_f_avx2) */
        __m256d v0 = load4_pd(s + i), v1 = load4_pd(s + i + 4);
        __m256d v2 = load4_pd(s + i + 8), v3 = load4_pd(s + i + 12);
        if (w) {
            _mm256_storeu_pd(w + i, v0);
            _mm256_storeu_pd(w + i + 4, v1);
            _mm256_storeu_pd(w + i + 8, v2);
            _mm256_storeu_pd(w + i + 12, v3);
        }
        if (one) {
            store4_pd(d + i, v0, stream);
            store4_pd(d + i + 4, v1, stream);
            store4_pd(d + i + 8, v2, stream);
            store4_pd(d + i + 12, v3, stream);
        } else {
            store4_pd(d + i, _mm256_mul_pd(v0, cc), stream);
            store4_pd(d + i + 4, _mm256_mul_pd(v1, cc), stream);
            store4_pd(d + i + 8, _mm256_mul_pd(v2, cc), stream);
            store4_pd(d + i + 12, _mm256_mul_pd(v3, cc), stream);
        }
        x0 = _mm256_fmadd_pd(v0, v0, x0);
        x1 = _mm256_fmadd_pd(v1, v1, x1);
        x2 = _mm256_fmadd_pd(v2, v2, x2);
        x3 = _mm256_fmadd_pd(v3, v3, x3);
    }
    if (i + 8 <= n) {   /* eight more: at most 7 to the scalar tail, as in row_d */
        __m256d v0 = load4_pd(s + i), v1 = load4_pd(s + i + 4);
        if (w) {
            _mm256_storeu_pd(w + i, v0);
            _mm256_storeu_pd(w + i + 4, v1);
        }
        store4_pd(d + i, one ? v0 : _mm256_mul_pd(v0, cc), stream);
        store4_pd(d + i + 4, one ? v1 : _mm256_mul_pd(v1, cc), stream);
        x0 = _mm256_fmadd_pd(v0, v0, x0);
        x1 = _mm256_fmadd_pd(v1, v1, x1);
        i += 8;
    }
    fold4(x0, x1, x2, x3, a);
    scalar_d(s, d, w, i, n, c, a);
    return (a[0] + a[1]) + (a[2] + a[3]);
}

ROW_INLINE double row_d_avx2(const double *s, double *d, double *w, Py_ssize_t n,
                              int stream, double c, const char *nx)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    Py_ssize_t i = head(d, sizeof(double), n, stream);
    scalar_d(s, d, w, 0, i, c, a);
    const __m256d x[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(),
                          _mm256_setzero_pd()};
    return row_d_avx2_from(s, d, w, n, stream, c, nx, i, x, a);
}
/* One row (or, with ``part`` > 0, a row by blocks of ``part`` columns, block b's sum added
   to ``*(pq + b * qs)``) on AVX2, the loops above inlined: one call per row, not per block
   (a gradient code's A is copied in blocks of its partitions' widths, often 64 columns) */
ROW_A2 static double rows_avx2(char kd, const char *s, char *d, char *w, Py_ssize_t n,
                               int stream, double c, Py_ssize_t part, char *pq, Py_ssize_t qs,
                               const char *nx)
{
    if (part <= 0) {
        if (kd == 'd')
            return row_d_avx2((const double *)s, (double *)d, (double *)w, n, stream, c, nx);
        return row_f_avx2((const float *)s, (float *)d, (double *)w, n, stream, c, nx);
    }
    double total = 0.0;
    const Py_ssize_t size = kd == 'd' ? 8 : 4;
    for (Py_ssize_t b = 0, c0 = 0; c0 < n; b++, c0 += part) {
        Py_ssize_t m = n - c0 < part ? n - c0 : part;
        double *wb = w ? (double *)w + c0 : NULL;
        double v = kd == 'd'
            ? row_d_avx2((const double *)(s + c0 * size), (double *)(d + c0 * size), wb, m,
                         stream, c, NULL)
            : row_f_avx2((const float *)(s + c0 * size), (float *)(d + c0 * size), wb, m,
                         stream, c, NULL);
        total += v;
        *(double *)(pq + b * qs) += v;
    }
    return total;
}

/* A row's copy with its squares (c 1, no ``w``) from element ``i`` on, its four AVX2
   accumulators' sums so far in ``x`` (the accumulating walk's fused step hands its rows
   over here after their whole steps of 16) */
ROW_A2 static double rows_avx2_from(char kd, const char *s, char *d, Py_ssize_t n, int stream,
                                    Py_ssize_t i, const __m256d *x)
{
    double a[4] = {0.0, 0.0, 0.0, 0.0};
    if (kd == 'd')
        return row_d_avx2_from((const double *)s, (double *)d, NULL, n, stream, 1.0, NULL, i,
                               x, a);
    return row_f_avx2_from((const float *)s, (float *)d, NULL, n, stream, 1.0, NULL, i, x, a);
}
#else
#define CODEDML_ROW_AVX2 0
static int row_avx2_ok = 0;
#endif

/* one row (or one column block of it) of any accepted pair of element types, SSE2 */
static inline double row_one(char kd, char ks, const char *s, char *d, char *w, Py_ssize_t n,
                             int stream, double c, int squares)
{
    if (kd == 'd')
        return row_d((const double *)s, (double *)d, (double *)w, n, stream, c, squares);
    if (ks == 'd')   /* the products' conversion dominates: squares or not, one loop */
        return row_df((const double *)s, (float *)d, n, stream, c);
    return row_f((const float *)s, (float *)d, (double *)w, n, stream, c, squares);
}

/* One row of any accepted pair of element types: whole (``part`` <= 0), or by blocks of
   ``part`` columns, block b's sum added to ``*(pq + b * qs)``; returns the row's sum. With
   ``avx2`` the AVX2 loops where they apply (a sum or ``w`` formed, one element type), which
   ask for ``nx`` (the next run a walk copies; NULL: none) as they go */
static inline double row_any(char kd, char ks, const char *s, char *d, char *w, Py_ssize_t n,
                             int stream, double c, int squares, int avx2, Py_ssize_t part,
                             char *pq, Py_ssize_t qs, const char *nx)
{
#if CODEDML_ROW_AVX2
    if (avx2 && (squares || w) && ks == kd)
        return rows_avx2(kd, s, d, w, n, stream, c, part, pq, qs, nx);
#else
    (void)avx2;
    (void)nx;
#endif
    if (part <= 0)
        return row_one(kd, ks, s, d, w, n, stream, c, squares);
    const Py_ssize_t si = ks == 'd' ? 8 : 4, di = kd == 'd' ? 8 : 4;
    double total = 0.0;
    for (Py_ssize_t b = 0, c0 = 0; c0 < n; b++, c0 += part) {
        Py_ssize_t m = n - c0 < part ? n - c0 : part;
        double v = row_one(kd, ks, s + c0 * si, d + c0 * di,
                           w ? w + c0 * (Py_ssize_t)sizeof(double) : NULL, m, stream, c, squares);
        total += v;
        *(double *)(pq + b * qs) += v;
    }
    return total;
}

/* rows and row stride (in bytes) of a 1-D or 2-D buffer whose last axis is contiguous */
static int layout(const char *fn, Py_buffer *b, const char *name, Py_ssize_t *rows,
                  Py_ssize_t *cols, Py_ssize_t *stride)
{
    if (b->ndim == 1) {
        if (b->strides[0] != b->itemsize && b->shape[0] > 1) {
            PyErr_Format(PyExc_ValueError, "%s: `%s` must be contiguous", fn, name);
            return -1;
        }
        *rows = 1;
        *cols = b->shape[0];
        *stride = 0;
        return 0;
    }
    if (b->ndim != 2) {
        PyErr_Format(PyExc_ValueError, "%s: `%s` must be 1-D or 2-D, got %d-D", fn, name,
                     b->ndim);
        return -1;
    }
    if (b->strides[1] != b->itemsize && b->shape[1] > 1) {
        PyErr_Format(PyExc_ValueError, "%s: the rows of `%s` must be contiguous", fn, name);
        return -1;
    }
    *rows = b->shape[0];
    *cols = b->shape[1];
    *stride = b->strides[0];
    return 0;
}

/* the bytes a 1-D or 2-D buffer of ``rows`` x ``cols`` items (rows ``stride`` bytes apart,
   either sign) spans, as [*lo, *hi); empty for no items */
static void extent(const void *buf, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t stride,
                   Py_ssize_t item, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t p = (uintptr_t)buf;
    if (rows <= 0 || cols <= 0) {
        *lo = *hi = p;
        return;
    }
    Py_ssize_t span = (rows - 1) * stride;
    *lo = span < 0 ? p - (uintptr_t)(-span) : p;
    *hi = (span > 0 ? p + (uintptr_t)span : p) + (uintptr_t)(cols * item);
}

/* whether spans [lo1, hi1) and [lo2, hi2) share a byte (an empty one shares none) */
static inline int meet(uintptr_t lo1, uintptr_t hi1, uintptr_t lo2, uintptr_t hi2)
{
    return lo1 < hi1 && lo2 < hi2 && lo1 < hi2 && lo2 < hi1;
}

/* 0 when no two of the ``n`` spans [lo[i], hi[i]) overlap (an empty one overlaps nothing),
   where at least one of the two is written (``written[i]``; NULL: every span is); else -1
   with ValueError naming the first two that do (``what``), for function ``fn``. Spans that
   are only read may share memory (A @ A reads one array twice). */
static int apart(const char *fn, int n, const uintptr_t *lo, const uintptr_t *hi,
                 const int *written, const char *const *what)
{
    for (int a = 0; a < n; a++)
        for (int b = a + 1; b < n; b++)
            if ((!written || written[a] || written[b]) && meet(lo[a], hi[a], lo[b], hi[b])) {
                PyErr_Format(PyExc_ValueError, "%s: `%s` and `%s` overlap in memory", fn,
                             what[a], what[b]);
                return -1;
            }
    return 0;
}

/* apart() of every pair */
static int disjoint(const char *fn, int n, const uintptr_t *lo, const uintptr_t *hi,
                    const char *const *what)
{
    return apart(fn, n, lo, hi, NULL, what);
}

/* The one-character struct format of a buffer in this host's byte order, else 0: a
   byte-order prefix is taken only where it names this host's order ('=' and '@' always) */
static char native(Py_buffer *b)
{
    const char *f = b->format ? b->format : "B";
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    if (*f == '>' || *f == '!' || *f == '=' || *f == '@')
#else
    if (*f == '<' || *f == '=' || *f == '@')
#endif
        f++;
    return f[0] && f[1] == '\0' ? f[0] : 0;
}

/* 'd' or 'f' for a native float64 or float32 buffer, else 0 */
static char kind(Py_buffer *b)
{
    char f = native(b);
    return f == 'd' || f == 'f' ? f : 0;
}

/* The buffers of a call: ``mode[i]`` 'w' (written), 'r' (read), 'o' (written, optional:
   Py_None leaves it out, have[i] 0) or 'p' (read, optional). On failure the ones already taken are released and -1
   returned with the exception set; else release them with release_buffers. */
static int get_buffers(const char *fn, int n, PyObject *const *o, Py_buffer *const *b,
                       const char *mode, const char *const *names, int *have)
{
    for (int i = 0; i < n; i++) {
        have[i] = !((mode[i] == 'o' || mode[i] == 'p') && o[i] == Py_None);
        const int ro = mode[i] == 'r' || mode[i] == 'p';
        int flags = PyBUF_STRIDES | PyBUF_FORMAT | (ro ? 0 : PyBUF_WRITABLE);
        if (have[i] && PyObject_GetBuffer(o[i], b[i], flags) < 0) {
            /* named: which argument, and what it must be (the exporter's own message, e.g.
               "a bytes-like object is required", names neither) */
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s: `%s` must be an array, got %s", fn,
                             names[i], Py_TYPE(o[i])->tp_name);
            } else if (!ro && (PyErr_ExceptionMatches(PyExc_BufferError)
                                          || PyErr_ExceptionMatches(PyExc_ValueError))) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "%s: `%s` must be a writable array", fn,
                             names[i]);
            }
            have[i] = 0;
            while (--i >= 0)
                if (have[i])
                    PyBuffer_Release(b[i]);
            return -1;
        }
    }
    return 0;
}

static void release_buffers(int n, Py_buffer *const *b, const int *have)
{
    for (int i = n - 1; i >= 0; i--)
        if (have[i])
            PyBuffer_Release(b[i]);
}

static PyObject *copy_sq(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"dst", "src", "sq", "stream", "scale", "wide", "part", "squares",
                            "simd", NULL};
    PyObject *odst, *osrc, *osq = Py_None, *owide = Py_None;
    int stream = 0, squares = 1, simd = -1;
    double c = 1.0;
    Py_ssize_t part = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|OpdOnpi:copy_sq", names, &odst, &osrc, &osq,
                                     &stream, &c, &owide, &part, &squares, &simd))
        return NULL;
    const int avx2 = simd != 0 && row_avx2_ok;   /* simd 0: the SSE2 loops */
    if (!squares && osq != Py_None) {
        PyErr_SetString(PyExc_ValueError,
                        "copy_sq: `sq` (the rows' sums of squares) needs `squares` true");
        return NULL;
    }
    if (part < 0 || (part > 0 && osq == Py_None)) {
        PyErr_Format(PyExc_ValueError,
                     "copy_sq: `part` (columns per block of `sq`) must be 0, or positive with "
                     "`sq` given; got %zd%s", part, osq == Py_None ? " without `sq`" : "");
        return NULL;
    }
    Py_buffer d, s, q, wb;
    PyObject *const objs[4] = {odst, osrc, osq, owide};
    Py_buffer *const bufs[4] = {&d, &s, &q, &wb};
    int have[4];
    static const char *const nm[4] = {"dst", "src", "sq", "wide"};
    if (get_buffers("copy_sq", 4, objs, bufs, "wroo", nm, have) < 0)
        return NULL;
    const int have_q = have[2], have_w = have[3];
    PyObject *result = NULL;
    Py_ssize_t dr, dc, ds, sr, sc, ss, wr = 0, wc = 0, ws = 0;
    char kd = kind(&d), ks = kind(&s);
    if (!kd || !ks || (kd != ks && !(kd == 'f' && ks == 'd'))) {
        PyErr_SetString(PyExc_TypeError,
                        "copy_sq: `dst` and `src` must both be float64, both float32, or "
                        "`dst` float32 and `src` float64");
        goto done;
    }
    if (layout("copy_sq", &d, "dst", &dr, &dc, &ds) < 0 || layout("copy_sq", &s, "src", &sr, &sc, &ss) < 0)
        goto done;
    if (dr != sr || dc != sc) {
        PyErr_Format(PyExc_ValueError, "copy_sq: `dst` is %zd x %zd but `src` is %zd x %zd",
                     dr, dc, sr, sc);
        goto done;
    }
    if (have_w) {
        if (ks != 'f' || kd != 'f' || kind(&wb) != 'd') {
            PyErr_SetString(PyExc_TypeError,
                            "copy_sq: `wide` (the values widened) must be float64, with `dst` "
                            "and `src` float32");
            goto done;
        }
        if (layout("copy_sq", &wb, "wide", &wr, &wc, &ws) < 0)
            goto done;
        if (wr != sr || wc != sc) {
            PyErr_Format(PyExc_ValueError,
                         "copy_sq: `wide` is %zd x %zd but `src` is %zd x %zd", wr, wc, sr, sc);
            goto done;
        }
    }
    /* blocks of `part` columns, rounded up (written so that no huge `part` can overflow) */
    Py_ssize_t nq = part > 0 ? (dc == 0 ? 0 : (dc - 1) / part + 1) : dr;
    if (have_q && (q.ndim != 1 || kind(&q) != 'd' || q.shape[0] != nq)) {
        PyErr_Format(PyExc_ValueError,
                     "copy_sq: `sq` must be a 1-D float64 array of %zd entries (%s)", nq,
                     part > 0 ? "one per block of `part` columns" : "one per row");
        goto done;
    }
    {
        /* nothing written may overlap what is read or written elsewhere in the loop (the
           bounds of each buffer's span, as np.may_share_memory: interleaved rows count) */
        uintptr_t lo[4], hi[4];
        extent(d.buf, dr, dc, ds, d.itemsize, &lo[0], &hi[0]);
        extent(s.buf, sr, sc, ss, s.itemsize, &lo[1], &hi[1]);
        if (have_q)
            extent(q.buf, q.shape[0], 1, q.strides[0], q.itemsize, &lo[2], &hi[2]);
        else
            lo[2] = hi[2] = 0;
        if (have_w)
            extent(wb.buf, wr, wc, ws, wb.itemsize, &lo[3], &hi[3]);
        else
            lo[3] = hi[3] = 0;
        static const char *const what[4] = {"dst", "src", "sq", "wide"};
        if (disjoint("copy_sq", 4, lo, hi, what) < 0)
            goto done;
    }
    {
        double total = 0.0;
        char *pd = (char *)d.buf, *ps = (char *)s.buf;
        char *pq = have_q ? (char *)q.buf : NULL;
        char *pw = have_w ? (char *)wb.buf : NULL;
        Py_ssize_t qs = have_q ? q.strides[0] : 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < dr; r++) {
            char *rw = pw ? pw + r * ws : NULL;
            double v = row_any(kd, ks, ps + r * ss, pd + r * ds, rw, dc, stream, c, squares,
                               avx2, part, pq, qs, NULL);
            total += v;
            if (pq && part <= 0)
                *(double *)(pq + r * qs) += v;
        }
#if CODEDML_SSE2
        if (stream)
            _mm_sfence();
#endif
        Py_END_ALLOW_THREADS
        result = squares ? PyFloat_FromDouble(total) : Py_NewRef(Py_None);
    }
done:
    release_buffers(4, bufs, have);
    return result;
}

/* ------------------------------------------------------------------ GF(p): int64 residues */

/* 1 for a native int64 buffer ('q', or 'l' where long is 64 bits), else 0 */
static int is_i64(Py_buffer *b)
{
    char f = native(b);
    return b->itemsize == 8 && (f == 'q' || (f == 'l' && sizeof(long) == 8));
}

typedef int64_t i64_u CODEDML_UNALIGNED;   /* (see CODEDML_SCALAR) */
#if defined(__x86_64__) && CODEDML_SSE2
#define CODEDML_STORE_I64(p, v, stream)                                                    \
    do {                                                                                    \
        if (stream)                                                                         \
            _mm_stream_si64((long long *)(p), (long long)(v));                              \
        else                                                                                \
            *(i64_u *)(p) = (v);                                                            \
    } while (0)
#else
#define CODEDML_STORE_I64(p, v, stream) (*(i64_u *)(p) = (v))
#endif

/* The buffers of one call: dst written, src read, wide (optional) written; all 2-D or 1-D
   with contiguous rows, of one shape, not overlapping. Returns 0, or -1 with an exception. */
static int same_rows(const char *fn, Py_buffer *d, Py_buffer *s, Py_buffer *w,
                     Py_ssize_t *rows, Py_ssize_t *cols, Py_ssize_t st[3])
{
    Py_ssize_t r[3], c[3];
    if (layout(fn, d, "dst", &r[0], &c[0], &st[0]) < 0 || layout(fn, s, "src", &r[1], &c[1], &st[1]) < 0
        || (w && layout(fn, w, "wide", &r[2], &c[2], &st[2]) < 0))
        return -1;
    for (int i = 1; i < (w ? 3 : 2); i++)
        if (r[i] != r[0] || c[i] != c[0]) {
            PyErr_Format(PyExc_ValueError, "%s: `%s` is %zd x %zd but `dst` is %zd x %zd", fn,
                         i == 1 ? "src" : "wide", r[i], c[i], r[0], c[0]);
            return -1;
        }
    uintptr_t lo[3], hi[3];
    Py_buffer *b[3] = {d, s, w};
    static const char *const what[3] = {"dst", "src", "wide"};
    for (int i = 0; i < (w ? 3 : 2); i++)
        extent(b[i]->buf, r[0], c[0], st[i], b[i]->itemsize, &lo[i], &hi[i]);
    if (disjoint(fn, w ? 3 : 2, lo, hi, what) < 0)
        return -1;
    *rows = r[0];
    *cols = c[0];
    return 0;
}

/* One row of copy_i64: ``x`` into ``y`` (none where ``y`` is NULL: lincomb's widening into
   its tile) and, with ``z``, as doubles into ``z``; returns the row's largest value read as
   unsigned. SSE2: two values per operation, converted exactly by
   the bits of 2**52 + v less 2**52 (for v in [0, 2**52), every residue the GEMM path takes);
   a value outside that range (the bits above 52 are watched in the same loop) sends the row's
   conversion and maximum to the exact scalar loop again, so every value converts as a cast
   would. The maximum of those doubles is the maximum of the values (integers below 2**52). */
static inline void i64_scalar(const int64_t *x, int64_t *y, double *z, Py_ssize_t i,
                              Py_ssize_t n, int stream, uint64_t *m)
{
    (void)stream;
    for (; i < n; i++) {
        int64_t v = ((const i64_u *)x)[i];
        if (y)
            CODEDML_STORE_I64(y + i, v, stream);
        if (z)
            z[i] = (double)v;
        *m = (uint64_t)v > *m ? (uint64_t)v : *m;
    }
}

#if CODEDML_SSE2 && defined(__x86_64__)
/* Four values of i64_row: stored into ``y`` (streamed or not), widened into ``z``, their
   bits above 52 or-ed into ``big`` and the doubles' maximum into ``mx`` */
static inline void i64_four(__m128i v0, __m128i v1, int64_t *y, double *z, int stream,
                            __m128i *big, __m128d *mx)
{
    const __m128i high = _mm_set1_epi64x((long long)0xFFF0000000000000ULL);
    const __m128i bits = _mm_set1_epi64x(0x4330000000000000LL);   /* 2**52 as a double */
    const __m128d two52 = _mm_set1_pd(4503599627370496.0);
    if (y && stream) {
        _mm_stream_si128((__m128i *)y, v0);
        _mm_stream_si128((__m128i *)(y + 2), v1);
    } else if (y) {
        _mm_storeu_si128((__m128i *)y, v0);
        _mm_storeu_si128((__m128i *)(y + 2), v1);
    }
    *big = _mm_or_si128(*big, _mm_or_si128(_mm_and_si128(v0, high), _mm_and_si128(v1, high)));
    __m128d d0 = _mm_sub_pd(_mm_castsi128_pd(_mm_or_si128(v0, bits)), two52);
    __m128d d1 = _mm_sub_pd(_mm_castsi128_pd(_mm_or_si128(v1, bits)), two52);
    if (z) {
        _mm_storeu_pd(z, d0);
        _mm_storeu_pd(z + 2, d1);
    }
    *mx = _mm_max_pd(*mx, _mm_max_pd(d0, d1));
}
#endif

/* Where ``y`` lies less than I64_LEAD bytes after ``x`` modulo 4 KiB, a load of the loop below
   shares its address's low 12 bits with a store the loop issued just before, which the CPU
   cannot tell from a true overlap until the store is done: the load waits. Measured on the
   2-core AMD EPYC (AVX2), a 2048 x 2048 int64 copy took 1.6-1.7x as long with ``y`` 16-48
   bytes after ``x`` (numpy's large arrays start 16 bytes into a page; the task pool's
   started on a cache line, 48 bytes later, until e7d4b2e). There the loop loads each group
   of eight values before it stores the eight before them, so no load follows a store it
   could be taken to overlap. A C copy of this loop timed alone: 4.2-4.3 ms against 5.4-6.6
   ms in that band, 3.9-4.3 ms elsewhere, where the reordered loop is itself slower (so it
   runs only here); copy_i64 from Python: 2.9-3.1 ms against 5.1-6.7 ms. */
#define I64_LEAD 64

#if CODEDML_SSE2 && defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
static int i64_avx512_ok = 0;   /* AVX-512F (set at import) */

/* i64_row without the widening, on AVX-512F: eight values a step, loaded one step ahead of
   the store before them (see I64_LEAD), stored (streamed from a 64-byte boundary) and their
   largest as unsigned kept in a register: the exact maximum whatever the values, so no
   second look where one is out of [0, 2**52). The SSE2 loop converts each pair to double
   for its maximum (about eight operations per four values); here three per eight. */
__attribute__((target("avx512f"))) static uint64_t i64_row512(const int64_t *x, int64_t *y,
                                                             Py_ssize_t n, int stream)
{
    uint64_t m = 0;
    Py_ssize_t i = 0;
    for (; stream && i < n && ((uintptr_t)(y + i) & 63); i++) {
        const int64_t v = x[i];
        y[i] = v;
        m = (uint64_t)v > m ? (uint64_t)v : m;
    }
    __m512i mx = _mm512_setzero_si512();
    if (n - i >= 16) {
        __m512i c = _mm512_loadu_si512((const void *)(x + i));
        for (; i + 16 <= n; i += 8) {
            PF_AHEAD(x + i);
            const __m512i nx = _mm512_loadu_si512((const void *)(x + i + 8));
            if (stream)
                _mm512_stream_si512((void *)(y + i), c);
            else
                _mm512_storeu_si512((void *)(y + i), c);
            mx = _mm512_max_epu64(mx, c);
            c = nx;
        }
        if (stream)
            _mm512_stream_si512((void *)(y + i), c);
        else
            _mm512_storeu_si512((void *)(y + i), c);
        mx = _mm512_max_epu64(mx, c);
        i += 8;
    }
    const uint64_t top = _mm512_reduce_max_epu64(mx);
    m = top > m ? top : m;
    for (; i < n; i++) {
        const int64_t v = x[i];
        y[i] = v;
        m = (uint64_t)v > m ? (uint64_t)v : m;
    }
    return m;
}
#endif

static uint64_t i64_row(const int64_t *x, int64_t *y, double *z, Py_ssize_t n, int stream)
{
    uint64_t m = 0;
    Py_ssize_t i = 0;
#if CODEDML_SSE2 && defined(__x86_64__) && defined(__GNUC__)
    if (i64_avx512_ok && y && !z)
        return i64_row512(x, y, n, stream);
#endif
#if CODEDML_SSE2 && defined(__x86_64__)
    i = head(y, sizeof(int64_t), n, stream);
    i64_scalar(x, y, z, 0, i, stream, &m);
    const Py_ssize_t start = i;
    __m128i big = _mm_setzero_si128();
    __m128d mx = _mm_setzero_pd();
    const uintptr_t rel = y ? ((uintptr_t)(y + i) - (uintptr_t)(x + i)) & 4095 : 0;
    if (rel && rel < I64_LEAD && n - i >= 16) {
        __m128i c0 = _mm_loadu_si128((const __m128i *)(x + i)),
                c1 = _mm_loadu_si128((const __m128i *)(x + i + 2)),
                c2 = _mm_loadu_si128((const __m128i *)(x + i + 4)),
                c3 = _mm_loadu_si128((const __m128i *)(x + i + 6));
        for (; i + 16 <= n; i += 8) {
            PF_AHEAD(x + i);
            const __m128i n0 = _mm_loadu_si128((const __m128i *)(x + i + 8)),
                          n1 = _mm_loadu_si128((const __m128i *)(x + i + 10)),
                          n2 = _mm_loadu_si128((const __m128i *)(x + i + 12)),
                          n3 = _mm_loadu_si128((const __m128i *)(x + i + 14));
            i64_four(c0, c1, y + i, z ? z + i : NULL, stream, &big, &mx);
            i64_four(c2, c3, y + i + 4, z ? z + i + 4 : NULL, stream, &big, &mx);
            c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        }
        i64_four(c0, c1, y + i, z ? z + i : NULL, stream, &big, &mx);
        i64_four(c2, c3, y + i + 4, z ? z + i + 4 : NULL, stream, &big, &mx);
        i += 8;
    }
    for (; i + 4 <= n; i += 4) {
        if (!((i - start) & 7))   /* one a cache line, as row_d (PFD) */
            PF_AHEAD(x + i);
        i64_four(_mm_loadu_si128((const __m128i *)(x + i)),
                 _mm_loadu_si128((const __m128i *)(x + i + 2)), y ? y + i : NULL,
                 z ? z + i : NULL, stream, &big, &mx);
    }
    int64_t b[2];
    _mm_storeu_si128((__m128i *)b, big);
    if (b[0] | b[1]) {   /* a value outside [0, 2**52): convert and compare exactly */
        for (Py_ssize_t j = start; j < i; j++) {
            int64_t v = x[j];
            if (z)
                z[j] = (double)v;
            m = (uint64_t)v > m ? (uint64_t)v : m;
        }
    } else if (i > start) {
        double t[2];
        _mm_storeu_pd(t, mx);
        uint64_t top = (uint64_t)(t[0] > t[1] ? t[0] : t[1]);
        m = top > m ? top : m;
    }
#endif
    i64_scalar(x, y, z, i, n, stream, &m);
    return m;
}

/* copy_i64(dst, src, wide=None, stream=False) -> int: int64 ``src`` copied into int64 ``dst``
   and, with ``wide`` (float64), converted to double there in the same loop: the systematic
   tasks of a GF(p) code and the float64 operand of its parity GEMM from one read of the
   residues. Returns the largest value of ``src`` read as unsigned (0 when empty): every value
   is a residue of GF(p), in [0, p), exactly when that is below p (a negative one reads as
   2**63 or more), so the copy is also the operand's range check. */
static PyObject *copy_i64(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *names[] = {"dst", "src", "wide", "stream", NULL};
    PyObject *odst, *osrc, *owide = Py_None;
    int stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Op:copy_i64", names, &odst, &osrc, &owide,
                                     &stream))
        return NULL;
    Py_buffer d, s, w;
    PyObject *const objs[3] = {odst, osrc, owide};
    Py_buffer *const bufs[3] = {&d, &s, &w};
    int have[3];
    static const char *const nm[3] = {"dst", "src", "wide"};
    if (get_buffers("copy_i64", 3, objs, bufs, "wro", nm, have) < 0)
        return NULL;
    const int have_w = have[2];
    PyObject *result = NULL;
    Py_ssize_t rows, cols, st[3] = {0, 0, 0};
    if (!is_i64(&d) || !is_i64(&s) || (have_w && kind(&w) != 'd')) {
        PyErr_SetString(PyExc_TypeError,
                        "copy_i64: `dst` and `src` must be int64, `wide` float64");
        goto done;
    }
    if (same_rows("copy_i64", &d, &s, have_w ? &w : NULL, &rows, &cols, st) < 0)
        goto done;
    {
        char *pd = (char *)d.buf, *pw = have_w ? (char *)w.buf : NULL;
        const char *ps = (const char *)s.buf;
        uint64_t m = 0;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++) {
            uint64_t v = i64_row((const int64_t *)(ps + r * st[1]), (int64_t *)(pd + r * st[0]),
                                 pw ? (double *)(pw + r * st[2]) : NULL, cols, stream);
            m = v > m ? v : m;
        }
#if CODEDML_SSE2
        if (stream)
            _mm_sfence();
#endif
        Py_END_ALLOW_THREADS
        result = PyLong_FromUnsignedLongLong((unsigned long long)m);
    }
done:
    release_buffers(3, bufs, have);
    return result;
}

/* mod_store(dst, src, p, stream=False): float64 ``src`` holding integers in [0, 2**52) (the
   exact products of a GF(p) encode's GEMM) written into int64 ``dst`` reduced mod ``p``, in
   one loop, all in double arithmetic, exact at these magnitudes: with T = 2**52, x + T - T
   == x tells an integer; q = (x / p + T) - T is the quotient rounded to nearest (x / p from
   a multiply by 1 / p, within half a unit), r = x - q p is an exact integer in [-p, p],
   corrected once into [0, p), and r + T read as bits, less T's, is r as int64. Two values
   per SSE2 operation. A value of ``src`` outside [0, 2**52) or not an integer (it cannot be
   an exact product) raises ValueError after the loop, naming the first row it was found in
   (``dst`` then holds garbage there). */
static inline int64_t mod_one(double v, double inv, double pd, int *bad)
{
    const double T = 4503599627370496.0;
    int good = (v >= 0.0) & (v < T);
    double x = good ? v : 0.0;
    *bad |= !good | ((x + T) - T != x);
    double q = (x * inv + T) - T;
    double r = x - q * pd;
    r += r < 0.0 ? pd : 0.0;
    r -= r >= pd ? pd : 0.0;
    return (int64_t)r;
}

static void mod_row(const double *x, int64_t *y, Py_ssize_t n, double inv, double pd,
                    int stream, int *bad)
{
    Py_ssize_t i = 0;
#if CODEDML_SSE2
    i = head(y, sizeof(int64_t), n, stream);
    for (Py_ssize_t j = 0; j < i; j++)
        y[j] = mod_one(x[j], inv, pd, bad);
    const __m128d T = _mm_set1_pd(4503599627370496.0), vinv = _mm_set1_pd(inv);
    const __m128d vp = _mm_set1_pd(pd), zero = _mm_setzero_pd();
    const __m128i tbits = _mm_set1_epi64x(0x4330000000000000LL);
    __m128d ok = _mm_castsi128_pd(_mm_set1_epi32(-1));
    for (; i + 2 <= n; i += 2) {
        __m128d v = _mm_loadu_pd(x + i);
        __m128d good = _mm_and_pd(_mm_cmpge_pd(v, zero), _mm_cmplt_pd(v, T)); /* NaN: no */
        v = _mm_and_pd(v, good);
        good = _mm_and_pd(good, _mm_cmpeq_pd(_mm_sub_pd(_mm_add_pd(v, T), T), v));
        ok = _mm_and_pd(ok, good);
        __m128d q = _mm_sub_pd(_mm_add_pd(_mm_mul_pd(v, vinv), T), T);
        __m128d r = _mm_sub_pd(v, _mm_mul_pd(q, vp));
        r = _mm_add_pd(r, _mm_and_pd(_mm_cmplt_pd(r, zero), vp));
        r = _mm_sub_pd(r, _mm_and_pd(_mm_cmpge_pd(r, vp), vp));
        __m128i ri = _mm_sub_epi64(_mm_castpd_si128(_mm_add_pd(r, T)), tbits);
        if (stream)
            _mm_stream_si128((__m128i *)(y + i), ri);
        else
            _mm_storeu_si128((__m128i *)(y + i), ri);
    }
    *bad |= _mm_movemask_pd(ok) != 3;
#else
    (void)stream;
#endif
    for (; i < n; i++)
        y[i] = mod_one(x[i], inv, pd, bad);
}

static PyObject *mod_store(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *names[] = {"dst", "src", "p", "stream", NULL};
    PyObject *odst, *osrc;
    long long p;
    int stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOL|p:mod_store", names, &odst, &osrc, &p,
                                     &stream))
        return NULL;
    if (p < 2 || p > 2147483647LL) {
        PyErr_Format(PyExc_ValueError, "mod_store: `p` must be between 2 and 2**31-1, got %lld", p);
        return NULL;
    }
    Py_buffer d, s;
    PyObject *const objs[2] = {odst, osrc};
    Py_buffer *const bufs[2] = {&d, &s};
    int have[2];
    static const char *const nm[2] = {"dst", "src"};
    if (get_buffers("mod_store", 2, objs, bufs, "wr", nm, have) < 0)
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows, cols, st[3] = {0, 0, 0};
    if (!is_i64(&d) || kind(&s) != 'd') {
        PyErr_SetString(PyExc_TypeError, "mod_store: `dst` must be int64 and `src` float64");
        goto done;
    }
    if (same_rows("mod_store", &d, &s, NULL, &rows, &cols, st) < 0)
        goto done;
    {
        char *pdst = (char *)d.buf;
        const char *ps = (const char *)s.buf;
        const double inv = 1.0 / (double)p, pd = (double)p;
        Py_ssize_t bad = -1;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < rows; r++) {
            int b = 0;
            mod_row((const double *)(ps + r * st[1]), (int64_t *)(pdst + r * st[0]), cols, inv,
                    pd, stream, &b);
            if (b && bad < 0)
                bad = r;
        }
#if CODEDML_SSE2
        if (stream)
            _mm_sfence();
#endif
        Py_END_ALLOW_THREADS
        if (bad >= 0)
            PyErr_Format(PyExc_ValueError,
                         "mod_store: `src` row %zd holds a value that is not an integer in "
                         "[0, 2**52) (not an exact GF(p) product)", bad);
        else {
            Py_INCREF(Py_None);
            result = Py_None;
        }
    }
done:
    release_buffers(2, bufs, have);
    return result;
}

/* ------------------------------------------------------------------ linear combinations */

/* lincomb(G, srcs, dsts, sq=None, stream=False, pairs=False, simd=-1, p=0, run=0) -> None or int

   The encode's generator products without BLAS: output row ``o`` is ``sum_j G[o, j] *
   srcs[j]`` (``G`` a C-ordered float64 m x k matrix), every product and sum in double,
   rounded once into the destination (float64 or float32). ``srcs`` is a sequence of k
   float64 or float32 arrays (1-D: one row; 2-D with contiguous rows at any stride) of at
   most the outputs' rows and columns: what lies beyond a source's extent reads as zero (a
   block cut short by the split's padding), and a source with nothing in a tile is skipped.
   ``dsts`` is a sequence of arrays of one shape (R x C; 1-D: one row) and one dtype, rows
   contiguous. Either may instead be one 2-D array whose rows are the sources (or the
   outputs): chunks of matrices, without a view per row. With ``pairs`` the outputs are
   complex, as float arrays of interleaved real and imaginary parts (``z.view(float)``, 2C
   columns): output ``o`` takes G's rows 2o (real part) and 2o + 1 (imaginary part).
   ``sq`` (float64, one entry per output) gets each output's sum of squared magnitudes of
   the double values (before rounding) added. ``stream``: non-temporal stores for the rows
   written one at a time (identity rows as their sources load, a diagonal pass, the plain-C
   path's rows; 64-byte aligned at the tile), and for the AVX-512 passes, which write
   several rows side by side, where each row of the pass starts on a cache line (ordinary
   stores otherwise, and for the AVX2 passes).
   ``simd``: -1 the best this CPU has (``SIMD``: 2 AVX-512F, 1 AVX2 and FMA, 0 neither), or
   at most that level (0: plain C). With ``p`` > 0 (GF(p)): int64 sources and outputs,
   ``G`` integers in [0, p), every sum exact (k (p - 1)**2 at most 2**52, refused past
   it), each reduced mod p; returns the largest source value read as unsigned (the range
   check: a negative value, or one at or past 2**52, returns the largest uint64), else None.
   ``run`` > 0: ``srcs`` is one contiguous 1-D array whose values ``j run .. (j + 1) run``
   are source j (one row of at most ``run`` values, the last ones cut short or empty where
   the array ends: a C-ordered matrix split into blocks of rows, without a view per block).

   Walk: per row of the outputs, per tile of W columns (the k sources' tile, widened to
   double: about 32 KiB, in L1, where several passes read it; about 256 KiB where at most one
   does; with one pass of at most 4 rows a whole float64 source is read where it lies), per
   pass of up to four consecutive rows alike in density (eight dense rows on AVX-512 with
   16 sources or more, or 8 or more and 24 rows or more; a systematic code's identity rows together, its parity rows
   together), the sources with a coefficient in the pass accumulate in registers, 16 columns (AVX-512) or 8 (AVX2) at a time, and each row is
   rounded, interleaved (pairs) or reduced (GF(p)) and stored with its squares; the plain-C
   path computes into scratch rows and stores them by SSE2. An identity row (coefficient
   exactly 1, the source's own element type, not ``pairs``) is instead written by the loop
   that loads its source into the tile, with its squares (GF(p): the residues as they are,
   their range checked in the same loop), wherever the source has values in the tile (one
   cut short within it: copied as far as it goes, the row zeroed after); each value stored
   as loaded, as numpy's copy of the block stores it (a pass would add 1.0 times it to +0,
   which turns -0.0 into +0.0 and, under denormals-are-zero, a subnormal value into 0).
   Each source
   is read from memory once and each output written once: where a BLAS GEMM with k of a few
   to a few tens runs far below its peak and writes through the cache, this runs at the FMA
   units' rate or the memory's. The GIL is released during the loop. A destination may not
   overlap another, a source, ``G``, ``sq`` or its own rows, nor ``sq`` a source or ``G``
   (ValueError naming them). Over GF(p) on AVX-512, where no pass is diagonal (a systematic
   code's identity rows, each alone with its source, keep the walks above), there are 8 to
   24 rows and every sum is at most 2**50, the walk has no tile and no passes
   (lc_run_direct): per step of 8 columns each source's residues are loaded where they lie
   and their terms added into every row's sum in registers; the same exact sums, so the
   same outputs for residues in [0, p), and the same range check (with a value out of the
   field the outputs are not defined, on any walk: the caller raises before using them). */

typedef struct {
    const char *p;
    Py_ssize_t rows, cols, stride;   /* stride in bytes */
    char k;                          /* 'd', 'f' or 'q' (GF(p): int64 residues) */
} LcSrc;

typedef struct {
    char *p;
    Py_ssize_t stride;
} LcDst;

/* The tile: the k sources' rows of W columns widened to double. Where several passes read it
   (dense generators) it is about LC_TILE_BYTES, in L1. Where at most one pass does (a
   systematic code: identity rows, written as their sources are loaded, and one pass of
   parity rows) it is about LC_TILE_BIG, half of a 512 KiB L2 (W at most LC_MAX_W; the
   accumulating walk, which has no tile, sizes W by its sums instead, LC_ACC_BYTES): each
   source is then read from memory in runs of W values, where 32 KiB shared by 15 sources
   made runs of about 2 KiB from 15 places at once, which memory served far below its
   streaming rate. There each source's tile row starts LC_PAD doubles (a cache line) after
   the previous one ends, so that rows a multiple of 4 KiB long do not all fall into the same
   sets of the L1 cache. */
#define LC_TILE_BYTES 32768
#define LC_TILE_BIG 262144
#define LC_MAX_W 8192
#define LC_PAD 8
#define LC_GROUP 16                  /* columns per register block */
#define LC_WIDE_K 16                 /* the fewest sources for passes of 8 dense rows */
/* the accumulating walk's sums (lc_run_acc): at most 4 rows of W doubles, in L2 */
#ifndef LC_ACC_BYTES
#define LC_ACC_BYTES 262144
#endif
#define LC_ACC_GROUP 4               /* sources whose terms the walk adds at once */
#ifndef LC_ACC_PAD
#define LC_ACC_PAD 40
#endif

/* The next tile's source rows, asked for (prefetched into L2) a few cache lines per step of
   this tile's passes, so that memory serves them while the passes compute instead of after:
   a tile's loads otherwise wait for memory with the FMA units idle, then its passes compute
   with the memory idle. Only where several dense passes read the tile: measured side by
   side in one process on the 2-core AMD EPYC (AVX2), 1024 and 2048, real MDS(8, 6) and
   MDS(17, 15) non-systematic and systematic MatDot(17, 8) float64 encoded in 0.89-0.97x the
   time, float32 0.90-1.0x; with one pass (a systematic code's parity rows beside the copies
   of its sources, which already keep the memory busy) the systematic MDS encodes took
   1.08-1.09x, so it does not ask. Over GF(p) it asked for none either until the
   thirty-first session (1.02x then, the L1 tile's 2 KiB runs at 15 sources); with the
   large tile for more than 8 sources (lincomb) and the passes' rows streamed, it does (the
   AVX-512 passes; the AVX2 ones take no prefetch, and lincomb sets none up for them).
   ``p[i]``, ``n[i]``: the i-th run's first line and its bytes; ``per``: lines per step
   (0: none). */
typedef struct {
    const char **p;
    Py_ssize_t *n;
    int runs, i;
    Py_ssize_t off;
    int per;
} LcPf;

static inline void lc_pf(LcPf *f)
{
#if CODEDML_SSE2
    if (!f)
        return;
    for (int t = 0; t < f->per && f->i < f->runs; t++) {
        _mm_prefetch(f->p[f->i] + f->off, _MM_HINT_T1);
        f->off += 64;
        if (f->off >= f->n[f->i]) {
            f->i++;
            f->off = 0;
        }
    }
#else
    (void)f;
#endif
}

static int lc_simd_ok = 0;           /* 2: AVX-512F, 1: AVX2 and FMA, 0: neither (at import) */

/* bytes per element of a source of kind ``k`` ('f' float32; 'd' float64, 'q' int64) */
static inline Py_ssize_t lc_size(char k)
{
    return k == 'f' ? 4 : 8;
}

/* the range check's running largest value ``*umax`` with ``top`` (a row's largest read as
   unsigned) taken in: any value at or past 2**52 (negative, or out of every field) counts
   as the largest uint64 */
static inline void lc_top(uint64_t *umax, uint64_t top)
{
    top = top >> 52 ? UINT64_MAX : top;
    *umax = top > *umax ? top : *umax;
}

/* Source ``s``'s row ``r``, columns [c0, c0 + w), widened into ``t``, zero up to ``wp``;
   returns how many of its values lie there (0: nothing written, the tile is all zero) */
static Py_ssize_t lc_load(const LcSrc *s, Py_ssize_t r, Py_ssize_t c0, Py_ssize_t w,
                          Py_ssize_t wp, double *t, uint64_t *umax)
{
    if (r >= s->rows || c0 >= s->cols)
        return 0;
    Py_ssize_t n = s->cols - c0 < w ? s->cols - c0 : w;
    const char *row = s->p + r * s->stride;
    if (s->k == 'd') {
        memcpy(t, (const double *)row + c0, (size_t)n * sizeof(double));
    } else if (s->k == 'q') {
        /* int64 residues, widened exactly by copy_i64's row loop (no int64 copy); the largest
           read as unsigned kept in *umax (the range check), any value at or past 2**52
           (negative, or out of every field) reported as the largest uint64 */
        lc_top(umax, i64_row((const int64_t *)row + c0, NULL, t, n, 0));
    } else {
        const float *f = (const float *)row + c0;
        Py_ssize_t i = 0;
#if CODEDML_SSE2
        for (; i + 4 <= n; i += 4) {   /* widened four at a time (t is 16-byte aligned) */
            const __m128 v = _mm_loadu_ps(f + i);
            _mm_store_pd(t + i, _mm_cvtps_pd(v));
            _mm_store_pd(t + i + 2, _mm_cvtps_pd(_mm_movehl_ps(v, v)));
        }
#endif
        for (; i < n; i++)
            t[i] = f[i];
    }
    if (n < wp)
        memset(t + n, 0, (size_t)(wp - n) * sizeof(double));
    return n;
}

/* output rows of one tile in plain C: y[r] = sum_j g[r][j] x_j for r < nr (at most 4: the
   plain-C level never groups more) */
static void lc_rows_c(const double *const *g, int nr, const int *live, int nl,
                      const double *const *xp, Py_ssize_t wp, double *const *y)
{
    for (int r = 0; r < nr; r++) {
        double *restrict yr = y[r];
        for (Py_ssize_t c = 0; c < wp; c++)
            yr[c] = 0.0;
        for (int q = 0; q < nl; q++) {
            const double a = g[r][live[q]];
            const double *restrict x = xp[live[q]];
            for (Py_ssize_t c = 0; c < wp; c++)
                yr[c] += a * x[c];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CODEDML_AVX2 1
/* The same in registers, written straight into the destinations: NR rows x 2 vectors of
   columns per step (AVX-512: 16 columns, AVX2: 8), 2 NR accumulators, each source's two
   vectors loaded once for all NR rows, the sources in order (one fused multiply-add per
   term); then per row its squares (NR more accumulators), the rounding into float32 or the
   interleaving of a complex output's rows (``pairs``: rows h, h + 1 into ``dst[h / 2]``),
   and the stores, streamed with ``st`` (every destination 64-byte aligned at the tile). A
   step past the last column ``w`` goes through a buffer, its valid part copied. ``dst[h]``
   points at the tile's first column of row h's destination; ``sq[h]`` gets row h's sum. */
#define LC_A512 __attribute__((target("avx512f")))
#define LC_A2 __attribute__((target("avx2,fma")))
#define LC_INLINE static inline __attribute__((always_inline))
/* The fused walk (lc512_fused_body and its loop) reads its sources as whole aligned 64-byte
   lines: the first line of each source from before the source's start, and, for sources off
   a line's start, the line after a step's last value. Each such line holds at least one
   value of the source (the step's last line begins before the step's end), so it lies in a
   page the source uses: the load cannot fault, and the values outside the source are
   permuted away, never used. AddressSanitizer (launch/sanitize.sh) reports such reads all the
   same; these functions are left out of its checks, and every other one is checked. */
#define LC_NO_ASAN __attribute__((no_sanitize_address))

LC_INLINE LC_A512 void lc512_put(char kd, char *base, Py_ssize_t c, __m512d a, __m512d b,
                                 Py_ssize_t left, int st)
{
    if (kd == 'd') {
        double *p = (double *)base + c;
        if (left >= 16 && st) {
            _mm512_stream_pd(p, a);
            _mm512_stream_pd(p + 8, b);
        } else if (left >= 16) {
            _mm512_storeu_pd(p, a);
            _mm512_storeu_pd(p + 8, b);
        } else {
            double t[16];
            _mm512_storeu_pd(t, a);
            _mm512_storeu_pd(t + 8, b);
            memcpy(p, t, (size_t)left * sizeof(double));
        }
        return;
    }
    float *p = (float *)base + c;
    const __m256 fa = _mm512_cvtpd_ps(a), fb = _mm512_cvtpd_ps(b);
    if (left >= 16 && st) {
        _mm256_stream_ps(p, fa);
        _mm256_stream_ps(p + 8, fb);
    } else if (left >= 16) {
        _mm256_storeu_ps(p, fa);
        _mm256_storeu_ps(p + 8, fb);
    } else {
        float t[16];
        _mm256_storeu_ps(t, fa);
        _mm256_storeu_ps(t + 8, fb);
        memcpy(p, t, (size_t)left * sizeof(float));
    }
}

/* GF(p) ('q') on AVX-512: a pass's exact integer sums x in [0, 2**52] reduced mod p into
   int64 residues, 16 columns a step, in the two forms of LC2Q_MOD (see there for why each is
   exact): FL (u = md[2] > 0, every sum at most 2**50) q = floor(fl(x u)), five operations;
   else q = x fl(1 / p) rounded to the nearest integer and p added where the remainder is
   negative, seven. Stored as the bits of 2**52 + r less those of 2**52. P, I (u, or
   fl(1 / p)) and T (2**52) are the caller's registers. Until the thirtieth session this path
   ran the nearest-integer form with a second correction (r >= p, never taken) for every p
   and formed the sums' squares, which nobody reads over GF(p): 12 operations a vector where
   the FL form takes 5 (the AVX2 path had the two forms already). */
LC_INLINE LC_A512 __m512i lc512_mod(const int FL, __m512d x, __m512d P, __m512d I, __m512d T)
{
    __m512d r;
    if (FL) {
        const __m512d q = _mm512_roundscale_pd(_mm512_mul_pd(x, I),
                                               _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
        r = _mm512_fnmadd_pd(q, P, x);
    } else {
        const __m512d q = _mm512_sub_pd(_mm512_fmadd_pd(x, I, T), T);
        r = _mm512_fnmadd_pd(q, P, x);
        r = _mm512_mask_add_pd(r, _mm512_cmp_pd_mask(r, _mm512_setzero_pd(), _CMP_LT_OQ), r, P);
    }
    return _mm512_sub_epi64(_mm512_castpd_si512(_mm512_add_pd(r, T)), _mm512_castpd_si512(T));
}

LC_INLINE LC_A512 void lc512_put_q(const int FL, char *base, Py_ssize_t c, __m512d a, __m512d b,
                                   Py_ssize_t left, int st, __m512d P, __m512d I, __m512d T)
{
    int64_t *p = (int64_t *)base + c;
    const __m512i u = lc512_mod(FL, a, P, I, T), v = lc512_mod(FL, b, P, I, T);
    if (left >= 16 && st) {
        _mm512_stream_si512((void *)p, u);
        _mm512_stream_si512((void *)(p + 8), v);
    } else if (left >= 16) {
        _mm512_storeu_si512((void *)p, u);
        _mm512_storeu_si512((void *)(p + 8), v);
    } else {
        int64_t t[16];
        _mm512_storeu_si512((void *)t, u);
        _mm512_storeu_si512((void *)(t + 8), v);
        memcpy(p, t, (size_t)left * sizeof(int64_t));
    }
}

/* 16 complex values: real parts ra (0-7), rb (8-15), imaginary ia, ib, interleaved */
LC_INLINE LC_A512 void lc512_put_pair(char kd, char *base, Py_ssize_t c, __m512d ra, __m512d rb,
                                      __m512d ia, __m512d ib, Py_ssize_t left, int st)
{
    if (kd == 'd') {
        const __m512i lo = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
        const __m512i hi = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
        __m512d v[4] = {_mm512_permutex2var_pd(ra, lo, ia), _mm512_permutex2var_pd(ra, hi, ia),
                        _mm512_permutex2var_pd(rb, lo, ib), _mm512_permutex2var_pd(rb, hi, ib)};
        double *p = (double *)base + 2 * c;
        if (left >= 16) {
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                if (st)
                    _mm512_stream_pd(p + 8 * i, v[i]);
                else
                    _mm512_storeu_pd(p + 8 * i, v[i]);
            }
        } else {
            double t[32];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                _mm512_storeu_pd(t + 8 * i, v[i]);
            memcpy(p, t, (size_t)left * 2 * sizeof(double));
        }
        return;
    }
    const __m512i idx = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512 v[2] = {
        _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm512_cvtpd_ps(ra)), idx,
                               _mm512_castps256_ps512(_mm512_cvtpd_ps(ia))),
        _mm512_permutex2var_ps(_mm512_castps256_ps512(_mm512_cvtpd_ps(rb)), idx,
                               _mm512_castps256_ps512(_mm512_cvtpd_ps(ib)))};
    float *p = (float *)base + 2 * c;
    if (left >= 16) {
        #pragma GCC unroll 4
        for (int i = 0; i < 2; i++) {
            if (st)
                _mm512_stream_ps(p + 16 * i, v[i]);
            else
                _mm512_storeu_ps(p + 16 * i, v[i]);
        }
    } else {
        float t[32];
        _mm512_storeu_ps(t, v[0]);
        _mm512_storeu_ps(t + 16, v[1]);
        memcpy(p, t, (size_t)left * 2 * sizeof(float));
    }
}

/* A pass's NR sums over the live sources for the 16 columns from c (a: the first 8, b: the
   rest), the sources in order, one fused multiply-add per term: the real and GF(p) bodies'
   common step */
LC_INLINE LC_A512 void lc512_sums(const int NR, const double *const *g, const int *live, int nl,
                                  const double *const *xp, Py_ssize_t c, __m512d *a, __m512d *b)
{
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        a[r] = b[r] = _mm512_setzero_pd();
    for (int q = 0; q < nl; q++) {
        const int j = live[q];
        const double *x = xp[j] + c;
        const __m512d x0 = _mm512_loadu_pd(x), x1 = _mm512_loadu_pd(x + 8);
        #pragma GCC unroll 8
        for (int r = 0; r < NR; r++) {
            const __m512d u = _mm512_set1_pd(g[r][j]);
            a[r] = _mm512_fmadd_pd(u, x0, a[r]);
            b[r] = _mm512_fmadd_pd(u, x1, b[r]);
        }
    }
}

LC_INLINE LC_A512 void lc512_body(const int NR, const double *const *g, const int *live, int nl,
                                  const double *const *xp, Py_ssize_t w,
                                  char *const *dst, char kd, int pairs, int st, double *sq,
                                  LcPf *pf)
{
    __m512d s[8];
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        s[r] = _mm512_setzero_pd();
    for (Py_ssize_t c = 0; c < w; c += 16) {
        lc_pf(pf);
        __m512d a[8], b[8];
        lc512_sums(NR, g, live, nl, xp, c, a, b);
        #pragma GCC unroll 8
        for (int r = 0; r < NR; r++)
            s[r] = _mm512_fmadd_pd(b[r], b[r], _mm512_fmadd_pd(a[r], a[r], s[r]));
        if (pairs)
            #pragma GCC unroll 8
            for (int r = 0; r < NR; r += 2)
                lc512_put_pair(kd, dst[r / 2], c, a[r], b[r], a[r + 1], b[r + 1], w - c, st);
        else
            #pragma GCC unroll 8
            for (int r = 0; r < NR; r++)
                lc512_put(kd, dst[r], c, a[r], b[r], w - c, st);
    }
    #pragma GCC unroll 8
    for (int r = 0; r < NR; r++)
        sq[r] = _mm512_reduce_add_pd(s[r]);
}

/* lc512_body for GF(p) (as lc2q_body): the NR rows' sums over the live sources reduced and
   stored, no sums of squares; the next tile prefetched as lc512_body does */
LC_INLINE LC_A512 void lc512q_body(const int NR, const int FL, const double *const *g,
                                   const int *live, int nl, const double *const *xp,
                                   Py_ssize_t w, char *const *dst, int st, const double *md, LcPf *pf)
{
    const __m512d T = _mm512_set1_pd(4503599627370496.0), P = _mm512_set1_pd(md[0]);
    const __m512d I = _mm512_set1_pd(FL ? md[2] : md[1]);
    for (Py_ssize_t c = 0; c < w; c += 16) {
        lc_pf(pf);
        __m512d a[8], b[8];
        lc512_sums(NR, g, live, nl, xp, c, a, b);
        #pragma GCC unroll 8
        for (int r = 0; r < NR; r++)
            lc512_put_q(FL, dst[r], c, a[r], b[r], w - c, st, P, I, T);
    }
}

/* a GF(p) pass of NR rows (its sums of squares: none) */
LC_INLINE LC_A512 void lc512q(const int NR, const double *const *g, const int *live, int nl,
                              const double *const *xp, Py_ssize_t w, char *const *dst, int st,
                              double *sq, const double *md, LcPf *pf)
{
    if (md[2] > 0.0)
        lc512q_body(NR, 1, g, live, nl, xp, w, dst, st, md, pf);
    else
        lc512q_body(NR, 0, g, live, nl, xp, w, dst, st, md, pf);
    for (int r = 0; r < NR; r++)
        sq[r] = 0.0;
}

LC_A512 static void lc512_2(const double *const *g, const int *live, int nl, const double *const *xp,
                            Py_ssize_t w, char *const *dst, char kd, int pairs,
                            int st, double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc512q(2, g, live, nl, xp, w, dst, st, sq, md, pf);
    else
        lc512_body(2, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_A512 static void lc512_4(const double *const *g, const int *live, int nl, const double *const *xp,
                            Py_ssize_t w, char *const *dst, char kd, int pairs,
                            int st, double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc512q(4, g, live, nl, xp, w, dst, st, sq, md, pf);
    else
        lc512_body(4, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_A512 static void lc512_8(const double *const *g, const int *live, int nl, const double *const *xp,
                            Py_ssize_t w, char *const *dst, char kd, int pairs,
                            int st, double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc512q(8, g, live, nl, xp, w, dst, st, sq, md, pf);
    else
        lc512_body(8, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_A512 static void lc512_1(const double *const *g, const int *live, int nl, const double *const *xp,
                        Py_ssize_t w, char *const *dst, char kd, int pairs, int st,
                        double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc512q(1, g, live, nl, xp, w, dst, st, sq, md, pf);
    else
        lc512_body(1, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_INLINE LC_A2 void lc2_put(char kd, char *base, Py_ssize_t c, __m256d a, __m256d b,
                             Py_ssize_t left, int st)
{
    if (kd == 'd') {
        double *p = (double *)base + c;
        if (left >= 8 && st) {
            _mm256_stream_pd(p, a);
            _mm256_stream_pd(p + 4, b);
        } else if (left >= 8) {
            _mm256_storeu_pd(p, a);
            _mm256_storeu_pd(p + 4, b);
        } else {
            double t[8];
            _mm256_storeu_pd(t, a);
            _mm256_storeu_pd(t + 4, b);
            memcpy(p, t, (size_t)left * sizeof(double));
        }
        return;
    }
    float *p = (float *)base + c;
    const __m256 f = _mm256_set_m128(_mm256_cvtpd_ps(b), _mm256_cvtpd_ps(a));
    if (left >= 8 && st)
        _mm256_stream_ps(p, f);
    else if (left >= 8)
        _mm256_storeu_ps(p, f);
    else {
        float t[8];
        _mm256_storeu_ps(t, f);
        memcpy(p, t, (size_t)left * sizeof(float));
    }
}

/* GF(p) ('q'): a pass's exact integer sums x in [0, 2**52] reduced mod p into int64 tasks,
   p and the constants held in registers, md = {p, 1 / p, u} (lincomb's setup). Stored as
   the bits of 2**52 + r less those of 2**52. Two quotients:
   - FL (u > 0, every sum at most 2**50): q = floor(fl(x u)), u the double just above
     fl(1 / p). fl(1 / p) is within half an ulp of 1 / p and an ulp of 1 / p is at most
     2**-52 / p, so u = (1 / p)(1 + d) with 0 < d <= 1.5 2**-52. Let x = Q p + r0, 0 <= r0
     < p. Then x u >= x / p >= Q, an integer below 2**53 (a double), so fl(x u) >= Q.
     And x u <= Q + (p - 1) / p + x d / p <= Q + 1 - 0.625 / p (x d <= 0.375), while the
     doubles below Q + 1 are at most (Q + 1) 2**-52 <= (x + p) 2**-52 / p < 0.26 / p
     apart: only a value within 0.13 / p of Q + 1 rounds up to it, so fl(x u) < Q + 1. Hence q = Q, and r = x - q p = r0, exact by the fused
     multiply-add, already lies in [0, p). Five operations.
   - else: q = x fl(1 / p) rounded to the nearest integer. fl(1 / p) is within 2**-53 of
     1 / p relatively, so for x in [0, 2**52] x fl(1 / p) is within 1 / (2 p) of x / p, q
     is the nearest integer to it, and r = x - q p (exact) lies within (p + 1) / 2 of 0:
     in (-p, p), and in [0, p) once p is added where it is negative. Eight operations.
   Side by side (2-core AMD EPYC, AVX2; benchmarks/kernel_ab.py), against the generic pass
   with the second form: the GF(65537) polynomial code's encode 0.84-0.87x the time,
   MDS(17, 15) 0.94-0.98x. */
#define LC2Q_MOD(x, out)                                                                   \
    do {                                                                                  \
        if (FL) {                                                                         \
            const __m256d q_ = _mm256_round_pd(_mm256_mul_pd((x), I),                     \
                                               _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); \
            const __m256d r_ = _mm256_fnmadd_pd(q_, P, (x));                              \
            (out) = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(r_, T)), Ti);      \
        } else {                                                                          \
            const __m256d q_ = _mm256_sub_pd(_mm256_fmadd_pd((x), I, T), T);              \
            __m256d r_ = _mm256_fnmadd_pd(q_, P, (x));                                    \
            r_ = _mm256_add_pd(r_, _mm256_and_pd(_mm256_cmp_pd(r_, Z, _CMP_LT_OQ), P));    \
            (out) = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(r_, T)), Ti);      \
        }                                                                                 \
    } while (0)

/* The NR rows' sums over the live sources at columns c .. c + 7 (a: the first four, b: the
   next four), each source's terms added in order: the one step of the AVX2 pass bodies, real
   (lc2_body) and GF(p) (lc2q_body), as lc512_sums is of the AVX-512 ones */
LC_INLINE LC_A2 void lc2_sums(const int NR, const double *const *g, const int *live, int nl,
                              const double *const *xp, Py_ssize_t c, __m256d *a, __m256d *b)
{
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        a[r] = b[r] = _mm256_setzero_pd();
    for (int q = 0; q < nl; q++) {
        const int j = live[q];
        const double *x = xp[j] + c;
        const __m256d x0 = _mm256_loadu_pd(x), x1 = _mm256_loadu_pd(x + 4);
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            const __m256d u = _mm256_broadcast_sd(g[r] + j);
            a[r] = _mm256_fmadd_pd(u, x0, a[r]);
            b[r] = _mm256_fmadd_pd(u, x1, b[r]);
        }
    }
}

/* lc2_body for GF(p): the NR rows' sums over the live sources, reduced and stored (no sums
   of squares; no prefetch) */
LC_INLINE LC_A2 void lc2q_body(const int NR, const int FL, const double *const *g,
                               const int *live, int nl, const double *const *xp, Py_ssize_t w,
                               char *const *dst, int st, const double *md)
{
    const __m256d T = _mm256_set1_pd(4503599627370496.0), P = _mm256_set1_pd(md[0]);
    const __m256d I = _mm256_set1_pd(FL ? md[2] : md[1]), Z = _mm256_setzero_pd();
    const __m256i Ti = _mm256_castpd_si256(T);
    for (Py_ssize_t c = 0; c < w; c += 8) {
        __m256d a[4], b[4];
        lc2_sums(NR, g, live, nl, xp, c, a, b);
        const Py_ssize_t left = w - c;
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++) {
            __m256i u, v;
            LC2Q_MOD(a[r], u);
            LC2Q_MOD(b[r], v);
            int64_t *p = (int64_t *)dst[r] + c;
            if (left >= 8 && st) {
                _mm256_stream_si256((__m256i *)p, u);
                _mm256_stream_si256((__m256i *)(p + 4), v);
            } else if (left >= 8) {
                _mm256_storeu_si256((__m256i *)p, u);
                _mm256_storeu_si256((__m256i *)(p + 4), v);
            } else {
                int64_t t[8];
                _mm256_storeu_si256((__m256i *)t, u);
                _mm256_storeu_si256((__m256i *)(t + 4), v);
                memcpy(p, t, (size_t)left * sizeof(int64_t));
            }
        }
    }
}

/* a GF(p) pass of NR rows (its sums of squares: none) */
LC_INLINE LC_A2 void lc2q(const int NR, const double *const *g, const int *live, int nl,
                          const double *const *xp, Py_ssize_t w, char *const *dst, int st,
                          double *sq, const double *md)
{
    if (md[2] > 0.0)
        lc2q_body(NR, 1, g, live, nl, xp, w, dst, st, md);
    else
        lc2q_body(NR, 0, g, live, nl, xp, w, dst, st, md);
    for (int r = 0; r < NR; r++)
        sq[r] = 0.0;
}

/* 8 complex values: real parts ra (0-3), rb (4-7), imaginary ia, ib, interleaved */
LC_INLINE LC_A2 void lc2_put_pair(char kd, char *base, Py_ssize_t c, __m256d ra, __m256d rb,
                                  __m256d ia, __m256d ib, Py_ssize_t left, int st)
{
    if (kd == 'd') {
        const __m256d la = _mm256_unpacklo_pd(ra, ia), ha = _mm256_unpackhi_pd(ra, ia);
        const __m256d lb = _mm256_unpacklo_pd(rb, ib), hb = _mm256_unpackhi_pd(rb, ib);
        __m256d v[4] = {_mm256_permute2f128_pd(la, ha, 0x20), _mm256_permute2f128_pd(la, ha, 0x31),
                        _mm256_permute2f128_pd(lb, hb, 0x20), _mm256_permute2f128_pd(lb, hb, 0x31)};
        double *p = (double *)base + 2 * c;
        if (left >= 8) {
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++) {
                if (st)
                    _mm256_stream_pd(p + 4 * i, v[i]);
                else
                    _mm256_storeu_pd(p + 4 * i, v[i]);
            }
        } else {
            double t[16];
            #pragma GCC unroll 4
            for (int i = 0; i < 4; i++)
                _mm256_storeu_pd(t + 4 * i, v[i]);
            memcpy(p, t, (size_t)left * 2 * sizeof(double));
        }
        return;
    }
    const __m128 fra = _mm256_cvtpd_ps(ra), fia = _mm256_cvtpd_ps(ia);
    const __m128 frb = _mm256_cvtpd_ps(rb), fib = _mm256_cvtpd_ps(ib);
    __m256 v[2] = {_mm256_set_m128(_mm_unpackhi_ps(fra, fia), _mm_unpacklo_ps(fra, fia)),
                   _mm256_set_m128(_mm_unpackhi_ps(frb, fib), _mm_unpacklo_ps(frb, fib))};
    float *p = (float *)base + 2 * c;
    if (left >= 8) {
        #pragma GCC unroll 4
        for (int i = 0; i < 2; i++) {
            if (st)
                _mm256_stream_ps(p + 8 * i, v[i]);
            else
                _mm256_storeu_ps(p + 8 * i, v[i]);
        }
    } else {
        float t[16];
        _mm256_storeu_ps(t, v[0]);
        _mm256_storeu_ps(t + 8, v[1]);
        memcpy(p, t, (size_t)left * 2 * sizeof(float));
    }
}

/* a real pass ('d' or 'f'; pairs: complex outputs); GF(p) passes run lc2q */
LC_INLINE LC_A2 void lc2_body(const int NR, const double *const *g, const int *live, int nl,
                              const double *const *xp, Py_ssize_t w, char *const *dst,
                              char kd, int pairs, int st, double *sq, LcPf *pf)
{
    __m256d s[4];
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        s[r] = _mm256_setzero_pd();
    for (Py_ssize_t c = 0; c < w; c += 8) {
        lc_pf(pf);
        __m256d a[4], b[4];
        lc2_sums(NR, g, live, nl, xp, c, a, b);
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            s[r] = _mm256_fmadd_pd(b[r], b[r], _mm256_fmadd_pd(a[r], a[r], s[r]));
        if (pairs)
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r += 2)
                lc2_put_pair(kd, dst[r / 2], c, a[r], b[r], a[r + 1], b[r + 1], w - c, st);
        else
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                lc2_put(kd, dst[r], c, a[r], b[r], w - c, st);
    }
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++) {
        double t[4];
        _mm256_storeu_pd(t, s[r]);
        sq[r] = (t[0] + t[1]) + (t[2] + t[3]);
    }
}

LC_A2 static void lc2_2(const double *const *g, const int *live, int nl, const double *const *xp,
                        Py_ssize_t w, char *const *dst, char kd, int pairs, int st,
                        double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc2q(2, g, live, nl, xp, w, dst, st, sq, md);
    else
        lc2_body(2, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_A2 static void lc2_4(const double *const *g, const int *live, int nl, const double *const *xp,
                        Py_ssize_t w, char *const *dst, char kd, int pairs, int st,
                        double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc2q(4, g, live, nl, xp, w, dst, st, sq, md);
    else
        lc2_body(4, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

LC_A2 static void lc2_1(const double *const *g, const int *live, int nl, const double *const *xp,
                        Py_ssize_t w, char *const *dst, char kd, int pairs, int st,
                        double *sq, const double *md, LcPf *pf)
{
    if (kd == 'q')
        lc2q(1, g, live, nl, xp, w, dst, st, sq, md);
    else
        lc2_body(1, g, live, nl, xp, w, dst, kd, pairs, st, sq, pf);
}

/* int64 residues in [0, 2^52) as doubles, exactly: the bits of 2^52 + v less 2^52 (a value
   outside that range, which the identity row's copy reports, converts to garbage, never
   used: the call raises before any task is handed out) */
LC_INLINE LC_A512 __m512d lc512_widen_q(__m512i v)
{
    const __m512d two52 = _mm512_set1_pd(4503599627370496.0);
    return _mm512_sub_pd(_mm512_castsi512_pd(_mm512_or_si512(v, _mm512_castpd_si512(two52))), two52);
}

/* The accumulating walk's step (see lc_run_acc): ``acc[r][c] = fma(g[q][r], x_q[c],
   acc[r][c])`` for the NR rows, the G sources ``x_q`` in order (each float64, or float32 or
   GF(p)'s int64 residues widened to double in registers; all of kind ``ks``) and the first
   ``n`` columns, and ``fma(g[q][r], 0, acc[r][c])`` for columns ``n .. nz`` (the pass's
   zero padding): the terms the pass would add for these sources, in its order, so that the
   sums come out as the pass's. The G sources' terms are added with each sum loaded and stored once (the sums
   live in L2: loaded and stored per source they cost about three times the multiply-adds).
   ``g`` holds 4 coefficients a source (``g[4 q + r]``). */
LC_INLINE LC_A512 void lc512_acc_body(const int NR, const int G, const double *g,
                                      const char *const *x, char ks, Py_ssize_t n,
                                      Py_ssize_t nz, double *const *acc)
{
    __m512d u[4][4];
    #pragma GCC unroll 4
    for (int q = 0; q < G; q++)
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            u[q][r] = _mm512_set1_pd(g[4 * q + r]);
    Py_ssize_t c = 0;
    for (; c + 8 <= n; c += 8) {
        __m512d a[4];
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            a[r] = _mm512_loadu_pd(acc[r] + c);
        #pragma GCC unroll 4
        for (int q = 0; q < G; q++) {
            const __m512d v = ks == 'd' ? _mm512_loadu_pd((const double *)x[q] + c)
                              : ks == 'f' ? _mm512_cvtps_pd(_mm256_loadu_ps((const float *)x[q] + c))
                                          : lc512_widen_q(_mm512_loadu_si512((const void *)((const int64_t *)x[q] + c)));
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                a[r] = _mm512_fmadd_pd(u[q][r], v, a[r]);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            _mm512_storeu_pd(acc[r] + c, a[r]);
    }
    if (c < n) {   /* the last 1-7 columns, masked (masked stores are slow: only here) */
        const __mmask8 m = (__mmask8)((1u << (n - c)) - 1u);
        __m512d a[4];
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            a[r] = _mm512_maskz_loadu_pd(m, acc[r] + c);
        #pragma GCC unroll 4
        for (int q = 0; q < G; q++) {
            const __m512d v = ks == 'd' ? _mm512_maskz_loadu_pd(m, (const double *)x[q] + c)
                              : ks == 'f' ? _mm512_cvtps_pd(_mm512_castps512_ps256(
                                                _mm512_maskz_loadu_ps((__mmask16)m, (const float *)x[q] + c)))
                                          : lc512_widen_q(_mm512_maskz_loadu_epi64(m, (const int64_t *)x[q] + c));
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                a[r] = _mm512_fmadd_pd(u[q][r], v, a[r]);
        }
        #pragma GCC unroll 4
        for (int r = 0; r < NR; r++)
            _mm512_mask_storeu_pd(acc[r] + c, m, a[r]);
        c += 8;
        if (n < nz) {   /* the lanes past n (not stored above): their zero terms */
            const __mmask8 z = (__mmask8)~m;
            #pragma GCC unroll 4
            for (int q = 0; q < G; q++)
                #pragma GCC unroll 4
                for (int r = 0; r < NR; r++)
                    _mm512_mask_storeu_pd(acc[r] + c - 8, z, _mm512_fmadd_pd(u[q][r],
                                          _mm512_setzero_pd(), _mm512_loadu_pd(acc[r] + c - 8)));
        }
    }
    /* columns n .. nz of a source cut short within the tile: the pass reads zeros there
       (the tile's padding) and adds g * 0, which turns a -0.0 sum into +0.0 and an infinite
       or NaN coefficient's column into NaN: the same terms here */
    for (; c < nz; c += 8) {
        #pragma GCC unroll 4
        for (int q = 0; q < G; q++)
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                _mm512_storeu_pd(acc[r] + c, _mm512_fmadd_pd(u[q][r], _mm512_setzero_pd(),
                                                             _mm512_loadu_pd(acc[r] + c)));
    }
}

/* one call of BODY(NR, G, ...) with both constant: nr rows (1-4), G sources (1-4) */
#define LC_ACC_DISPATCH(BODY, nr, G, ...)                                                    \
    do {                                                                                     \
        switch (4 * ((nr) - 1) + (G) - 1) {                                                  \
        case 0: BODY(1, 1, __VA_ARGS__); break;   case 1: BODY(1, 2, __VA_ARGS__); break;    \
        case 2: BODY(1, 3, __VA_ARGS__); break;   case 3: BODY(1, 4, __VA_ARGS__); break;    \
        case 4: BODY(2, 1, __VA_ARGS__); break;   case 5: BODY(2, 2, __VA_ARGS__); break;    \
        case 6: BODY(2, 3, __VA_ARGS__); break;   case 7: BODY(2, 4, __VA_ARGS__); break;    \
        case 8: BODY(3, 1, __VA_ARGS__); break;   case 9: BODY(3, 2, __VA_ARGS__); break;    \
        case 10: BODY(3, 3, __VA_ARGS__); break;  case 11: BODY(3, 4, __VA_ARGS__); break;   \
        case 12: BODY(4, 1, __VA_ARGS__); break;  case 13: BODY(4, 2, __VA_ARGS__); break;   \
        case 14: BODY(4, 3, __VA_ARGS__); break;  default: BODY(4, 4, __VA_ARGS__); break;   \
        }                                                                                    \
    } while (0)

/* lc512_acc_body for nr rows (1-4) and G sources (1-4) */
LC_A512 static void lc512_acc(int nr, int G, const double *g, const char *const *x, char ks,
                              Py_ssize_t n, Py_ssize_t nz, double *const *acc)
{
    LC_ACC_DISPATCH(lc512_acc_body, nr, G, g, x, ks, n, nz, acc);
}

/* lc512_fused_body's loop over the columns, its flags (``ks``, ``st``, ``pf``, and ``sh``:
   whether the sources start ``o`` values past their cache line) as lc512_fused_body passes
   them: constants where they are the large encode's (see there). The sum rows' addresses
   are read into locals once: the intrinsics' vector types may alias any memory, so read
   through ``acc`` they were loaded again after every store (the sources' and the copies'
   too, but held in locals those took more registers than there are, and the loop 1.10x
   the time). */
LC_INLINE LC_A512 LC_NO_ASAN void lc512_fused_loop(const int NR, const int G, const double *g,
                                        const char *const *x, char *const *d, const char ks,
                                        const Py_ssize_t F, double *const *acc, const int st,
                                        const int pf, const int sh, const int o,
                                        const __m512i idx, __m512d *pv, __m512d (*sq)[2])
{
    double *as[4];
    #pragma GCC unroll 4
    for (int r = 0; r < NR; r++)
        as[r] = acc[r];
    for (Py_ssize_t c = 0; c < F; c += 16) {
        __m512d v[4][2];
        #pragma GCC unroll 4
        for (int q = 0; q < G; q++) {
            /* whole aligned lines, each value taken from the two lines it spans by one
               permute: at numpy's offset (16 bytes into a page) a 64-byte load spans two
               lines every time, which took this loop 1.06-1.17x the run-by-run walk for
               float32 */
            if (ks == 'f') {
                const float *s = (const float *)x[q] + c;
                float *od = (float *)d[q] + c;
                if (pf)
                    PF_AHEAD(s);
                __m512 raw;
                if (!sh) {
                    raw = _mm512_load_ps(s);
                } else {
                    const __m512 nx = _mm512_load_ps(s - o + 16);
                    raw = _mm512_permutex2var_ps(_mm512_castpd_ps(pv[q]), idx, nx);
                    pv[q] = _mm512_castps_pd(nx);
                }
                if (st == 2) {
                    _mm512_stream_ps(od, raw);
                } else if (st == 1) {
                    _mm_stream_ps(od, _mm512_castps512_ps128(raw));
                    _mm_stream_ps(od + 4, _mm512_extractf32x4_ps(raw, 1));
                    _mm_stream_ps(od + 8, _mm512_extractf32x4_ps(raw, 2));
                    _mm_stream_ps(od + 12, _mm512_extractf32x4_ps(raw, 3));
                } else {
                    _mm512_storeu_ps(od, raw);
                }
                v[q][0] = _mm512_cvtps_pd(_mm512_castps512_ps256(raw));
                v[q][1] = _mm512_cvtps_pd(_mm256_castpd_ps(
                    _mm512_extractf64x4_pd(_mm512_castps_pd(raw), 1)));
            } else {
                const double *s = (const double *)x[q] + c;
                double *od = (double *)d[q] + c;
                if (pf) {
                    PF_AHEAD(s);
                    PF_AHEAD(s + 8);
                }
                if (!sh) {
                    v[q][0] = _mm512_load_pd(s);
                    v[q][1] = _mm512_load_pd(s + 8);
                } else {
                    const __m512d n0 = _mm512_load_pd(s - o + 8);
                    const __m512d n1 = _mm512_load_pd(s - o + 16);
                    v[q][0] = _mm512_permutex2var_pd(pv[q], idx, n0);
                    v[q][1] = _mm512_permutex2var_pd(n0, idx, n1);
                    pv[q] = n1;
                }
                if (st == 2) {
                    _mm512_stream_pd(od, v[q][0]);
                    _mm512_stream_pd(od + 8, v[q][1]);
                } else if (st == 1) {
                    #pragma GCC unroll 2
                    for (int e = 0; e < 2; e++)
                        #pragma GCC unroll 4
                        for (int m = 0; m < 4; m++)
                            _mm_stream_pd(od + 8 * e + 2 * m, _mm_castps_pd(_mm512_extractf32x4_ps(
                                _mm512_castpd_ps(v[q][e]), m)));
                } else {
                    _mm512_storeu_pd(od, v[q][0]);
                    _mm512_storeu_pd(od + 8, v[q][1]);
                }
            }
            sq[q][0] = _mm512_fmadd_pd(v[q][0], v[q][0], sq[q][0]);
            sq[q][1] = _mm512_fmadd_pd(v[q][1], v[q][1], sq[q][1]);
        }
        #pragma GCC unroll 2
        for (int hh = 0; hh < 2; hh++) {
            __m512d a[4];
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                a[r] = _mm512_loadu_pd(as[r] + c + 8 * hh);
            #pragma GCC unroll 4
            for (int q = 0; q < G; q++)
                #pragma GCC unroll 4
                for (int r = 0; r < NR; r++)
                    a[r] = _mm512_fmadd_pd(_mm512_set1_pd(g[4 * q + r]), v[q][hh], a[r]);
            #pragma GCC unroll 4
            for (int r = 0; r < NR; r++)
                _mm512_storeu_pd(as[r] + c + 8 * hh, a[r]);
        }
    }
}

/* The accumulating walk's fused step (see lc_run_acc): G whole sources (1-4) of one kind,
   float64 or float32 (``ks``), each copied into its identity row ``d[q]`` (``st``: ordinary
   stores 0, streamed 1 (16-byte aligned rows) or 2 (rows on cache lines)) with its
   squares, and their terms added into the NR sum rows, over the first ``F`` columns (a
   multiple of 16), in one loop: each value is loaded once, stored and added while in
   registers. The squares go into ``sqx[4 q] .. sqx[4 q + 3]`` as row_f_avx2's
   (row_d_avx2's) four accumulators would hold them after F values (lanes 0-3 and 4-7 of a
   step's first 8 values, of its last 8), so that row_*_avx2_from finishes each row with the
   sums one call of those loops gives; the sums' terms are lc512_acc_body's, in its order. */
LC_INLINE LC_A512 LC_NO_ASAN void lc512_fused_body(const int NR, const int G, const double *g,
                                        const char *const *x, char *const *d, char ks,
                                        Py_ssize_t F, double *const *acc, int st,
                                        int pf, __m256d *sqx)
{
    __m512d sq[4][2];
    #pragma GCC unroll 4
    for (int q = 0; q < G; q++)
        sq[q][0] = sq[q][1] = _mm512_setzero_pd();
    /* the sources' offset in their cache line, in elements (one for all: lc_run_acc), the
       permute's indices (0-15 the first line's, 16-31 the second's; float64 0-7 and 8-15),
       and each source's first line */
    const int o = (int)(((uintptr_t)x[0] & 63) / (ks == 'f' ? 4 : 8));
    const __m512i idx = ks == 'f'
        ? _mm512_add_epi32(_mm512_set1_epi32(o), _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9,
                                                                  8, 7, 6, 5, 4, 3, 2, 1, 0))
        : _mm512_add_epi64(_mm512_set1_epi64(o), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    __m512d pv[4];
    #pragma GCC unroll 4
    for (int q = 0; q < G; q++)
        pv[q] = !o ? _mm512_setzero_pd()
                   : ks == 'f' ? _mm512_castps_pd(_mm512_load_ps((const float *)x[q] - o))
                               : _mm512_load_pd((const double *)x[q] - o);
    /* The loop with its flags as constants for the large encode's cases (rows on cache
       lines, streamed, prefetched; the sources on their line's start or past it), else as
       variables: with them all variables the compiler kept the permute and the streamed
       store out of line, two taken jumps per source and step. Side by side on Zen 4
       against the loop before: lincomb alone (systematic MDS(17, 15)) float32 0.87-0.93x
       at 512-2048, float64 0.94-1.01x; whole systematic encodes float32 0.92-0.95x at
       1024-4096 (benchmarks/results/kernel_ab_fused_loop.json); the tasks identical */
    if (st == 2 && pf) {
        if (ks == 'f')
            o ? lc512_fused_loop(NR, G, g, x, d, 'f', F, acc, 2, 1, 1, o, idx, pv, sq)
              : lc512_fused_loop(NR, G, g, x, d, 'f', F, acc, 2, 1, 0, o, idx, pv, sq);
        else
            o ? lc512_fused_loop(NR, G, g, x, d, 'd', F, acc, 2, 1, 1, o, idx, pv, sq)
              : lc512_fused_loop(NR, G, g, x, d, 'd', F, acc, 2, 1, 0, o, idx, pv, sq);
    } else {
        lc512_fused_loop(NR, G, g, x, d, ks, F, acc, st, pf, o != 0, o, idx, pv, sq);
    }
    #pragma GCC unroll 4
    for (int q = 0; q < G; q++) {
        sqx[4 * q] = _mm512_castpd512_pd256(sq[q][0]);
        sqx[4 * q + 1] = _mm512_extractf64x4_pd(sq[q][0], 1);
        sqx[4 * q + 2] = _mm512_castpd512_pd256(sq[q][1]);
        sqx[4 * q + 3] = _mm512_extractf64x4_pd(sq[q][1], 1);
    }
}

/* lc512_fused_body for nr rows (1-4) and G sources (1-4) */
LC_A512 LC_NO_ASAN static void lc512_fused(int nr, int G, const double *g, const char *const *x,
                                char *const *d, char ks, Py_ssize_t F, double *const *acc,
                                int st, int pf, __m256d *sqx)
{
    LC_ACC_DISPATCH(lc512_fused_body, nr, G, g, x, d, ks, F, acc, st, pf, sqx);
}

/* One sum row of the accumulating walk stored as the pass stores its row: the values as
   they are (no arithmetic: a -0.0 sum stays -0.0, a subnormal one is kept under
   denormals-are-zero), rounded into float32 or reduced mod p (``md``), and their squares
   summed in the pass's order (16 columns a step, ``acc`` zero up to the step past ``w``) */
LC_A512 static double lc512_acc_store(const double *acc, Py_ssize_t w, char *dst, char kd,
                                      const double *md, int st)
{
    if (kd == 'q') {   /* GF(p): reduced, no squares (as lc512q) */
        const __m512d T = _mm512_set1_pd(4503599627370496.0), P = _mm512_set1_pd(md[0]);
        const int FL = md[2] > 0.0;
        const __m512d I = _mm512_set1_pd(FL ? md[2] : md[1]);
        for (Py_ssize_t c = 0; c < w; c += 16) {
            const __m512d a = _mm512_loadu_pd(acc + c), b = _mm512_loadu_pd(acc + c + 8);
            if (FL)
                lc512_put_q(1, dst, c, a, b, w - c, st, P, I, T);
            else
                lc512_put_q(0, dst, c, a, b, w - c, st, P, I, T);
        }
        return 0.0;
    }
    __m512d s = _mm512_setzero_pd();
    for (Py_ssize_t c = 0; c < w; c += 16) {
        const __m512d a = _mm512_loadu_pd(acc + c), b = _mm512_loadu_pd(acc + c + 8);
        s = _mm512_fmadd_pd(b, b, _mm512_fmadd_pd(a, a, s));
        lc512_put(kd, dst, c, a, b, w - c, st);
    }
    return _mm512_reduce_add_pd(s);
}

#else
#define CODEDML_AVX2 0
#endif

/* ``n`` values of ``re`` (with ``im``: interleaved with it, 2n values) rounded into ``dst``
   ('d' float64 or 'f' float32; 'q' GF(p): reduced mod p into int64); returns their sum of
   squares. Streamed where asked (without ``im``: copy_sq's row loop; with it, where the
   destination is 16-byte aligned, then every store of this loop is). */
static double lc_store(char kd, char *dst, const double *re, const double *im, Py_ssize_t n,
                       int stream, const double *md)
{
    double a = 0.0;
    Py_ssize_t i = 0;
    if (kd == 'q') {   /* GF(p): exact integer sums in [0, 2**52] reduced mod p (no squares) */
        const double T = 4503599627370496.0;
        for (; i < n; i++) {
            const double x = re[i], q = (x * md[1] + T) - T;
            double r = x - q * md[0];   /* q p and the difference exact: below 2**53 */
            r += r < 0.0 ? md[0] : 0.0;
            r -= r >= md[0] ? md[0] : 0.0;
            ((int64_t *)dst)[i] = (int64_t)r;
        }
        return 0.0;
    }
    if (!im)   /* one row: copy_sq's loop (float64, or float64 into float32) */
        return row_any(kd, 'd', (const char *)re, dst, NULL, n, stream, 1.0, 1, 0, 0, NULL, 0,
                       NULL);
#if CODEDML_SSE2
    const int st = stream && !((uintptr_t)dst & 15);
    __m128d s0 = _mm_setzero_pd(), s1 = _mm_setzero_pd();
    if (kd == 'd') {
        double *d = (double *)dst;
        for (; i + 2 <= n; i += 2) {
            __m128d u = _mm_loadu_pd(re + i), v = _mm_loadu_pd(im + i);
            store_pd(d + 2 * i, _mm_unpacklo_pd(u, v), st);
            store_pd(d + 2 * i + 2, _mm_unpackhi_pd(u, v), st);
            s0 = _mm_add_pd(s0, _mm_mul_pd(u, u));
            s1 = _mm_add_pd(s1, _mm_mul_pd(v, v));
        }
    } else {
        float *d = (float *)dst;
        for (; i + 2 <= n; i += 2) {
            __m128d u = _mm_loadu_pd(re + i), v = _mm_loadu_pd(im + i);
            store_ps(d + 2 * i, _mm_unpacklo_ps(_mm_cvtpd_ps(u), _mm_cvtpd_ps(v)), st);
            s0 = _mm_add_pd(s0, _mm_mul_pd(u, u));
            s1 = _mm_add_pd(s1, _mm_mul_pd(v, v));
        }
    }
    double t[2];
    _mm_storeu_pd(t, _mm_add_pd(s0, s1));
    a = t[0] + t[1];
#else
    (void)stream;
#endif
    for (; i < n; i++) {
        const double u = re[i], v = im[i];
        if (kd == 'd') {
            ((double *)dst)[2 * i] = u;
            ((double *)dst)[2 * i + 1] = v;
        } else {
            ((float *)dst)[2 * i] = (float)u;
            ((float *)dst)[2 * i + 1] = (float)v;
        }
        a += u * u + v * v;
    }
    return a;
}

typedef struct {
    const double *G;
    Py_ssize_t m, k, R, C, W, item;  /* item: bytes of one destination value */
    Py_ssize_t ts;                   /* doubles from one source's tile row to the next */
    const LcSrc *src;
    const LcDst *dst;
    char kd;
    int pairs, stream, simd;
    double *tile, *y, *zero, *sq;    /* y: 4 W (8 W with a pass of more than 4 rows);
                                        zero: k; sq: one per output, or NULL */
    int *glive;                      /* the sources with values in the tile and a coefficient
                                        in the rows at hand (k) */
    const double **xp;               /* per source: its tile row, or its own row (k) */
    int *gl, *gn;                    /* per pass of rows: the sources with a coefficient
                                        there (k each), and how many */
    int *po, *pr;                    /* per pass: its first row and its row count */
    int *dj;                         /* per row: its one source where its pass is diagonal
                                        (each row one coefficient), else -1 (m) */
    int *fj;                         /* per source: the identity row (coefficient 1, the
                                        source's own element type) written by the loop that
                                        loads the source, else -1 (k) */
    Py_ssize_t npass;
    char *islive;                    /* per source: values in the tile at hand (k) */
    const double *md;                /* GF(p): {p, 1 / p}; else NULL */
    uint64_t umax;                   /* GF(p): the largest source value read as unsigned */
    const char **pfp;                /* the next tile's runs (LcPf, k each), or NULL where no
                                        pass asks for them (decided once, at setup) */
    Py_ssize_t *pfn;
    Py_ssize_t bodies;               /* the dense passes per tile (rows with several
                                        coefficients): where there are several, the small
                                        tile, whose passes ask for the next tile's rows */
    int acc;                         /* the accumulating walk (lc_run_acc): its dense pass + 1,
                                        else 0 */
    int direct;                      /* GF(p), 8-24 rows, no diagonal pass: lc_run_direct */
} LcJob;

/* how many sources rows o .. o + n - 1 of G (m x k) have a coefficient for; with ``list``,
   those sources in order */
static int lc_used(const double *G, Py_ssize_t o, Py_ssize_t n, Py_ssize_t k, int *list)
{
    int used = 0;
    for (Py_ssize_t j = 0; j < k; j++) {
        int any = 0;
        for (Py_ssize_t h = o; h < o + n; h++)
            any |= G[h * k + j] != 0.0;
        if (any && list)
            list[used] = (int)j;
        used += any;
    }
    return used;
}

/* whether those rows have coefficients for more than half the sources */
static int lc_dense(const double *G, Py_ssize_t o, Py_ssize_t n, Py_ssize_t k)
{
    return 2 * lc_used(G, o, n, k, NULL) > k;
}

/* source ``s``'s element (r, c), and output h's */
static inline const char *lc_src_at(const LcSrc *s, Py_ssize_t r, Py_ssize_t c)
{
    return s->p + r * s->stride + c * lc_size(s->k);
}

static inline char *lc_dst_at(const LcJob *J, Py_ssize_t h, Py_ssize_t r, Py_ssize_t c)
{
    return J->dst[h].p + r * J->dst[h].stride + c * J->item;
}

/* whether source j lies whole in tile (r, c0, w) */
static inline int lc_whole(const LcJob *J, Py_ssize_t j, Py_ssize_t r, Py_ssize_t c0, Py_ssize_t w)
{
    return r < J->src[j].rows && c0 + w <= J->src[j].cols;
}

/* whether source j has values in tile (r, c0, ...): whole there, or cut short within it */
static inline int lc_present(const LcJob *J, Py_ssize_t j, Py_ssize_t r, Py_ssize_t c0)
{
    return r < J->src[j].rows && c0 < J->src[j].cols;
}

/* whether row h was written in the tile at (r, c0) by the loop that loaded its source (its
   source's identity row, the source present there): its pass skips it */
static inline int lc_fused(const LcJob *J, Py_ssize_t h, Py_ssize_t r, Py_ssize_t c0)
{
    const int j = J->dj[h];
    return j >= 0 && J->fj[j] == (int)h && lc_present(J, j, r, c0);
}

/* Source s's values in tile (r, c0) that lie there (``nv`` of the tile's ``w`` columns, from
   ``sp``) copied into its identity row h (from ``dp``), each value as it is, and, with ``t``,
   widened into its tile row (the tile walk); the row's sum of squares added into sq[h]
   (GF(p): the residues range-checked into umax instead); the row past them zeroed, as a pass
   writes it. Both walks' loop that loads a source with an identity row. */
static inline void lc_identity(LcJob *J, const LcSrc *s, const char *sp, char *dp, double *t,
                               Py_ssize_t nv, Py_ssize_t w, int h, const char *nx)
{
    if (s->k == 'q') {   /* GF(p): the residues as they are, range-checked */
        lc_top(&J->umax, i64_row((const int64_t *)sp, (int64_t *)dp, t, nv, J->stream));
    } else {   /* copy_sq's row loop (AVX2 where lincomb may use it) */
        const double q = row_any(s->k, s->k, sp, dp, (char *)t, nv, J->stream, 1.0, 1,
                                 J->simd >= 1 && row_avx2_ok, 0, NULL, 0, nx);
        if (J->sq)
            J->sq[h] += q;
    }
    if (nv < w)   /* the task's row past its block: zeros, as a pass writes */
        memset(dp + nv * J->item, 0, (size_t)(w - nv) * (size_t)J->item);
}

#if CODEDML_AVX2
/* The accumulating walk, for a generator whose rows are identity rows fused to their sources
   (every source has one) and one dense pass of at most 4 rows (a systematic code's parity
   rows), real, not ``pairs``, on AVX-512 (J->acc, decided at setup; on AVX2, with 16
   registers for two sources' coefficients a step, the same walk measured 0.84-1.13x the tile
   walk's time on the Zen 4 host, slower for MDS(8, 6) and float32: not taken there). Per
   tile of W columns each source is read once, in one run of W values: copied into its
   identity row with its squares by copy_sq's row loop (no tile; GF(p): copy_i64's, with
   the range check), then, while that run is in cache, its terms are added into the pass
   rows' sums (``J->y``: nr rows of W doubles, from +0), the same fused multiply-adds in
   the same order as the pass's over the tile, with the zero terms the pass adds from a
   source cut short within the tile (its padding) and up to the tile's last step, so the
   sums are the pass's bit for bit (a -0.0 from an underflow included); then each sum row
   is stored as it is, rounded into float32 or reduced mod p, with its squares in the
   pass's order (lc512_acc_store; streamed where the row starts on a cache line: systematic
   MDS encodes 0.91-0.99x the time side by side, MDS(8, 6), whose parity is a third of its
   data, the most). The tile walk reads the k sources' runs side by side into a tile in
   L2, in runs of about 256 KiB / k (8.7 KiB at k = 30), which memory served at about half its
   streaming rate (2-core AMD EPYC, Zen 4: a copy of 30 interleaved runs of 8 KiB took 2.1x
   a straight copy, of 64 KiB 1.04x); here the sums, not the sources, stay in cache. An
   identity row whose source has no values in the tile (a block wholly in the split's
   padding) is zeros there, as the diagonal pass writes it.
   Two changes of the thirty-second session, each side by side against the walk before it in
   one process (the raw lincomb call after ``encode.py``'s evict, MDS(17, 15) and MDS(8, 6)
   parity rows, 2-core AMD EPYC Zen 4):
   - each run's copy asks for the next run the walk reads (the next source's, or the next
     tile's first), a line per step into L2: where a run starts, memory's prefetchers had
     to find the new stream first, 30 times a tile. float32 0.86-0.93x the call's time at
     1024-4096, float64 0.96-1.01x;
   - sources are copied and added in one loop (lc512_fused: up to 4 sources whole in the
     tile, each with a term in the pass, at one offset in their cache lines, their rows
     16-byte aligned where streamed), each value loaded once; run by run the copies waited
     on memory with the FMA units idle, then the sums ran from L2 with memory idle (a
     standalone test: 1.95x a straight copy, the two halves added; fused 1.2-1.4x). float64
     0.89-0.94x the time of the walk with the prefetch above. For float32 the loop first
     took 1.06-1.17x: its 64-byte loads at numpy's offset (16 bytes into a page) spanned
     two lines every time, and 16-byte loads cost as much in instructions; it now loads
     whole aligned lines and takes each value from the two it spans by one permute:
     float32 0.83-0.96x the run-by-run walk with the prefetch, float64 0.98-1.04x the
     fused loop's unaligned loads (kept alike). Rows, sums and squares are the run-by-run
     walk's bit for bit: the copy's squares in row_*_avx2's four accumulators
     (rows_avx2_from finishes each row), the terms in the pass's order. */
/* (kept out of line: inlined into lincomb, with the tile walk, it changed that walk's
   generated code, and the dense float32 encodes measured 1.02-1.035x in two runs) */
__attribute__((noinline)) static void lc_run_acc(LcJob *J)
{
    const Py_ssize_t W = J->W, k = J->k;
    const Py_ssize_t ps = J->acc - 1, o = J->po[ps];
    const int nr = J->pr[ps], nu = J->gn[ps];
    const int *used = J->gl + ps * k;
    /* the sum rows LC_ACC_PAD doubles apart beyond their W: rows a multiple of 4 KiB apart
       would have each step's loads wait on the stores just made to another row (their low
       12 address bits alike) */
    const Py_ssize_t as = W + LC_ACC_PAD;
    double *acc[4] = {J->y, J->y + as, J->y + 2 * as, J->y + 3 * as};
    for (Py_ssize_t r = 0; r < J->R; r++)
        for (Py_ssize_t c0 = 0; c0 < J->C; c0 += W) {
            const Py_ssize_t w = J->C - c0 < W ? J->C - c0 : W;
            const Py_ssize_t wp = (w + LC_GROUP - 1) / LC_GROUP * LC_GROUP;
            for (int h = 0; h < nr; h++)
                memset(acc[h], 0, (size_t)wp * sizeof(double));
            int q = 0;   /* the pass's sources (ascending) up to j */
            int ng = 0;  /* the sources whose terms wait (whole in the tile), in order */
            double g[4 * LC_ACC_GROUP];
            const char *xs[LC_ACC_GROUP];
            /* the fused step: real sources whose rows the AVX2 loops copy, a tile of at
               least one step */
            const int fz = J->kd != 'q' && J->simd >= 1 && row_avx2_ok && w >= 16;
            const Py_ssize_t F = w / 16 * 16;
            const int pf = (size_t)w * (size_t)J->item > 2 * PFD;
            for (Py_ssize_t j = 0; j < k;) {
                /* up to LC_ACC_GROUP sources from j on that the fused step takes: present
                   and whole in the tile, each with a term in the pass, their identity rows
                   16-byte aligned where streamed */
                int nf = 0;
                const char *xf[LC_ACC_GROUP];
                char *df[LC_ACC_GROUP];
                if (fz) {
                    int q1 = q;
                    while (nf < LC_ACC_GROUP && j + nf < k) {
                        const Py_ssize_t j1 = j + nf;
                        const LcSrc *s1 = &J->src[j1];
                        if (s1->k != J->kd || !lc_present(J, j1, r, c0)
                            || !lc_whole(J, j1, r, c0, w))
                            break;
                        while (q1 < nu && used[q1] < j1)
                            q1++;
                        if (!(q1 < nu && used[q1] == j1))
                            break;
                        /* the rows 16-byte aligned where streamed; one offset in the cache
                           line for every source of the step, each on its element's size */
                        const char *xp = lc_src_at(s1, r, c0);
                        char *dp = lc_dst_at(J, J->fj[j1], r, c0);
                        if ((J->stream && ((uintptr_t)dp & 15))
                            || ((uintptr_t)xp & (uintptr_t)(J->item - 1))
                            || (nf && ((uintptr_t)xp & 63) != ((uintptr_t)xf[0] & 63)))
                            break;
                        xf[nf] = xp;
                        df[nf++] = dp;
                    }
                }
                if (nf) {
                    if (ng) {   /* the terms waiting first: every sum adds its terms in order */
                        lc512_acc(nr, ng, g, xs, J->kd, w, wp, acc);
                        ng = 0;
                    }
                    double gf[4 * LC_ACC_GROUP];
                    for (int t = 0; t < nf; t++)
                        for (int hh = 0; hh < nr; hh++)
                            gf[4 * t + hh] = J->G[(o + hh) * k + j + t];
                    /* stores: ordinary, or streamed by 16 bytes, or by whole lines where
                       every row starts on one */
                    int st = J->stream ? 2 : 0;
                    for (int t = 0; t < nf; t++)
                        st = st == 2 && ((uintptr_t)df[t] & 63) ? 1 : st;
                    __m256d sqx[4 * LC_ACC_GROUP];
                    lc512_fused(nr, nf, gf, xf, df, J->kd, F, acc, st, pf, sqx);
                    for (int t = 0; t < nf; t++) {   /* each row's last values, its squares */
                        const double sv = rows_avx2_from(J->kd, xf[t], df[t], w, J->stream, F,
                                                         sqx + 4 * t);
                        if (J->sq)
                            J->sq[J->fj[j + t]] += sv;
                    }
                    if (F < wp) {   /* their terms past F, and the zero terms up to wp */
                        const char *xt[LC_ACC_GROUP];
                        double *at[4] = {acc[0] + F, acc[1] + F, acc[2] + F, acc[3] + F};
                        for (int t = 0; t < nf; t++)
                            xt[t] = xf[t] + F * J->item;
                        lc512_acc(nr, nf, gf, xt, J->kd, w - F, wp - F, at);
                    }
                    j += nf;
                    continue;
                }
                const LcSrc *s = &J->src[j];
                const int h = J->fj[j];
                char *dp = lc_dst_at(J, h, r, c0);
                if (!lc_present(J, j, r, c0)) {
                    memset(dp, 0, (size_t)w * (size_t)J->item);
                    j++;
                    continue;
                }
                const Py_ssize_t nv = lc_whole(J, j, r, c0, w) ? w : s->cols - c0;
                const char *sp = lc_src_at(s, r, c0);
                /* the next run this walk reads: asked for (into L2) as this one is copied */
                const char *nx = NULL;
                {
                    Py_ssize_t j1 = j + 1, r1 = r, t1 = c0;
                    if (j1 >= k) {
                        j1 = 0;
                        t1 = c0 + W;
                        if (t1 >= J->C) {
                            t1 = 0;
                            r1 = r + 1;
                        }
                    }
                    const LcSrc *s1 = &J->src[j1];
                    if (r1 < J->R && r1 < s1->rows && t1 < s1->cols)
                        nx = lc_src_at(s1, r1, t1);
                }
                lc_identity(J, s, sp, dp, NULL, nv, w, h, nx);
                while (q < nu && used[q] < j)
                    q++;
                if (q < nu && used[q] == j) {
                    for (int hh = 0; hh < nr; hh++)
                        g[4 * ng + hh] = J->G[(o + hh) * k + j];
                    xs[ng++] = sp;
                    /* the group's terms once it is full, or before a source cut short
                       (its terms over fewer columns), which goes alone */
                    if (ng == LC_ACC_GROUP || nv < w) {
                        const int last = nv < w;
                        if (ng > last)
                            lc512_acc(nr, ng - last, g, xs, s->k, w, wp, acc);
                        if (last)   /* (its zero terms up to the tile's last step, as the pass) */
                            lc512_acc(nr, 1, g + 4 * (ng - 1), xs + ng - 1, s->k, nv, wp, acc);
                        ng = 0;
                    }
                }
                j++;
            }
            if (ng)
                lc512_acc(nr, ng, g, xs, J->kd, w, wp, acc);
            for (int hh = 0; hh < nr; hh++) {
                char *dp = lc_dst_at(J, o + hh, r, c0);
                const double sv = lc512_acc_store(acc[hh], w, dp, J->kd, J->md,
                                                  J->stream && !((uintptr_t)dp & 63));
                if (J->sq)
                    J->sq[o + hh] += sv;
            }
        }
#if CODEDML_SSE2
    if (J->stream)
        _mm_sfence();
#endif
}
#endif

#if CODEDML_AVX2
/* GF(p) with few rows and no diagonal pass (J->direct, decided at setup: AVX-512, 8 to
   LC_DIRECT_MAX rows, every sum at most 2**50): no tile and no passes. Per row of the
   outputs, per step of 8 columns, each source's 8 residues are loaded from where they lie
   (a source cut short, masked: zeros past its end), their largest as unsigned kept (the
   range check), widened to double in a register (the bits of 2**52 + v less 2**52, exact
   for v in [0, 2**52)), and their terms added into all NR rows' sums at once (NR
   accumulators: one load of a value serves every row), then each row reduced mod p and
   stored. Every sum is an exact integer below 2**53 (lincomb refuses larger), so the order
   of the terms cannot change it: for residues in [0, p) the outputs are the tile walk's, bit
   for bit (a value out of the field gives other outputs than the tile walk's, as the plain-C
   and AVX2 walks differ there too: undefined, the range check reports it). The tile
   walk widens each tile's sources first (SSE2, two values a step), then reads the tile from
   L2 once per pass of 4 rows (17 rows: 5 passes). For GF(65537) MDS(17, 15) at 1024 (the
   raw call from cold caches, thirty-third session) its widening alone took 0.70 ms, its
   passes over a tile left in cache 1.0-1.4 ms, the two together 1.76 ms; this walk took
   0.72-0.92x the tile walk's time at 1024-2048, its body 1.03 ms with every value in L1
   (17.5 of the FMA units' 29 G multiply-adds a second). */
#define LC_DIRECT_MAX 24
LC_INLINE LC_A512 void lcq_direct_body(const int NR, const double *Gt, Py_ssize_t k,
                                       const int64_t *const *xs, const Py_ssize_t *nv,
                                       Py_ssize_t C, int64_t *const *dp, int st,
                                       const double *md, __m512i *mx)
{
    const __m512d T = _mm512_set1_pd(4503599627370496.0), P = _mm512_set1_pd(md[0]);
    const __m512d I = _mm512_set1_pd(md[2]);
    __m512i top = *mx;
    for (Py_ssize_t c = 0; c < C; c += 8) {
        __m512d a[LC_DIRECT_MAX];
        #pragma GCC unroll 24
        for (int o = 0; o < NR; o++)
            a[o] = _mm512_setzero_pd();
        for (Py_ssize_t j = 0; j < k; j++) {
            const Py_ssize_t left = nv[j] - c;
            if (left <= 0)
                continue;
            const int64_t *x = xs[j] + c;
            __m512i v;
            if (left >= 8) {
                v = _mm512_loadu_si512((const void *)x);
                /* the line PFD bytes on, in integers (it may lie past the source) */
                PF_AHEAD(x);
            } else {
                v = _mm512_maskz_loadu_epi64((__mmask8)((1u << left) - 1), (const void *)x);
            }
            top = _mm512_max_epu64(top, v);
            const __m512d u = lc512_widen_q(v);
            const double *g = Gt + j * NR;   /* source j's coefficients, row by row */
            #pragma GCC unroll 24
            for (int o = 0; o < NR; o++)
                a[o] = _mm512_fmadd_pd(_mm512_set1_pd(g[o]), u, a[o]);
        }
        const Py_ssize_t left = C - c;
        #pragma GCC unroll 24
        for (int o = 0; o < NR; o++) {
            const __m512i r = lc512_mod(1, a[o], P, I, T);
            int64_t *p = dp[o] + c;
            if (left >= 8 && st)
                _mm512_stream_si512((void *)p, r);
            else if (left >= 8)
                _mm512_storeu_si512((void *)p, r);
            else
                _mm512_mask_storeu_epi64((void *)p, (__mmask8)((1u << left) - 1), r);
        }
    }
    *mx = top;
}

#define LCQ_DIRECT_CASE(NR)                                                                   \
    case NR:                                                                                  \
        lcq_direct_body(NR, Gt, k, xs, nv, C, dp, st, md, mx);                                 \
        break;

LC_A512 static void lcq_direct_rows(int nr, const double *Gt, Py_ssize_t k,
                                    const int64_t *const *xs, const Py_ssize_t *nv,
                                    Py_ssize_t C, int64_t *const *dp, int st, const double *md,
                                    __m512i *mx)
{
    switch (nr) {
        LCQ_DIRECT_CASE(8) LCQ_DIRECT_CASE(9) LCQ_DIRECT_CASE(10) LCQ_DIRECT_CASE(11)
        LCQ_DIRECT_CASE(12) LCQ_DIRECT_CASE(13) LCQ_DIRECT_CASE(14) LCQ_DIRECT_CASE(15)
        LCQ_DIRECT_CASE(16) LCQ_DIRECT_CASE(17) LCQ_DIRECT_CASE(18) LCQ_DIRECT_CASE(19)
        LCQ_DIRECT_CASE(20) LCQ_DIRECT_CASE(21) LCQ_DIRECT_CASE(22) LCQ_DIRECT_CASE(23)
        LCQ_DIRECT_CASE(24)
    }
}

LC_A512 static void lc_run_direct(LcJob *J)
{
    const Py_ssize_t k = J->k, m = J->m;
    const int64_t **xs = (const int64_t **)J->xp;   /* (k pointers, reused) */
    Py_ssize_t *nv = J->pfn;                        /* (k counts) */
    int64_t *dp[LC_DIRECT_MAX];
    __m512i mx = _mm512_setzero_si512();
    double *Gt = J->tile;   /* G transposed (k x m): a source's coefficients side by side */
    for (Py_ssize_t o = 0; o < m; o++)
        for (Py_ssize_t j = 0; j < k; j++)
            Gt[j * m + o] = J->G[o * k + j];
    for (Py_ssize_t r = 0; r < J->R; r++) {
        for (Py_ssize_t j = 0; j < k; j++) {
            const LcSrc *s = &J->src[j];
            const int here = r < s->rows;
            xs[j] = (const int64_t *)(here ? lc_src_at(s, r, 0) : s->p);
            nv[j] = here ? (s->cols < J->C ? s->cols : J->C) : 0;
        }
        int st = J->stream;
        for (Py_ssize_t o = 0; o < m; o++) {
            dp[o] = (int64_t *)lc_dst_at(J, o, r, 0);
            st &= !((uintptr_t)dp[o] & 63);
        }
        lcq_direct_rows((int)m, Gt, k, xs, nv, J->C, dp, st, J->md, &mx);
    }
    if (J->stream)
        _mm_sfence();
    lc_top(&J->umax, _mm512_reduce_max_epu64(mx));
}
#endif

static void lc_run(LcJob *J)
{
#if CODEDML_AVX2
    if (J->direct) {
        lc_run_direct(J);
        return;
    }
    if (J->acc) {
        lc_run_acc(J);
        return;
    }
#endif
    const Py_ssize_t W = J->W, k = J->k, m = J->m;
    for (Py_ssize_t r = 0; r < J->R; r++)
        for (Py_ssize_t c0 = 0; c0 < J->C; c0 += W) {
            const Py_ssize_t w = J->C - c0 < W ? J->C - c0 : W;
            const Py_ssize_t wp = (w + LC_GROUP - 1) / LC_GROUP * LC_GROUP;
            memset(J->islive, 0, (size_t)k);
            for (Py_ssize_t j = 0; j < k; j++) {
                const LcSrc *s = &J->src[j];
                const int h = J->fj[j];
                const int whole = lc_whole(J, j, r, c0, w);
                /* with one pass of at most 4 rows a float64 source whole in this tile of
                   whole steps is read where it lies (read once, a copy would only add to
                   it); more passes read the tile again and again, the compact copy */
                const int here = m <= 4 && s->k == 'd' && w == wp && whole;
                if (h >= 0 && lc_present(J, j, r, c0)) {
                    /* a systematic code's identity row for this source: the loop that loads
                       the source into the tile (or reads it where it lies) also writes it
                       into its task with its squares, so that the row needs no pass of its
                       own over the tile. A source cut short within the tile (the last
                       block of a split with padding taken as a run of values, or a block
                       cut short in its columns) is copied as far as it goes and its row
                       zeroed after: each value stored as loaded (a pass would add 1.0
                       times it to +0: -0.0 would come out +0.0, and a subnormal value 0
                       under denormals-are-zero) */
                    const Py_ssize_t nv = whole ? w : s->cols - c0;   /* its values here */
                    const char *sp = lc_src_at(s, r, c0);
                    char *dp = lc_dst_at(J, h, r, c0);
                    double *t = here ? NULL : J->tile + j * J->ts;
                    lc_identity(J, s, sp, dp, t, nv, w, h, NULL);
                    if (t && nv < wp)
                        memset(t + nv, 0, (size_t)(wp - nv) * sizeof(double));
                    J->xp[j] = here ? (const double *)sp : t;
                    J->islive[j] = 1;
                    continue;
                }
                if (here) {
                    J->xp[j] = (const double *)(s->p + r * s->stride) + c0;
                    J->islive[j] = 1;
                } else if (lc_load(s, r, c0, w, wp, J->tile + j * J->ts, &J->umax)) {
                    J->xp[j] = J->tile + j * J->ts;
                    J->islive[j] = 1;
                }
            }
            /* the next tile's sources: asked for while this tile's passes compute */
            LcPf pf = {J->pfp, J->pfn, 0, 0, 0, 0};
            if (J->pfp) {
                Py_ssize_t r1 = r, c1 = c0 + W, lines = 0;
                if (c1 >= J->C) {
                    r1 = r + 1;
                    c1 = 0;
                }
                for (Py_ssize_t j = 0; r1 < J->R && j < k; j++) {
                    const LcSrc *s = &J->src[j];
                    if (r1 >= s->rows || c1 >= s->cols)
                        continue;
                    const Py_ssize_t size = lc_size(s->k);
                    const Py_ssize_t cols = s->cols - c1 < W ? s->cols - c1 : W;
                    const uintptr_t a = (uintptr_t)(s->p + r1 * s->stride + c1 * size);
                    const uintptr_t a0 = a & ~(uintptr_t)63;
                    pf.p[pf.runs] = (const char *)a0;
                    pf.n[pf.runs] = (Py_ssize_t)(a + (uintptr_t)(cols * size) - a0);
                    lines += (pf.n[pf.runs] + 63) / 64;
                    pf.runs++;
                }
                const Py_ssize_t step = J->simd == 2 ? 16 : 8;
                const Py_ssize_t steps = J->bodies * ((w + step - 1) / step);
                pf.per = steps ? (int)((lines + steps - 1) / steps) : 0;
            }
            LcPf *const pfa = pf.per ? &pf : NULL;   /* nothing asked: one test a step */
            for (Py_ssize_t ps = 0; ps < J->npass; ps++) {
                /* rows o .. o + nr - 1 (run as 8, 4, 2 or 1: zero rows of G pad a pass of 3
                   or of 5-7) */
                const Py_ssize_t o = J->po[ps];
                const int nr = J->pr[ps], nk = nr > 4 ? 8 : nr > 2 ? 4 : nr;
                const double *g[8];
                for (int h = 0; h < 8; h++)
                    g[h] = h < nr ? J->G + (o + h) * k : J->zero;
                /* the live sources with a coefficient in these rows (a systematic row has
                   one: the copy costs one term, not k) */
                int ng = 0;
                const int *used = J->gl + ps * k;
                for (int q = 0; q < J->gn[ps]; q++)
                    if (J->islive[used[q]])
                        J->glive[ng++] = used[q];
#if CODEDML_AVX2
                if (J->simd && J->dj[o] >= 0) {
                    /* diagonal: row by row, its one source (or none: zeros) */
                    for (int h = 0; h < nr; h++) {
                        const int j = J->dj[o + h];
                        if (lc_fused(J, o + h, r, c0))   /* written as its source was loaded */
                            continue;
                        char *dp[4] = {lc_dst_at(J, o + h, r, c0)};
                        const double *g1[4] = {J->G + (o + h) * k};
                        double sv[4] = {0.0};
                        (J->simd == 2 ? lc512_1 : lc2_1)(g1, &j, J->islive[j], J->xp, w, dp,
                                                         J->kd, 0, J->stream && !((uintptr_t)dp[0] & 63),
                                                         sv, J->md, pfa);
                        if (J->sq)
                            J->sq[o + h] += sv[0];
                    }
                    continue;
                }
                if (ng && J->simd) {
                    /* a padding row (a pass of 3 rows, or of 5-7; with pairs a pass of 6
                       rows pads one output) is stored into the scratch rows `y` (W doubles,
                       64-byte aligned) */
                    char *dp[8];
                    for (int h = 0; h < 8; h++)
                        dp[h] = (char *)J->y;
                    double sv[8] = {0.0};
                    /* Streamed stores on AVX-512 only, and only where every row of the pass
                       starts on a cache line here (64-byte aligned: the task pool places
                       tasks so, codedml/codes/_pool.py): each step then writes whole lines
                       of every row (16 values: a float64 or int64 row's 128 bytes, a float32
                       row's 64, a pair's 256 or 128), which the write-combining buffers pass
                       on whole, and the outputs skip the read for ownership that an ordinary
                       store of a line not in cache pays. Measured side by side in one
                       process (2-core AMD EPYC, Zen 4, 7 alternated encodes, with the pool's
                       alignment): float64 Polynomial(17, 4x4) 0.60-0.68x the time at 1024-
                       2048, systematic MatDot(17, 8) 0.64-0.68x, MatDot 0.75-0.80x, PolyDot
                       0.79-0.81x, MDS(8, 6) 0.75-0.82x, GF(65537) polynomial 0.65-0.67x;
                       float32 0.85-0.96x (one case 1.06x, within the runs' noise). On AVX2,
                       whose 32-byte stores fill a line in two steps, streamed stores into
                       several rows at once ran far below ordinary ones (encodes 0.58-0.96x
                       the time with ordinary pass stores, float32 the most): ordinary there. */
                    int st = J->simd == 2 && J->stream;
                    for (int h = 0; h < (J->pairs ? nr / 2 : nr); h++) {
                        const LcDst *d = &J->dst[J->pairs ? o / 2 + h : o + h];
                        dp[h] = d->p + r * d->stride + (J->pairs ? 2 : 1) * c0 * J->item;
                        st &= !((uintptr_t)dp[h] & 63);
                    }
                    if (nk == 8)   /* (AVX-512 only: the passes are grouped so) */
                        lc512_8(g, J->glive, ng, J->xp, w, dp, J->kd, J->pairs, st, sv, J->md,
                                pfa);
                    else if (nk == 4)
                        (J->simd == 2 ? lc512_4 : lc2_4)(g, J->glive, ng, J->xp, w, dp,
                                                         J->kd, J->pairs, st, sv, J->md, pfa);
                    else if (nk == 1)   /* one row alone: no padding row beside it */
                        (J->simd == 2 ? lc512_1 : lc2_1)(g, J->glive, ng, J->xp, w, dp,
                                                         J->kd, J->pairs, st, sv, J->md, pfa);
                    else
                        (J->simd == 2 ? lc512_2 : lc2_2)(g, J->glive, ng, J->xp, w, dp,
                                                         J->kd, J->pairs, st, sv, J->md, pfa);
                    if (J->sq)
                        for (int h = 0; h < nr; h++)
                            J->sq[J->pairs ? (o + h) / 2 : o + h] += sv[h];
                    continue;
                }
#endif
                double *y[8];
                for (int h = 0; h < nr; h++)   /* (nr rows of the ny allocated) */
                    y[h] = J->y + h * W;
                if (!ng)
                    for (int h = 0; h < nr; h++)
                        memset(y[h], 0, (size_t)wp * sizeof(double));
                else if (J->dj[o] >= 0)   /* diagonal: each row its one source alone */
                    for (int h = 0; h < nr; h++) {
                        const int j = J->dj[o + h];
                        if (!lc_fused(J, o + h, r, c0))
                            lc_rows_c(g + h, 1, &j, J->islive[j], J->xp, wp, y + h);
                    }
                else
                    lc_rows_c(g, nr, J->glive, ng, J->xp, wp, y);
                if (J->pairs) {   /* rows 2p, 2p + 1 are output p's real and imaginary parts */
                    for (int h = 0; h < nr; h += 2) {
                        const LcDst *d = &J->dst[(o + h) / 2];
                        double s = lc_store(J->kd, d->p + r * d->stride + 2 * c0 * J->item,
                                            y[h], y[h + 1], w, J->stream, J->md);
                        if (J->sq)
                            J->sq[(o + h) / 2] += s;
                    }
                    continue;
                }
                for (int h = 0; h < nr; h++) {
                    if (lc_fused(J, o + h, r, c0))   /* written as its source was loaded */
                        continue;
                    double s = lc_store(J->kd, lc_dst_at(J, o + h, r, c0), y[h], NULL, w,
                                        J->stream, J->md);
                    if (J->sq)
                        J->sq[o + h] += s;
                }
            }
        }
#if CODEDML_SSE2
    if (J->stream)
        _mm_sfence();
#endif
}

/* the arrays of ``seq`` (a list or tuple: each its own; else one 2-D array, its rows),
   buffers taken into ``*bufs`` (``*nb`` of them); returns the item count or -1 */
static Py_ssize_t lc_buffers(PyObject *seq, int writable, Py_buffer **bufs, Py_ssize_t *nb,
                             int *matrix)
{
    const int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    *matrix = !(PyList_Check(seq) || PyTuple_Check(seq));
    Py_ssize_t n = *matrix ? 1 : PySequence_Fast_GET_SIZE(seq);
    *bufs = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    *nb = 0;
    if (!*bufs) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = *matrix ? seq : PySequence_Fast_GET_ITEM(seq, i);
        if (PyObject_GetBuffer(o, &(*bufs)[i], flags) < 0)
            return -1;
        (*nb)++;
    }
    return n;
}

static void lc_release(Py_buffer *bufs, Py_ssize_t nb)
{
    if (!bufs)
        return;
    for (Py_ssize_t i = nb - 1; i >= 0; i--)
        PyBuffer_Release(&bufs[i]);
    PyMem_Free(bufs);
}

/* 1 when two spans of rows at one positive stride ``s`` (widths ``w1``, ``w2`` bytes, starting
   at ``p1``, ``p2``) interleave without touching: apart modulo the stride (columns of one
   matrix side by side, like a task's halves) */
static int lc_apart(uintptr_t p1, Py_ssize_t w1, uintptr_t p2, Py_ssize_t w2, Py_ssize_t s)
{
    if (s <= 0 || w1 > s || w2 > s)
        return 0;
    long long d = ((long long)(p2 - p1)) % (long long)s;
    d = d < 0 ? d + s : d;
    return d >= w1 && d + w2 <= s;
}

static PyObject *lincomb(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *names[] = {"G", "srcs", "dsts", "sq", "stream", "pairs", "simd", "p", "run",
                            NULL};
    PyObject *oG, *osrc, *odst, *osq = Py_None;
    int stream = 0, pairs = 0, simd = -1;
    long long fp = 0;
    Py_ssize_t run = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OppiLn:lincomb", names, &oG, &osrc,
                                     &odst, &osq, &stream, &pairs, &simd, &fp, &run))
        return NULL;
    if (run < 0) {
        PyErr_Format(PyExc_ValueError, "lincomb: `run` must be 0 (sources as given) or a "
                     "positive count of values, got %zd", run);
        return NULL;
    }
    if (fp && (fp < 2 || fp > 2147483647LL)) {
        PyErr_Format(PyExc_ValueError, "lincomb: `p` must be 0 (real) or between 2 and 2**31-1, "
                     "got %lld", fp);
        return NULL;
    }
    if (fp && (pairs || osq != Py_None)) {
        PyErr_SetString(PyExc_ValueError,
                        "lincomb: with `p` (GF(p)) neither `pairs` nor `sq` applies");
        return NULL;
    }
    /* GF(p): {p, 1 / p, the double above fl(1 / p) where every sum is at most 2**50, else
       0}: the quotient's two forms in lc2q_body */
    double md[3] = {(double)fp, fp ? 1.0 / (double)fp : 0.0, 0.0};
    PyObject *fs = NULL, *fd = NULL, *result = NULL;
    Py_buffer g, q, *sb = NULL, *db = NULL;
    Py_ssize_t nsb = 0, ndb = 0;
    int have_g = 0, have_q = 0, smat, dmat;
    LcSrc *src = NULL;
    LcDst *dst = NULL;
    uintptr_t *lo = NULL, *hi = NULL;
    LcJob J;
    memset(&J, 0, sizeof J);
    if (PyObject_GetBuffer(oG, &g, PyBUF_STRIDES | PyBUF_FORMAT) < 0)
        return NULL;
    have_g = 1;
    if (g.ndim != 2 || kind(&g) != 'd' || !PyBuffer_IsContiguous(&g, 'C')) {
        PyErr_SetString(PyExc_TypeError, "lincomb: `G` must be a C-contiguous 2-D float64 array");
        goto done;
    }
    const Py_ssize_t m = g.shape[0], k = g.shape[1];
    if (run && (PyList_Check(osrc) || PyTuple_Check(osrc))) {
        PyErr_SetString(PyExc_TypeError, "lincomb: with `run`, `srcs` must be one 1-D array");
        goto done;
    }
    if ((PyList_Check(osrc) || PyTuple_Check(osrc)) && !(fs = PySequence_Fast(osrc, "srcs")))
        goto done;
    if ((PyList_Check(odst) || PyTuple_Check(odst)) && !(fd = PySequence_Fast(odst, "dsts")))
        goto done;
    Py_ssize_t ns = lc_buffers(fs ? fs : osrc, 0, &sb, &nsb, &smat);
    if (ns < 0)
        goto done;
    Py_ssize_t nd = lc_buffers(fd ? fd : odst, 1, &db, &ndb, &dmat);
    if (nd < 0)
        goto done;
    /* the outputs: R x C values each (pairs: C complex values, 2C floats per row) */
    Py_ssize_t R, C, nout;
    if (!nd) {
        PyErr_SetString(PyExc_ValueError, "lincomb: `dsts` is empty (no outputs)");
        goto done;
    }
    char kd = fp ? (is_i64(&db[0]) ? 'q' : 0) : kind(&db[0]);
    if (!kd) {
        PyErr_SetString(PyExc_TypeError, fp ? "lincomb: with `p`, `dsts` must be int64 arrays"
                                            : "lincomb: `dsts` must be float64 or float32 arrays");
        goto done;
    }
    if (fp) {   /* the coefficients: integers in [0, p), every sum exact in double */
        const double *gv = (const double *)g.buf;
        for (Py_ssize_t i = 0; i < g.shape[0] * g.shape[1]; i++)
            if (!(gv[i] >= 0.0 && gv[i] < md[0] && gv[i] == (double)(int64_t)gv[i])) {
                PyErr_Format(PyExc_ValueError, "lincomb: `G` must hold integers in [0, p) with "
                             "`p`; entry %zd is not", i);
                goto done;
            }
        if ((double)g.shape[1] * (md[0] - 1.0) * (md[0] - 1.0) > 4503599627370496.0) {
            PyErr_Format(PyExc_ValueError, "lincomb: %zd sources of GF(%lld) can sum past 2**52 "
                         "(k (p - 1)**2 must be at most 2**52)", g.shape[1], fp);
            goto done;
        }
        if ((double)g.shape[1] * (md[0] - 1.0) * (md[0] - 1.0) <= 1125899906842624.0)   /* 2**50 */
            md[2] = nextafter(1.0 / md[0], INFINITY);
    }
    {
        Py_ssize_t r0, c0, s0;
        if (layout("lincomb", &db[0], dmat ? "dsts" : "dsts[0]", &r0, &c0, &s0) < 0)
            goto done;
        if (dmat) {
            nout = r0;
            R = 1;
            C = c0;
        } else {
            nout = nd;
            R = r0;
            C = c0;
        }
        if (pairs && C % 2) {
            PyErr_Format(PyExc_ValueError,
                         "lincomb: with `pairs` the outputs' rows must hold interleaved complex "
                         "values (an even count), got %zd", C);
            goto done;
        }
        if (pairs)
            C /= 2;
    }
    if (m != (pairs ? 2 * nout : nout)) {
        PyErr_Format(PyExc_ValueError, "lincomb: `G` has %zd rows for %zd outputs%s", m, nout,
                     pairs ? " (pairs: 2 rows per output)" : "");
        goto done;
    }
    if (run && (sb[0].ndim != 1 || (sb[0].shape[0] > 1 && sb[0].strides[0] != sb[0].itemsize))) {
        PyErr_SetString(PyExc_ValueError, "lincomb: with `run`, `srcs` must be one contiguous "
                        "1-D array");
        goto done;
    }
    if (run && run > C) {
        PyErr_Format(PyExc_ValueError, "lincomb: `run` (%zd) is longer than the outputs' rows "
                     "(%zd)", run, C);
        goto done;
    }
    if (run && sb[0].shape[0] / run + (sb[0].shape[0] % run != 0) > k) {
        PyErr_Format(PyExc_ValueError, "lincomb: `srcs` holds %zd values, more than %zd "
                     "sources of `run` %zd", sb[0].shape[0], k, run);
        goto done;
    }
    Py_ssize_t nsrc = run ? k : smat ? sb[0].ndim == 2 ? sb[0].shape[0] : 1 : ns;
    if (nsrc != k) {
        PyErr_Format(PyExc_ValueError, "lincomb: `G` has %zd columns for %zd sources", k, nsrc);
        goto done;
    }
    src = PyMem_Calloc(k ? (size_t)k : 1, sizeof(LcSrc));
    dst = PyMem_Calloc((size_t)nout, sizeof(LcDst));
    if (!src || !dst) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nd; i++) {
        Py_ssize_t r, c, s;
        if ((fp ? (is_i64(&db[i]) ? 'q' : 0) : kind(&db[i])) != kd) {
            PyErr_Format(PyExc_TypeError, "lincomb: `dsts[%zd]` is not of `dsts[0]`'s dtype", i);
            goto done;
        }
        char nm[40];
        snprintf(nm, sizeof nm, dmat ? "dsts" : "dsts[%zd]", i);
        if (layout("lincomb", &db[i], nm, &r, &c, &s) < 0)
            goto done;
        if (dmat) {
            for (Py_ssize_t o = 0; o < nout; o++)
                dst[o] = (LcDst){(char *)db[0].buf + o * s, 0};
        } else {
            if (r != R || c != (pairs ? 2 * C : C)) {
                PyErr_Format(PyExc_ValueError, "lincomb: `dsts[%zd]` is %zd x %zd, `dsts[0]` "
                             "%zd x %zd", i, r, c, R, pairs ? 2 * C : C);
                goto done;
            }
            if (r > 1 && c > 0 && (s < 0 ? -s : s) < c * db[i].itemsize) {
                PyErr_Format(PyExc_ValueError, "lincomb: the rows of `dsts[%zd]` overlap each "
                             "other in memory", i);
                goto done;
            }
            dst[i] = (LcDst){(char *)db[i].buf, s};
        }
    }
    for (Py_ssize_t j = 0; j < ns; j++) {
        Py_ssize_t r, c, s;
        char ks = fp ? (is_i64(&sb[j]) ? 'q' : 0) : kind(&sb[j]);
        if (!ks) {
            PyErr_Format(PyExc_TypeError, fp ? "lincomb: with `p`, `srcs[%zd]` must be int64"
                                             : "lincomb: `srcs[%zd]` must be float64 or float32", j);
            goto done;
        }
        char nm[40];
        snprintf(nm, sizeof nm, smat ? "srcs" : "srcs[%zd]", j);
        if (layout("lincomb", &sb[j], nm, &r, &c, &s) < 0)
            goto done;
        if (run) {   /* source i: values i run .. (i + 1) run, as far as the array goes */
            const Py_ssize_t full = c / run, rest = c % run;   /* whole sources; the last */
            for (Py_ssize_t i = 0; i < k; i++) {
                const Py_ssize_t a = i <= full ? i * run : c;
                const Py_ssize_t n = i < full ? run : i == full ? rest : 0;
                src[i] = (LcSrc){(const char *)sb[0].buf + a * sb[0].itemsize, 1, n, 0, ks};
            }
        } else if (smat) {
            for (Py_ssize_t i = 0; i < k; i++)
                src[i] = (LcSrc){(const char *)sb[0].buf + i * s, 1, c, 0, ks};
            if (c > C) {
                PyErr_Format(PyExc_ValueError, "lincomb: `srcs` has %zd columns, the outputs "
                             "%zd", c, C);
                goto done;
            }
        } else {
            if (r > R || c > C) {
                PyErr_Format(PyExc_ValueError, "lincomb: `srcs[%zd]` is %zd x %zd, larger than "
                             "the outputs' %zd x %zd", j, r, c, R, C);
                goto done;
            }
            src[j] = (LcSrc){(const char *)sb[j].buf, r, c, s, ks};
        }
    }
    if (osq != Py_None) {
        if (PyObject_GetBuffer(osq, &q, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE) < 0)
            goto done;
        have_q = 1;
        if (q.ndim != 1 || kind(&q) != 'd' || q.shape[0] != nout
            || (q.shape[0] > 1 && q.strides[0] != 8)) {
            PyErr_Format(PyExc_ValueError, "lincomb: `sq` must be a contiguous 1-D float64 "
                         "array of %zd entries (one per output)", nout);
            goto done;
        }
    }
    {
        /* every destination against every other, every source and sq */
        const Py_ssize_t n = nout + k + 1;
        const Py_ssize_t item = db[0].itemsize, dc = pairs ? 2 * C : C;
        lo = PyMem_Calloc((size_t)n * 4, sizeof(uintptr_t));
        hi = lo ? lo + n : NULL;
        if (!lo) {
            PyErr_NoMemory();
            goto done;
        }
        /* per span: its row stride (0: one row) and row width in bytes */
        Py_ssize_t *rs = (Py_ssize_t *)(lo + 2 * n), *rw = rs + n;
        for (Py_ssize_t o = 0; o < nout; o++) {
            extent(dst[o].p, R, dc, dst[o].stride, item, &lo[o], &hi[o]);
            rs[o] = R > 1 ? dst[o].stride : 0;
            rw[o] = dc * item;
        }
        for (Py_ssize_t j = 0; j < k; j++) {
            extent(src[j].p, src[j].rows, src[j].cols, src[j].stride,
                   lc_size(src[j].k), &lo[nout + j], &hi[nout + j]);
            rs[nout + j] = src[j].rows > 1 ? src[j].stride : 0;
            rw[nout + j] = src[j].cols * lc_size(src[j].k);
        }
        if (have_q)
            extent(q.buf, 1, nout, 0, 8, &lo[n - 1], &hi[n - 1]);
        for (Py_ssize_t a = 0; a < nout; a++)
            for (Py_ssize_t b = a + 1; b < n; b++)
                if (meet(lo[a], hi[a], lo[b], hi[b])
                    && !(b < n - 1 && rs[a] == rs[b]
                         && lc_apart(lo[a], rw[a], lo[b], rw[b], rs[a]))) {
                    char what[48];
                    if (b < nout)
                        snprintf(what, sizeof what, "dsts[%zd]", b);
                    else if (b < n - 1)
                        snprintf(what, sizeof what, "srcs[%zd]", b - nout);
                    else
                        snprintf(what, sizeof what, "sq");
                    PyErr_Format(PyExc_ValueError,
                                 "lincomb: `dsts[%zd]` and `%s` overlap in memory", a, what);
                    goto done;
                }
        /* what is written (the outputs, sq) against G, and sq against the sources */
        uintptr_t glo, ghi;
        extent(g.buf, 1, g.shape[0] * g.shape[1], 0, 8, &glo, &ghi);
        for (Py_ssize_t a = 0; a < n; a++) {
            const int written = a < nout || a == n - 1;
            if (written && meet(lo[a], hi[a], glo, ghi)) {
                PyErr_SetString(PyExc_ValueError, a < nout
                                ? "lincomb: `G` overlaps an output in memory"
                                : "lincomb: `G` and `sq` overlap in memory");
                goto done;
            }
            if (a >= nout && a < n - 1 && meet(lo[a], hi[a], lo[n - 1], hi[n - 1])) {
                PyErr_Format(PyExc_ValueError, "lincomb: `sq` and `srcs[%zd]` overlap in memory",
                             a - nout);
                goto done;
            }
        }
    }
    {
        J.G = (const double *)g.buf;
        J.m = m;
        J.k = k;
        J.R = R;
        J.C = C;
        J.item = db[0].itemsize;
        J.src = src;
        J.dst = dst;
        J.kd = kd;
        J.pairs = pairs;
        J.stream = stream;
        J.simd = simd < 0 || simd > lc_simd_ok ? lc_simd_ok : simd;
        J.sq = have_q ? (double *)q.buf : NULL;
        J.md = fp ? md : NULL;
        J.glive = PyMem_Calloc(k ? (size_t)k : 1, sizeof(int));
        J.xp = PyMem_Calloc(k ? (size_t)k : 1, sizeof(double *));
        const size_t mm = (size_t)(m ? m : 1), kk = (size_t)(k ? k : 1);
        J.gl = PyMem_Calloc(mm * kk + 4 * mm, sizeof(int));
        J.gn = J.gl ? J.gl + mm * kk : NULL;
        J.po = J.gl ? J.gn + mm : NULL;
        J.pr = J.gl ? J.po + mm : NULL;
        J.dj = J.gl ? J.pr + mm : NULL;
        J.islive = PyMem_Calloc(k ? (size_t)k : 1, 1);
        J.fj = PyMem_Calloc(kk, sizeof(int));
        if (!J.glive || !J.xp || !J.gl || !J.islive || !J.fj) {
            PyErr_NoMemory();
            goto done;
        }
        /* the passes: up to 4 consecutive rows (pairs: 2 outputs; 8 dense rows on AVX-512
           with at least LC_WIDE_K sources, or 8 and 24 rows) alike in density, so that
           a systematic code's identity rows run together (one term each) and its dense
           parity rows together, not a parity row beside three identity rows that would then
           take every term; per pass, the sources with a coefficient in its rows */
        const Py_ssize_t unit = pairs ? 2 : 1;
        int dense_passes = 0;
        for (Py_ssize_t o = 0; o < m;) {
            const int dense = lc_dense(J.G, o, unit, k);
            /* dense rows on AVX-512 up to 8 a pass (lc512_8: 16 sums in registers) where
               there are many sources, so that the tile is read by half as many passes (each
               row the same multiply-adds as alone, but for the 0 x terms of a zero
               coefficient, which change only a -0.0 sum or an Inf source's row); with
               few sources a pass's stores weigh more than its reads of the tile, and 8 rows
               a pass ran 1.00-1.07x the time (MDS(8, 6): 12 sources, Polynomial(17, 4x4): 8).
               Since the passes stream their rows (thirty-first session), 8 rows a pass with
               8-15 sources took Polynomial(17, 4x4) float64 0.74-0.81x the time, float32
               0.92x, PolyDot(17, 2x2x3) 0.94-0.97x (their 34 rows: 5 passes, not 9), but
               MDS(8, 6) 1.03-1.13x (16 rows: 2 passes, not 4): with fewer than 16 sources,
               8 rows where there are 24 or more */
            const Py_ssize_t most = dense && J.simd == 2 && (k >= LC_WIDE_K || (k >= 8 && m >= 24)) ? 8 : 4;
            Py_ssize_t nr = unit;
            while (nr + unit <= most && o + nr < m && lc_dense(J.G, o + nr, unit, k) == dense)
                nr += unit;
            const Py_ssize_t p = J.npass++;
            J.gn[p] = lc_used(J.G, o, nr, k, J.gl + p * k);
            J.po[p] = (int)o;
            J.pr[p] = (int)nr;
            /* diagonal (a systematic code's identity rows): each row one coefficient, so
               each row runs alone with its one source, not with every source of the pass */
            int diag = !pairs;
            for (Py_ssize_t h = o; h < o + nr; h++) {
                int one = -1;
                for (Py_ssize_t j = 0; j < k && diag; j++)
                    if (J.G[h * k + j] != 0.0) {
                        diag = one < 0;
                        one = (int)j;
                    }
                diag &= one >= 0;
                J.dj[h] = one;
            }
            for (Py_ssize_t h = o; h < o + nr; h++)
                J.dj[h] = diag ? J.dj[h] : -1;
            dense_passes += !diag;
            o += nr;
        }
        /* identity rows written by the loop that loads their source (the first such row of
           each source): a coefficient of exactly 1 into the source's own element type, so
           the copy is the value as it is, as the pass would have stored it */
        for (Py_ssize_t j = 0; j < k; j++)
            J.fj[j] = -1;
        for (Py_ssize_t h = 0; h < m; h++) {
            const int j = J.dj[h];
            if (j >= 0 && J.G[h * k + j] == 1.0 && J.fj[j] < 0 && src[j].k == kd)
                J.fj[j] = (int)h;
        }
        /* the accumulating walk (lc_run_acc) where it applies: every row an identity row
           fused to its source, every source with one, but one dense pass */
        if (J.simd == 2 && !pairs && dense_passes == 1) {
            int ok = 1, pd = -1;
            for (Py_ssize_t p = 0; p < J.npass && ok; p++) {
                const int o = J.po[p];
                if (J.dj[o] < 0) {
                    pd = (int)p;
                    ok &= J.pr[p] <= 4;   /* (its sums: at most 4 rows) */
                    continue;
                }
                for (Py_ssize_t h = o; h < o + J.pr[p]; h++)
                    ok &= J.fj[J.dj[h]] == (int)h;
            }
            for (Py_ssize_t j = 0; j < k; j++)
                ok &= J.fj[j] >= 0;
            J.acc = ok && pd >= 0 ? pd + 1 : 0;
        }
        /* GF(p), no diagonal pass, 8 to LC_DIRECT_MAX rows, every sum at most
           2**50 (md[2]: the floor quotient, lc512_mod's FL form): the direct walk
           (lc_run_direct; every source is int64 with p) */
#if CODEDML_AVX2
        if (J.simd == 2 && J.md && J.md[2] > 0.0 && !pairs && dense_passes == J.npass
            && m >= 8 && m <= LC_DIRECT_MAX) {
            int ok = 1;
            for (Py_ssize_t j = 0; j < k; j++)
                ok &= src[j].k == 'q';
            J.direct = ok;
        }
#endif
        /* the tile: large where at most one pass reads it (the sources in long runs), in L1
           where several passes read it again and again (LC_TILE_BYTES) */
        J.bodies = dense_passes;
        /* the passes that ask for the next tile (the AVX2 GF(p) passes take none) */
        if (J.direct || (J.simd && J.bodies > 1 && (J.simd == 2 || !J.md))) {
            J.pfp = PyMem_Calloc(kk, sizeof(char *));
            J.pfn = PyMem_Calloc(kk, sizeof(Py_ssize_t));
            if (!J.pfp || !J.pfn) {
                PyErr_NoMemory();
                goto done;
            }
        }
        /* GF(p) with several dense passes and more than 8 sources takes the large tile too
           (in L1 its sources' runs would be under 4 KiB; the passes then read the tile from
           L2, while the next tile's runs are prefetched): GF(65537) MDS(17, 15), 15 sources,
           0.85-0.91x the encode time at 1024-4096 side by side (AVX2 0.89-0.94x); with
           its 4 sources the polynomial code's runs are 8 KiB in L1 already, and the large
           tile measured 0.95-1.04x there (the prefetch alone 0.94-0.99x); not past 1024
           sources, where its rows would be under 32 columns: no longer runs, only padding) */
        const Py_ssize_t tb = dense_passes <= 1 || (J.md && k > 8
                                                    && k * 2 * LC_GROUP * 8 <= LC_TILE_BIG)
                              ? LC_TILE_BIG : LC_TILE_BYTES;
        Py_ssize_t W = (tb / (Py_ssize_t)sizeof(double) / (k ? k : 1)) / LC_GROUP * LC_GROUP;
        W = W < LC_GROUP ? LC_GROUP : W > LC_MAX_W ? LC_MAX_W : W;
        if (J.acc) {   /* the pass rows' sums in cache, the sources in runs of W */
            W = LC_ACC_BYTES / (Py_ssize_t)sizeof(double) / J.pr[J.acc - 1] / LC_GROUP * LC_GROUP;
            W = W < LC_GROUP ? LC_GROUP : W;
        }
        Py_ssize_t Cp = (C + LC_GROUP - 1) / LC_GROUP * LC_GROUP;
        W = W > Cp ? (Cp ? Cp : LC_GROUP) : W;
        J.W = W;
        J.ts = W + (tb == LC_TILE_BIG ? LC_PAD : 0);
        /* the tile, four scratch rows (eight where a pass has more than four rows) and G's
           zero row, 64-byte aligned (one block) */
        Py_ssize_t ny = 4;
        for (Py_ssize_t p = 0; p < J.npass; p++)
            ny = J.pr[p] > 4 ? 8 : ny;
        size_t doubles = (J.direct ? (size_t)m * (size_t)k : (size_t)(J.acc ? 0 : k ? k : 1) * (size_t)J.ts) + (size_t)ny * (size_t)W
                         + (J.acc ? 4 * LC_ACC_PAD : 0) + (size_t)(k ? k : 1) + 8;
        char *mem = PyMem_Malloc(doubles * sizeof(double) + 64);
        if (!mem) {
            PyErr_NoMemory();
            goto done;
        }
        double *base = (double *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
        J.tile = base;
        J.y = base + (J.direct ? (size_t)m * (size_t)k : (size_t)(J.acc ? 0 : k ? k : 1) * (size_t)J.ts);
        J.zero = J.y + ny * W + (J.acc ? 4 * LC_ACC_PAD : 0);
        memset(J.zero, 0, ((size_t)(k ? k : 1) + 8) * sizeof(double));
        if (R && C && m) {
            Py_BEGIN_ALLOW_THREADS
            lc_run(&J);
            Py_END_ALLOW_THREADS
        }
        PyMem_Free(mem);
        result = fp ? PyLong_FromUnsignedLongLong((unsigned long long)J.umax) : Py_NewRef(Py_None);
    }
done:
    PyMem_Free(J.glive);
    PyMem_Free((void *)J.xp);
    PyMem_Free(J.gl);
    PyMem_Free(J.islive);
    PyMem_Free(J.fj);
    PyMem_Free((void *)J.pfp);
    PyMem_Free(J.pfn);
    PyMem_Free(lo);
    PyMem_Free(src);
    PyMem_Free(dst);
    if (have_q)
        PyBuffer_Release(&q);
    lc_release(db, ndb);
    lc_release(sb, nsb);
    Py_XDECREF(fs);
    Py_XDECREF(fd);
    if (have_g)
        PyBuffer_Release(&g);
    return result;
}

/* proj_sq(srcs, u, v, proj, sq, simd=-1, halves=False) -> None: the decoder's consistency check in one
   pass over the results (codedml/codes/_base.py, ``_project_sq``). ``srcs``: a sequence of
   m arrays of one shape x by y (1-D: one row), float64 or float32, rows contiguous (at any
   stride); ``u`` (k x x) and ``v`` (k x y): float64, C-contiguous, 1 <= k <= PS_KMAX. Writes
   ``proj[s, j] = u_j . (src_s v_j)`` (the random projections: ``u_j X v_j``) and ``sq[s]`` =
   the sum of the squares of src_s's values, all in double; ``proj`` (m x k) and ``sq`` (m)
   float64, C-contiguous, written. Per row, the k dot products with the rows of ``v`` and the
   row's squares are summed from one load of each value (AVX2 and FMA where the CPU has both
   and ``simd`` is not 0: four lanes, two steps a turn), then the row's sums weighted by
   ``u``. A NaN or Inf in a source makes its squares' sum and every projection NaN or Inf
   (``u`` and ``v`` without zeros: the decoder's draws), as numpy's products would. The sums'
   order differs from numpy's GEMM: the values agree to rounding, not bit for bit. The GIL
   is released during the loop. With ``halves`` each source is 2x by y, packed complex
   values (the top x rows their real parts, the rest their imaginary parts): each half is
   projected as a source of its own, ``proj`` (m x 2k) gets ``proj[s, 2j]`` from the top
   and ``proj[s, 2j + 1]`` from the bottom (the complex projections, interleaved as a
   complex128 array's values) and ``sq[s]`` the top's sum of squares plus the bottom's. */
#define PS_KMAX 8

/* one row of n values (float64 or float32) against the k rows of v (row stride y): its k
   dot products into t, its squares added to *q; plain C, four lanes */
#define PS_ROW_C(NAME, ST)                                                                    \
    static void NAME(const ST *x, Py_ssize_t n, const double *v, Py_ssize_t y, int k,         \
                     double *t, double *q)                                                    \
    {                                                                                         \
        double a[PS_KMAX][4] = {{0.0}}, s[4] = {0.0, 0.0, 0.0, 0.0};                          \
        Py_ssize_t b = 0;                                                                     \
        for (; b + 4 <= n; b += 4) {                                                          \
            double x0 = x[b], x1 = x[b + 1], x2 = x[b + 2], x3 = x[b + 3];                    \
            s[0] += x0 * x0;                                                                  \
            s[1] += x1 * x1;                                                                  \
            s[2] += x2 * x2;                                                                  \
            s[3] += x3 * x3;                                                                  \
            for (int j = 0; j < k; j++) {                                                     \
                const double *vj = v + j * y + b;                                             \
                a[j][0] += x0 * vj[0];                                                        \
                a[j][1] += x1 * vj[1];                                                        \
                a[j][2] += x2 * vj[2];                                                        \
                a[j][3] += x3 * vj[3];                                                        \
            }                                                                                 \
        }                                                                                     \
        for (; b < n; b++) {                                                                  \
            double xb = x[b];                                                                 \
            s[0] += xb * xb;                                                                  \
            for (int j = 0; j < k; j++)                                                       \
                a[j][0] += xb * v[j * y + b];                                                 \
        }                                                                                     \
        for (int j = 0; j < k; j++)                                                           \
            t[j] = (a[j][0] + a[j][1]) + (a[j][2] + a[j][3]);                                 \
        *q += (s[0] + s[1]) + (s[2] + s[3]);                                                  \
    }

PS_ROW_C(ps_row_d, double)
PS_ROW_C(ps_row_f, float)

#if CODEDML_ROW_AVX2
ROW_A2 static inline double ps_hsum(__m256d a)
{
    __m128d lo = _mm256_castpd256_pd128(a), hi = _mm256_extractf128_pd(a, 1);
    __m128d s = _mm_add_pd(lo, hi);
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* ps_row_c for k == 4 in AVX2: ten accumulators (two steps of four values a turn) */
#define PS_ROW_A2(NAME, ST, LOAD)                                                             \
    ROW_A2 static void NAME(const ST *x, Py_ssize_t n, const double *v, Py_ssize_t y,         \
                            double *t, double *q)                                             \
    {                                                                                         \
        const double *v0 = v, *v1 = v + y, *v2 = v + 2 * y, *v3 = v + 3 * y;                  \
        __m256d s0 = _mm256_setzero_pd(), s1 = s0, a0 = s0, a1 = s0, a2 = s0, a3 = s0;        \
        __m256d b0 = s0, b1 = s0, b2 = s0, b3 = s0;                                           \
        Py_ssize_t b = 0;                                                                     \
        for (; b + 8 <= n; b += 8) {                                                          \
            __m256d x0 = LOAD(x + b), x1 = LOAD(x + b + 4);                                   \
            s0 = _mm256_fmadd_pd(x0, x0, s0);                                                 \
            s1 = _mm256_fmadd_pd(x1, x1, s1);                                                 \
            a0 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v0 + b), a0);                            \
            a1 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v1 + b), a1);                            \
            a2 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v2 + b), a2);                            \
            a3 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v3 + b), a3);                            \
            b0 = _mm256_fmadd_pd(x1, _mm256_loadu_pd(v0 + b + 4), b0);                        \
            b1 = _mm256_fmadd_pd(x1, _mm256_loadu_pd(v1 + b + 4), b1);                        \
            b2 = _mm256_fmadd_pd(x1, _mm256_loadu_pd(v2 + b + 4), b2);                        \
            b3 = _mm256_fmadd_pd(x1, _mm256_loadu_pd(v3 + b + 4), b3);                        \
        }                                                                                     \
        if (b + 4 <= n) {                                                                     \
            __m256d x0 = LOAD(x + b);                                                         \
            s0 = _mm256_fmadd_pd(x0, x0, s0);                                                 \
            a0 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v0 + b), a0);                            \
            a1 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v1 + b), a1);                            \
            a2 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v2 + b), a2);                            \
            a3 = _mm256_fmadd_pd(x0, _mm256_loadu_pd(v3 + b), a3);                            \
            b += 4;                                                                           \
        }                                                                                     \
        double r0 = ps_hsum(_mm256_add_pd(a0, b0)), r1 = ps_hsum(_mm256_add_pd(a1, b1));      \
        double r2 = ps_hsum(_mm256_add_pd(a2, b2)), r3 = ps_hsum(_mm256_add_pd(a3, b3));      \
        double sq = ps_hsum(_mm256_add_pd(s0, s1));                                           \
        for (; b < n; b++) {                                                                  \
            double xb = x[b];                                                                 \
            sq += xb * xb;                                                                    \
            r0 += xb * v0[b];                                                                 \
            r1 += xb * v1[b];                                                                 \
            r2 += xb * v2[b];                                                                 \
            r3 += xb * v3[b];                                                                 \
        }                                                                                     \
        t[0] = r0;                                                                            \
        t[1] = r1;                                                                            \
        t[2] = r2;                                                                            \
        t[3] = r3;                                                                            \
        *q += sq;                                                                             \
    }

#define PS_LOAD_D(p) _mm256_loadu_pd(p)
#define PS_LOAD_F(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
PS_ROW_A2(ps_row_d_a2, double, PS_LOAD_D)
PS_ROW_A2(ps_row_f_a2, float, PS_LOAD_F)
#endif

static PyObject *proj_sq(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"srcs", "u", "v", "proj", "sq", "simd", "halves", NULL};
    PyObject *osrcs, *ou, *ov, *oproj, *osq;
    int simd = -1, halves = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|ip:proj_sq", names, &osrcs, &ou, &ov,
                                     &oproj, &osq, &simd, &halves))
        return NULL;
    const Py_ssize_t nh = halves ? 2 : 1;   /* projected parts per source */
    /* a tuple of its own: nothing a buffer export runs can change the sources' count */
    PyObject *seq = PySequence_Check(osrcs) ? PySequence_Tuple(osrcs) : NULL;
    if (!seq) {
        if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "proj_sq: `srcs` must be a sequence of arrays");
        }
        return NULL;
    }
    const Py_ssize_t m = PyTuple_GET_SIZE(seq);
    Py_buffer u, v, p, q;
    PyObject *const objs[4] = {ou, ov, oproj, osq};
    Py_buffer *const bufs[4] = {&u, &v, &p, &q};
    int have[4];
    static const char *const nm[4] = {"u", "v", "proj", "sq"};
    if (get_buffers("proj_sq", 4, objs, bufs, "rrww", nm, have) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *result = NULL;
    Py_buffer *sb = PyMem_Calloc(m > 0 ? (size_t)m : 1, sizeof(Py_buffer));
    Py_ssize_t *stride = PyMem_Malloc((m > 0 ? (size_t)m : 1) * sizeof(Py_ssize_t));
    Py_ssize_t got = 0;
    if (!sb || !stride) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t ur, uc, vr, vc;
    if (kind(&u) != 'd' || kind(&v) != 'd' || kind(&p) != 'd' || kind(&q) != 'd') {
        PyErr_SetString(PyExc_TypeError, "proj_sq: `u`, `v`, `proj` and `sq` must be float64");
        goto done;
    }
    if (u.ndim != 2 || v.ndim != 2 || !PyBuffer_IsContiguous(&u, 'C')
        || !PyBuffer_IsContiguous(&v, 'C')) {
        PyErr_SetString(PyExc_ValueError, "proj_sq: `u` and `v` must be 2-D and C-contiguous");
        goto done;
    }
    ur = u.shape[0], uc = u.shape[1];
    vr = v.shape[0], vc = v.shape[1];
    if (ur != vr || ur < 1 || ur > PS_KMAX) {
        PyErr_Format(PyExc_ValueError,
                     "proj_sq: `u` and `v` must have the same number of rows, 1 to %d; got %zd "
                     "and %zd", PS_KMAX, ur, vr);
        goto done;
    }
    const int k = (int)ur;
    if (p.ndim != 2 || p.shape[0] != m || p.shape[1] != nh * k || !PyBuffer_IsContiguous(&p, 'C')) {
        PyErr_Format(PyExc_ValueError,
                     "proj_sq: `proj` must be a C-contiguous %zd x %zd float64 array", m, nh * k);
        goto done;
    }
    if (q.ndim != 1 || q.shape[0] != m || (m > 1 && q.strides[0] != 8)) {
        PyErr_Format(PyExc_ValueError, "proj_sq: `sq` must be a contiguous float64 array of %zd", m);
        goto done;
    }
    for (; got < m; got++) {
        PyObject *o = PyTuple_GET_ITEM(seq, got);
        if (PyObject_GetBuffer(o, &sb[got], PyBUF_STRIDES | PyBUF_FORMAT) < 0)
            goto done;
    }
    const char ks = m > 0 ? kind(&sb[0]) : 'd';
    for (Py_ssize_t s = 0; s < m; s++) {
        Py_ssize_t r, c, st;
        if (kind(&sb[s]) != ks || !ks) {
            PyErr_Format(PyExc_TypeError,
                         "proj_sq: `srcs` must all be float64 or all float32 (source %zd)", s);
            goto done;
        }
        if (layout("proj_sq", &sb[s], "srcs[i]", &r, &c, &st) < 0) {
            goto done;
        }
        if (r != nh * uc || c != vc) {
            PyErr_Format(PyExc_ValueError,
                         "proj_sq: source %zd is %zd x %zd, but `u` and `v` are for %zd x %zd%s",
                         s, r, c, nh * uc, vc, halves ? " (two halves of rows)" : "");
            goto done;
        }
        stride[s] = st;
    }
    {
        /* nothing written may overlap anything read or written (the spans of their memory) */
        uintptr_t wlo[2], whi[2], lo, hi;
        extent(p.buf, m, nh * k, nh * k * 8, 8, &wlo[0], &whi[0]);
        extent(q.buf, 1, m, 0, 8, &wlo[1], &whi[1]);
        static const char *const what[2] = {"proj", "sq"};
        if (disjoint("proj_sq", 2, wlo, whi, what) < 0) {
            goto done;
        }
        for (Py_ssize_t s = -2; s < m; s++) {
            if (s == -2)
                extent(u.buf, 1, ur * uc, 0, 8, &lo, &hi);
            else if (s == -1)
                extent(v.buf, 1, vr * vc, 0, 8, &lo, &hi);
            else
                extent(sb[s].buf, nh * uc, vc, stride[s], sb[s].itemsize, &lo, &hi);
            for (int w = 0; w < 2; w++)
                if (meet(lo, hi, wlo[w], whi[w])) {
                    PyErr_Format(PyExc_ValueError, "proj_sq: `%s` overlaps %s in memory",
                                 what[w], s == -2 ? "`u`" : s == -1 ? "`v`" : "a source");
                    goto done;
                }
        }
    }
    {
        const double *U = (const double *)u.buf, *V = (const double *)v.buf;
        double *P = (double *)p.buf, *Q = (double *)q.buf;
        const Py_ssize_t x = uc, y = vc;
#if CODEDML_ROW_AVX2
        const int a2 = simd != 0 && row_avx2_ok && k == 4;
#else
        (void)simd;
#endif
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t s = 0; s < m; s++) {
          double tot = 0.0;
          for (Py_ssize_t h = 0; h < nh; h++) {   /* (halves: the top x rows, then the rest) */
            double acc[PS_KMAX] = {0.0}, t[PS_KMAX], sq = 0.0;
            const char *row = (const char *)sb[s].buf + h * x * stride[s];
            for (Py_ssize_t a = 0; a < x; a++, row += stride[s]) {
#if CODEDML_ROW_AVX2
                if (a2 && ks == 'd')
                    ps_row_d_a2((const double *)row, y, V, y, t, &sq);
                else if (a2)
                    ps_row_f_a2((const float *)row, y, V, y, t, &sq);
                else
#endif
                if (ks == 'd')
                    ps_row_d((const double *)row, y, V, y, k, t, &sq);
                else
                    ps_row_f((const float *)row, y, V, y, k, t, &sq);
                for (int j = 0; j < k; j++)
                    acc[j] += U[j * x + a] * t[j];
            }
            for (int j = 0; j < k; j++)
                P[(s * k + j) * nh + h] = acc[j];
            tot = h ? tot + sq : sq;
          }
          Q[s] = tot;
        }
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(Py_None);
    result = Py_None;
done:
    for (Py_ssize_t s = got - 1; s >= 0; s--)
        PyBuffer_Release(&sb[s]);
    PyMem_Free(sb);
    PyMem_Free(stride);
    release_buffers(4, bufs, have);
    Py_DECREF(seq);
    return result;
}

/* wresid(q0, w, y) -> (resmax, ykmax): the consistency check's weighted residual for one
   candidate set of results (codedml/codes/_base.py, ``_residual_all``), where numpy's
   ``np.linalg.qr`` and four small products cost tens of microseconds on a handful of rows.
   ``q0``: the r x d basis of the kept workers' evaluation rows (orthonormal columns), ``y``:
   their r x k projections, both complex and given as float64 arrays of r x 2d and r x 2k
   (the complex arrays' interleaved real views), C-contiguous; ``w``: the r weights (float64,
   contiguous). With ``B = diag(w) q0`` and ``Z = diag(w) y``: ``ykmax`` = max |Z_ij| and
   ``resmax`` = max |(Z - P Z)_ij| with P the orthogonal projector onto range(B), found by
   Householder reflections of B (each column first scaled by a power of two to a largest
   modulus in [0.5, 1): the same range, exactly, and no overflow in the reflections'
   norms) applied to Z, the first d rotated rows zeroed, then the reflections undone. The
   numbers are numpy's formula's up to rounding (a different QR of the same range; both
   err by a few eps max|Z| cond(B)), so a decision right at the check's threshold may
   differ. ``resmax`` is NaN where anything is not finite (numpy's products give NaN or
   Inf there) and where a scaled column keeps at most 1e-10 (absolute) outside the columns
   before it (B of lower rank, or close to it: no pivoting here, and numpy's QR would count
   a direction of rounding noise into the range); the caller then takes numpy's path. */
#define WR_MAX_ROWS 4096
#define WR_RANK_TOL 1e-10

typedef struct { double re, im; } wr_c;

static inline double wr_abs(wr_c z) { return hypot(z.re, z.im); }

/* max of a and b where a NaN (in either) wins */
static inline double wr_max(double a, double b)
{
    if (a != a || b != b)
        return NAN;
    return a > b ? a : b;
}

/* the reflection of column vectors: col[0..n) -= 2 (u^H col) u, u unit-norm, rows ``ld``
   apart (in wr_c) */
static void wr_reflect(const wr_c *u, Py_ssize_t n, wr_c *col, Py_ssize_t ld)
{
    double tr = 0.0, ti = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {   /* t = u^H col */
        wr_c a = u[i], b = col[i * ld];
        tr += a.re * b.re + a.im * b.im;
        ti += a.re * b.im - a.im * b.re;
    }
    tr *= 2.0;
    ti *= 2.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        wr_c a = u[i];
        col[i * ld].re -= tr * a.re - ti * a.im;
        col[i * ld].im -= tr * a.im + ti * a.re;
    }
}

/* the 2-norm of n values (rows ``ld`` apart) without overflow or underflow of its squares */
static double wr_norm(const wr_c *x, Py_ssize_t n, Py_ssize_t ld)
{
    double s = 0.0;
    for (Py_ssize_t i = 0; i < n; i++)
        s = wr_max(s, wr_abs(x[i * ld]));
    if (!(s > 0.0) || !isfinite(s))
        return s;
    double t = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double a = x[i * ld].re / s, b = x[i * ld].im / s;
        t += a * a + b * b;
    }
    return s * sqrt(t);
}

static PyObject *wresid(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *oq, *ow, *oy;
    if (!PyArg_ParseTuple(args, "OOO:wresid", &oq, &ow, &oy))
        return NULL;
    Py_buffer q, w, y;
    PyObject *const objs[3] = {oq, ow, oy};
    Py_buffer *const bufs[3] = {&q, &w, &y};
    int have[3];
    static const char *const nm[3] = {"q0", "w", "y"};
    if (get_buffers("wresid", 3, objs, bufs, "rrr", nm, have) < 0)
        return NULL;
    PyObject *result = NULL;
    wr_c *B = NULL, *Z = NULL, *U = NULL;
    if (kind(&q) != 'd' || kind(&w) != 'd' || kind(&y) != 'd') {
        PyErr_SetString(PyExc_TypeError, "wresid: `q0`, `w` and `y` must be float64");
        goto done;
    }
    if (q.ndim != 2 || y.ndim != 2 || w.ndim != 1 || !PyBuffer_IsContiguous(&q, 'C')
        || !PyBuffer_IsContiguous(&y, 'C') || !PyBuffer_IsContiguous(&w, 'C')) {
        PyErr_SetString(PyExc_ValueError,
                        "wresid: `q0` and `y` must be 2-D and `w` 1-D, all C-contiguous");
        goto done;
    }
    const Py_ssize_t r = q.shape[0], d = q.shape[1] / 2, k = y.shape[1] / 2;
    if (q.shape[1] % 2 || y.shape[1] % 2 || y.shape[0] != r || w.shape[0] != r) {
        PyErr_Format(PyExc_ValueError,
                     "wresid: `q0` (r x 2d), `w` (r) and `y` (r x 2k) must agree in r, with "
                     "even widths (complex values as pairs); got %zd x %zd, %zd and %zd x %zd",
                     q.shape[0], q.shape[1], w.shape[0], y.shape[0], y.shape[1]);
        goto done;
    }
    if (r < 1 || r > WR_MAX_ROWS || d < 1 || d > r || k < 1 || k > WR_MAX_ROWS) {
        PyErr_Format(PyExc_ValueError,
                     "wresid: needs 1 <= d <= r <= %d and 1 <= k <= %d; got r %zd, d %zd, k %zd",
                     WR_MAX_ROWS, WR_MAX_ROWS, r, d, k);
        goto done;
    }
    B = PyMem_Malloc((size_t)(r * d) * sizeof(wr_c));
    Z = PyMem_Malloc((size_t)(r * k) * sizeof(wr_c));
    U = PyMem_Malloc((size_t)(r * d) * sizeof(wr_c));   /* reflection j: U + j * r, r - j long */
    if (!B || !Z || !U) {
        PyErr_NoMemory();
        goto done;
    }
    const double *qv = q.buf, *wv = w.buf, *yv = y.buf;
    double ykmax = 0.0, resmax = 0.0;
    int ok = 1;
    for (Py_ssize_t i = 0; i < r; i++) {
        const double wi = wv[i];
        for (Py_ssize_t j = 0; j < d; j++)
            B[i * d + j] = (wr_c){wi * qv[2 * (i * d + j)], wi * qv[2 * (i * d + j) + 1]};
        for (Py_ssize_t c = 0; c < k; c++) {
            wr_c z = {wi * yv[2 * (i * k + c)], wi * yv[2 * (i * k + c) + 1]};
            Z[i * k + c] = z;
            ykmax = wr_max(ykmax, wr_abs(z));
        }
    }
    for (Py_ssize_t j = 0; j < d && ok; j++) {
        /* each column scaled by a power of two (exact) to a largest modulus in [0.5, 1) */
        double s = 0.0;
        for (Py_ssize_t i = 0; i < r; i++)
            s = wr_max(s, wr_abs(B[i * d + j]));
        if (!(s > 0.0) || !isfinite(s)) {   /* a zero column: not of full rank */
            ok = 0;
            break;
        }
        int e;
        (void)frexp(s, &e);
        const double f = ldexp(1.0, -e);
        for (Py_ssize_t i = 0; i < r; i++) {
            B[i * d + j].re *= f;
            B[i * d + j].im *= f;
        }
    }
    Py_ssize_t used = 0;   /* reflections made */
    for (Py_ssize_t j = 0; j < d && ok; j++) {
        wr_c *x = B + j * d + j, *u = U + j * r;
        const Py_ssize_t n = r - j;
        double nx = wr_norm(x, n, d);
        if (!isfinite(nx)) {
            ok = 0;
            break;
        }
        if (!(nx > WR_RANK_TOL)) {
            /* (almost) nothing of this column outside the ones before it: its part there
               is at most 1e-10, where the column's largest modulus is at least 0.5 (its
               norm 0.5 to sqrt(r)); declined, numpy's path then */
            ok = 0;
            break;
        }
        double a0 = wr_abs(x[0]);
        wr_c ph = a0 > 0.0 ? (wr_c){x[0].re / a0, x[0].im / a0} : (wr_c){1.0, 0.0};
        u[0] = (wr_c){x[0].re + ph.re * nx, x[0].im + ph.im * nx};   /* no cancellation */
        for (Py_ssize_t i = 1; i < n; i++)
            u[i] = x[i * d];
        double nu = wr_norm(u, n, 1);
        for (Py_ssize_t i = 0; i < n; i++) {
            u[i].re /= nu;
            u[i].im /= nu;
        }
        for (Py_ssize_t c = j + 1; c < d; c++)
            wr_reflect(u, n, B + j * d + c, d);
        for (Py_ssize_t c = 0; c < k; c++)
            wr_reflect(u, n, Z + j * k + c, k);
        used = j + 1;
    }
    if (ok) {
        for (Py_ssize_t i = 0; i < d * k; i++)   /* the component in range(B), rotated */
            Z[i] = (wr_c){0.0, 0.0};
        for (Py_ssize_t j = used - 1; j >= 0; j--)
            for (Py_ssize_t c = 0; c < k; c++)
                wr_reflect(U + j * r, r - j, Z + j * k + c, k);
        for (Py_ssize_t i = 0; i < r * k; i++)
            resmax = wr_max(resmax, wr_abs(Z[i]));
    }
    result = Py_BuildValue("(dd)", ok ? resmax : NAN, ykmax);
done:
    PyMem_Free(B);
    PyMem_Free(Z);
    PyMem_Free(U);
    release_buffers(3, bufs, have);
    return result;
}

/* small_rows(G, src, out, nsys, sq, per=1) -> None: a small encode's task rows in one call
   (codedml/codes/_encode.py's small_into, which both small encode paths call). ``src``: any
   C-contiguous float64 buffer, read as rows of L values (L: ``out``'s columns; values past
   its end read as zero: a short A's zero padding, without a padded copy); ``out`` (R x L,
   C-contiguous float64): rows o < nsys are source rows o as they are (copied, bits kept),
   rows o >= nsys are sum_j G[o - nsys, j] * row j, each product rounded and summed in order
   from 0 (no fused multiply-add: see NO_CONTRACT);
   ``sq`` (float64, R / per entries, C-contiguous) gets each group of ``per`` rows' sum of
   squares added. ``G``: (R - nsys) x K float64, C-contiguous (K source rows; the rows
   written as copies come from the first nsys). Outputs must not overlap the inputs or each
   other (ValueError naming them). For outputs of at most a few pages: the GIL is held. */
/* (no fused multiply-adds here whatever the build flags: -march=native or another target
   with FMA would otherwise let the compiler contract d[c] += x * row[c]) */
#if defined(__clang__)
#define NO_CONTRACT
#elif defined(__GNUC__)
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define NO_CONTRACT
#endif
/* small_rows' loop (and small_encode's): out (R x L) from G ((R - nsys) x K) and src (nv
   values), each group of `per` rows' sum of squares added into sq; the arguments checked. */
NO_CONTRACT static void small_rows_run(const double *G, const double *src, Py_ssize_t nv,
                                       double *out, Py_ssize_t R, Py_ssize_t L, Py_ssize_t K,
                                       Py_ssize_t nsys, double *sq, Py_ssize_t per)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    for (Py_ssize_t r = 0; r < R; r++) {
        double *d = out + r * L, acc = 0.0;
        if (r < nsys) {
            const Py_ssize_t at = r * L;
            for (Py_ssize_t c = 0; c < L; c++) {
                const double v = at + c < nv ? src[at + c] : 0.0;
                d[c] = v;
                acc += v * v;
            }
        } else {
            const double *g = G + (r - nsys) * K;
            for (Py_ssize_t c = 0; c < L; c++)
                d[c] = 0.0;
            for (Py_ssize_t j = 0; j < K; j++) {
                const double x = g[j];
                const Py_ssize_t at = j * L;
                if (at + L <= nv) {
                    const double *row = src + at;
                    for (Py_ssize_t c = 0; c < L; c++)
                        d[c] += x * row[c];
                } else {
                    for (Py_ssize_t c = 0; c < L; c++)
                        d[c] += x * (at + c < nv ? src[at + c] : 0.0);
                }
            }
            for (Py_ssize_t c = 0; c < L; c++)
                acc += d[c] * d[c];
        }
        sq[r / per] += acc;
    }
}

/* Whether small_rows' shapes agree (R x L out, G of (R - nsys) x K, nv source values, sq of
   nq entries, groups of per rows); else a ValueError naming them (`fn`'s). */
static int small_shapes_ok(const char *fn, Py_ssize_t Gr, Py_ssize_t K, Py_ssize_t nv,
                           Py_ssize_t R, Py_ssize_t L, Py_ssize_t nsys, Py_ssize_t nq,
                           Py_ssize_t per)
{
    if (nsys < 0 || nsys > R || Gr != R - nsys || per < 1 || R % per || nq != R / per
        || (R > nsys && nv > K * L) || nv > (nsys > K ? nsys : K) * L) {
        PyErr_Format(PyExc_ValueError, "%s: shapes do not agree (G %zd x %zd, %zd source "
                     "values, out %zd x %zd, nsys %zd, sq %zd, per %zd)", fn, Gr, K, nv, R, L,
                     nsys, nq, per);
        return 0;
    }
    return 1;
}

NO_CONTRACT static PyObject *small_rows(PyObject *self, PyObject *args, PyObject *kwargs)
{
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
    (void)self;
    static char *names[] = {"G", "src", "out", "nsys", "sq", "per", NULL};
    PyObject *o[4];
    Py_ssize_t nsys, per = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOnO|n:small_rows", names, &o[0], &o[1],
                                     &o[2], &nsys, &o[3], &per))
        return NULL;
    static const char *const what[4] = {"G", "src", "out", "sq"};
    Py_buffer b[4];
    int got = 0;
    PyObject *result = NULL;
    for (; got < 4; got++) {
        const int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (got >= 2 ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(o[got], &b[got], flags) < 0)
            goto done;
        if (native(&b[got]) != 'd' || b[got].itemsize != 8) {
            PyErr_Format(PyExc_ValueError, "small_rows: `%s` must be float64", what[got]);
            got++;
            goto done;
        }
    }
    if (b[0].ndim != 2 || b[2].ndim != 2 || b[3].ndim != 1) {
        PyErr_SetString(PyExc_ValueError, "small_rows: `G` and `out` must be 2-D, `sq` 1-D");
        goto done;
    }
    const Py_ssize_t R = b[2].shape[0], L = b[2].shape[1], K = b[0].shape[1];
    const Py_ssize_t nv = b[1].len / 8;
    if (!small_shapes_ok("small_rows", b[0].shape[0], K, nv, R, L, nsys, b[3].shape[0], per))
        goto done;
    {
        uintptr_t lo[4], hi[4];
        for (int i = 0; i < 4; i++) {
            lo[i] = (uintptr_t)b[i].buf;
            hi[i] = lo[i] + (uintptr_t)b[i].len;
        }
        static const int written[4] = {0, 0, 1, 1};   /* out, sq */
        if (apart("small_rows", 4, lo, hi, written, what) < 0)
            goto done;
    }
    small_rows_run(b[0].buf, b[1].buf, nv, b[2].buf, R, L, K, nsys, b[3].buf, per);
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < got && i < 4; i++)
        PyBuffer_Release(&b[i]);
    return result;
}

/* small_encode(G, src, out, nsys, per, b, bout) -> [scale, ...]: a small float64 encode in
   one call (PolyDotCode._encode_small): out's rows as small_rows(G, src, out, nsys, sq, per)
   writes them, b copied into bout as copy_sq(bout, b) copies it, and each of the R / per
   tasks' noise scale, sqrt(the sum of squares of its rows) * sqrt(b's), as Python floats:
   bit for bit the numbers small_rows, copy_sq and math.sqrt gave apart. Every buffer
   float64 and C-contiguous (G and out 2-D, b and bout of one shape, 1-D or 2-D), the
   shapes as small_rows', and what is written (out, bout) overlapping nothing else
   (ValueError naming them). The GIL is held (a few pages at most). */
NO_CONTRACT static PyObject *small_encode(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *o[5];
    Py_ssize_t nsys, per;
    if (!PyArg_ParseTuple(args, "OOOnnOO:small_encode", &o[0], &o[1], &o[2], &nsys, &per, &o[3],
                          &o[4]))
        return NULL;
    static const char *const nm[5] = {"G", "src", "out", "b", "bout"};
    Py_buffer b[5];
    Py_buffer *const bufs[5] = {&b[0], &b[1], &b[2], &b[3], &b[4]};
    int have[5];
    if (get_buffers("small_encode", 5, o, bufs, "rrwrw", nm, have) < 0)
        return NULL;
    PyObject *result = NULL;
    double *sq = NULL;
    for (int i = 0; i < 5; i++)
        if (kind(&b[i]) != 'd' || !PyBuffer_IsContiguous(&b[i], 'C')) {
            PyErr_Format(PyExc_ValueError, "small_encode: `%s` must be a C-contiguous float64 "
                         "array, got format '%s'%s", nm[i], b[i].format ? b[i].format : "B",
                         PyBuffer_IsContiguous(&b[i], 'C') ? "" : ", not C-contiguous");
            goto done;
        }
    if (b[0].ndim != 2 || b[2].ndim != 2 || b[3].ndim < 1 || b[3].ndim > 2 ||
        b[4].ndim != b[3].ndim || b[4].shape[0] != b[3].shape[0] ||
        (b[3].ndim == 2 && b[4].shape[1] != b[3].shape[1])) {
        PyErr_Format(PyExc_ValueError, "small_encode: `G` and `out` must be 2-D, `b` and "
                     "`bout` of one shape, 1-D or 2-D; got G %d-D, out %d-D, b %d-D and bout "
                     "%d-D of %zd and %zd values", b[0].ndim, b[2].ndim, b[3].ndim, b[4].ndim,
                     b[3].len / 8, b[4].len / 8);
        goto done;
    }
    const Py_ssize_t R = b[2].shape[0], L = b[2].shape[1], K = b[0].shape[1];
    const Py_ssize_t nv = b[1].len / 8;
    if (!small_shapes_ok("small_encode", b[0].shape[0], K, nv, R, L, nsys, per ? R / per : -1,
                         per))
        goto done;
    {
        uintptr_t lo[5], hi[5];
        for (int i = 0; i < 5; i++) {
            lo[i] = (uintptr_t)b[i].buf;
            hi[i] = lo[i] + (uintptr_t)b[i].len;
        }
        static const int written[5] = {0, 0, 1, 0, 1};   /* out, bout */
        if (apart("small_encode", 5, lo, hi, written, nm) < 0)
            goto done;
    }
    sq = PyMem_Calloc(R / per ? R / per : 1, sizeof(double));
    if (!sq) {
        PyErr_NoMemory();
        goto done;
    }
    small_rows_run(b[0].buf, b[1].buf, nv, b[2].buf, R, L, K, nsys, sq, per);
    {
        /* b's copy and its sum of squares: copy_sq's rows, in its order */
        Py_ssize_t br, bc, bs, orr, oc, os;
        if (layout("small_encode", &b[3], "b", &br, &bc, &bs) < 0 ||
            layout("small_encode", &b[4], "bout", &orr, &oc, &os) < 0)
            goto done;
        double total = 0.0;
        for (Py_ssize_t r = 0; r < br; r++)
            total += row_any('d', 'd', (const char *)b[3].buf + r * bs, (char *)b[4].buf + r * os,
                             NULL, bc, 0, 1.0, 1, row_avx2_ok, 0, NULL, 0, NULL);
        const double rb = sqrt(total);
        result = PyList_New(R / per);
        if (!result)
            goto done;
        for (Py_ssize_t t = 0; t < R / per; t++) {
            PyObject *v = PyFloat_FromDouble(sqrt(sq[t]) * rb);
            if (!v) {
                Py_CLEAR(result);
                goto done;
            }
            PyList_SET_ITEM(result, t, v);
        }
    }
done:
    PyMem_Free(sq);
    release_buffers(5, bufs, have);
    return result;
}

/* copy_runs(dst, src, runs, sq=None, part=0, stream=False, scales=None): a gradient code's
   tasks, each side in one call. ``src`` is 1-D or 2-D (R x N, rows contiguous), float64 or
   float32; ``dst`` is 3-D (n x R x L, rows contiguous, any strides) of the same dtype; ``runs``
   is an int64 C-contiguous nr x 5 array of (w, lo, hi, c0, q): per row r of src, run by run
   in order, ``dst[w, r, c0 : c0 + hi - lo] = scale * src[r, lo:hi]`` (``scales[i]``, float64
   nr, else 1: each product in double, cast as copy_sq's), by copy_sq's row loop; a run with
   q >= 0 also adds its source values' squares into ``sq`` (float64, 1-D): with ``part`` > 0
   block b of ``part`` columns from lo into sq[q + b], else the run's whole sum into sq[q].
   Row-major: the source is read from memory once, in order, every run of a row written from
   it while it is in L1 (for the A side of a cyclic gradient code, 16 workers, blocks of 64
   columns, the task rows' runs from a 4 MiB chunk of rows run by run took about 2x the time
   on the 2-core AMD EPYC: each run read its 768-byte pieces of 4 KiB rows from L3). The
   runs and scales are copied first, and each run's bounds are checked on the copy before
   anything is written (ValueError naming the run): what the loop writes cannot change a
   run (a `runs` aliasing `dst`), nor can another thread while the GIL is released during
   the loop; dst may not overlap src or sq. */
static PyObject *copy_runs(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"dst", "src", "runs", "sq", "part", "stream", "scales", NULL};
    PyObject *odst, *osrc, *oruns, *osq = Py_None, *osc = Py_None;
    Py_ssize_t part = 0;
    int stream = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|OnpO:copy_runs", names, &odst, &osrc,
                                     &oruns, &osq, &part, &stream, &osc))
        return NULL;
    Py_buffer d, s, ru, q, sc;
    PyObject *const objs[5] = {odst, osrc, oruns, osq, osc};
    Py_buffer *const bufs[5] = {&d, &s, &ru, &q, &sc};
    int have[5];
    static const char *const nm[5] = {"dst", "src", "runs", "sq", "scales"};
    if (get_buffers("copy_runs", 5, objs, bufs, "wrrop", nm, have) < 0)
        return NULL;
    PyObject *result = NULL;
    int64_t *rn = NULL;     /* the runs and scales as checked: private copies (below) */
    double *scl = NULL;
    Py_ssize_t sr, sn, ss;
    const char kd = kind(&d), ks = kind(&s);
    if (!kd || kd != ks) {
        PyErr_SetString(PyExc_TypeError,
                        "copy_runs: `dst` and `src` must both be float64 or both float32");
        goto done;
    }
    if (layout("copy_runs", &s, "src", &sr, &sn, &ss) < 0)
        goto done;
    if (d.ndim != 3 || (d.shape[2] > 1 && d.strides[2] != d.itemsize)) {
        PyErr_SetString(PyExc_ValueError, "copy_runs: `dst` must be 3-D with contiguous rows");
        goto done;
    }
    if (d.shape[1] != sr) {
        PyErr_Format(PyExc_ValueError, "copy_runs: `dst` has %zd rows per task but `src` %zd",
                     d.shape[1], sr);
        goto done;
    }
    if (native(&ru) != 'q' && native(&ru) != 'l') {
        PyErr_SetString(PyExc_TypeError, "copy_runs: `runs` must be an int64 array");
        goto done;
    }
    if (ru.itemsize != 8 || ru.ndim != 2 || ru.shape[1] != 5 || !PyBuffer_IsContiguous(&ru, 'C')) {
        PyErr_SetString(PyExc_ValueError,
                        "copy_runs: `runs` must be a C-contiguous nr x 5 int64 array");
        goto done;
    }
    const Py_ssize_t nr = ru.shape[0];
    if (have[3] && (q.ndim != 1 || kind(&q) != 'd' || (q.shape[0] > 1 && q.strides[0] != 8))) {
        PyErr_SetString(PyExc_ValueError, "copy_runs: `sq` must be a contiguous 1-D float64 array");
        goto done;
    }
    const Py_ssize_t nq = have[3] ? q.shape[0] : 0;
    if (have[4] && (sc.ndim != 1 || kind(&sc) != 'd' || sc.shape[0] != nr
                    || (nr > 1 && sc.strides[0] != 8))) {
        PyErr_Format(PyExc_ValueError,
                     "copy_runs: `scales` must be a contiguous 1-D float64 array of %zd entries "
                     "(one per run)", nr);
        goto done;
    }
    if (part < 0) {
        PyErr_Format(PyExc_ValueError, "copy_runs: `part` must be >= 0, got %zd", part);
        goto done;
    }
    /* the runs (and scales) copied before they are checked, and only the copies read after:
       a `runs` that aliases what the loop writes, or that another thread changes while the
       GIL is released, cannot change a run once checked */
    rn = PyMem_Malloc((size_t)(nr ? nr : 1) * 5 * sizeof(int64_t));
    scl = have[4] ? PyMem_Malloc((size_t)(nr ? nr : 1) * sizeof(double)) : NULL;
    if (!rn || (have[4] && !scl)) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(rn, ru.buf, (size_t)nr * 5 * sizeof(int64_t));
    if (scl)
        memcpy(scl, sc.buf, (size_t)nr * sizeof(double));
    for (Py_ssize_t i = 0; i < nr; i++) {
        const int64_t w = rn[5 * i], lo = rn[5 * i + 1], hi = rn[5 * i + 2], c0 = rn[5 * i + 3],
                      qq = rn[5 * i + 4];
        /* (each difference formed only once its terms are known in range: no overflow) */
        int bad = w < 0 || w >= d.shape[0] || lo < 0 || hi < lo || hi > sn || c0 < 0
                  || c0 > d.shape[2] || hi - lo > d.shape[2] - c0;
        if (!bad && qq >= 0) {
            const int64_t len = hi - lo;
            /* blocks of part columns, rounded up, written so that no part can overflow */
            const int64_t nb = part > 0 ? (len == 0 ? 0 : 1 + (len - 1) / part) : 1;
            bad = qq > nq || nb > nq - qq;
        }
        if (bad) {
            PyErr_Format(PyExc_ValueError,
                         "copy_runs: run %zd (w=%lld, lo=%lld, hi=%lld, c0=%lld, q=%lld) lies "
                         "outside `dst` (%zd tasks of %zd columns), `src` (%zd columns) or "
                         "`sq` (%zd entries)", i, (long long)w, (long long)lo, (long long)hi,
                         (long long)c0, (long long)qq, d.shape[0], d.shape[2], sn, nq);
            goto done;
        }
    }
    {
        uintptr_t lo[3], hi[3];
        /* dst's span: every stride >= 0 is the usual case; a negative one spans below buf */
        uintptr_t p = (uintptr_t)d.buf, a = p, b = p;
        if (d.shape[0] && d.shape[1] && d.shape[2]) {
            for (int ax = 0; ax < 2; ax++) {
                const Py_ssize_t span = (d.shape[ax] - 1) * d.strides[ax];
                if (span < 0)
                    a -= (uintptr_t)(-span);
                else
                    b += (uintptr_t)span;
            }
            b += (uintptr_t)(d.shape[2] * d.itemsize);
        }
        lo[0] = a;
        hi[0] = b;
        extent(s.buf, sr, sn, ss, s.itemsize, &lo[1], &hi[1]);
        if (have[3])
            extent(q.buf, q.shape[0], 1, 8, 8, &lo[2], &hi[2]);
        else
            lo[2] = hi[2] = 0;
        static const char *const what[3] = {"dst", "src", "sq"};
        if (disjoint("copy_runs", 3, lo, hi, what) < 0)
            goto done;
    }
    {
        const int avx2 = row_avx2_ok;
        const Py_ssize_t item = d.itemsize, d0 = d.strides[0], d1 = d.strides[1];
        char *pd = (char *)d.buf, *pq = have[3] ? (char *)q.buf : NULL;
        const char *ps = (const char *)s.buf;
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t r = 0; r < sr; r++)
            for (Py_ssize_t i = 0; i < nr; i++) {
                const int64_t *t = rn + 5 * i;
                const Py_ssize_t len = (Py_ssize_t)(t[2] - t[1]);
                if (len <= 0)
                    continue;
                const char *src = ps + r * ss + (Py_ssize_t)t[1] * item;
                char *dst = pd + (Py_ssize_t)t[0] * d0 + r * d1 + (Py_ssize_t)t[3] * item;
                const double c = scl ? scl[i] : 1.0;
                if (t[4] < 0) {
                    row_any(kd, kd, src, dst, NULL, len, stream, c, 0, avx2, 0, NULL, 0, NULL);
                } else if (part > 0) {
                    row_any(kd, kd, src, dst, NULL, len, stream, c, 1, avx2, part,
                            pq + t[4] * 8, 8, NULL);
                } else {
                    const double v = row_any(kd, kd, src, dst, NULL, len, stream, c, 1, avx2, 0,
                                             NULL, 0, NULL);
                    *(double *)(pq + t[4] * 8) += v;
                }
            }
#if CODEDML_SSE2
        if (stream)
            _mm_sfence();
#endif
        Py_END_ALLOW_THREADS
        result = Py_NewRef(Py_None);
    }
done:
    PyMem_Free(rn);
    PyMem_Free(scl);
    release_buffers(5, bufs, have);
    return result;
}

/* cat_sq(dst, srcs, squares=True): srcs' values one after the other into dst (all float64,
 * C-contiguous, srcs' sizes adding up to dst's) and the sum of their squares (a decode's
 * screen for NaN/Inf: not finite where a value is not, or a square overflowed), in one call:
 * a small decode's assembly and its solve's sources, where a copy per block, or
 * np.concatenate and then np.isfinite, cost more than the values. At most CAT_MAX sources. */
#define CAT_MAX 256
static PyObject *cat_sq(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *names[] = {"dst", "srcs", "squares", NULL};
    PyObject *odst, *osrcs;
    int squares = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|p:cat_sq", names, &odst, &osrcs,
                                     &squares))
        return NULL;
    PyObject *fs = PySequence_Fast(osrcs, "cat_sq: `srcs` must be a sequence of arrays");
    if (!fs)
        return NULL;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(fs);
    if (n > CAT_MAX) {
        PyErr_Format(PyExc_ValueError, "cat_sq: at most %d sources, got %zd", CAT_MAX, n);
        Py_DECREF(fs);
        return NULL;
    }
    Py_buffer d, sb[CAT_MAX];
    Py_ssize_t got = 0, total = 0;
    PyObject *result = NULL;
    if (PyObject_GetBuffer(odst, &d, PyBUF_STRIDES | PyBUF_FORMAT | PyBUF_WRITABLE) < 0) {
        Py_DECREF(fs);
        return NULL;
    }
    if (native(&d) != 'd' || !PyBuffer_IsContiguous(&d, 'C')) {
        PyErr_SetString(PyExc_TypeError, "cat_sq: `dst` must be a C-contiguous float64 array");
        goto done;
    }
    const uintptr_t dlo = (uintptr_t)d.buf, dhi = dlo + (uintptr_t)d.len;
    for (; got < n; got++) {
        Py_buffer *b = &sb[got];
        if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(fs, got), b,
                               PyBUF_STRIDES | PyBUF_FORMAT) < 0)
            goto done;
        if (native(b) != 'd' || !PyBuffer_IsContiguous(b, 'C')) {
            PyBuffer_Release(b);
            PyErr_Format(PyExc_TypeError, "cat_sq: `srcs[%zd]` must be a C-contiguous float64 "
                         "array", got);
            goto done;
        }
        const uintptr_t lo = (uintptr_t)b->buf, hi = lo + (uintptr_t)b->len;
        if (meet(lo, hi, dlo, dhi)) {
            PyBuffer_Release(b);
            PyErr_Format(PyExc_ValueError, "cat_sq: `srcs[%zd]` and `dst` overlap in memory", got);
            goto done;
        }
        if (b->len > PY_SSIZE_T_MAX - total) {   /* (only strided fakes can be that large) */
            PyBuffer_Release(b);
            PyErr_SetString(PyExc_ValueError, "cat_sq: the sources' sizes overflow");
            goto done;
        }
        total += b->len;
    }
    if (total != d.len) {
        PyErr_Format(PyExc_ValueError, "cat_sq: the sources hold %zd values, `dst` %zd",
                     total / 8, d.len / 8);
        goto done;
    }
    {
        double acc = 0.0;
        char *at = (char *)d.buf;
        for (Py_ssize_t i = 0; i < n; i++) {
            const Py_ssize_t len = sb[i].len;
            if (len)
                memcpy(at, sb[i].buf, (size_t)len);
            if (squares) {
                const double *v = (const double *)at;
                for (Py_ssize_t j = 0; j < len / 8; j++)
                    acc += v[j] * v[j];
            }
            at += len;
        }
        result = PyFloat_FromDouble(acc);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++)
        PyBuffer_Release(&sb[i]);
    PyBuffer_Release(&d);
    Py_DECREF(fs);
    return result;
}

static PyMethodDef methods[] = {
    {"copy_sq", (PyCFunction)(void (*)(void))copy_sq, METH_VARARGS | METH_KEYWORDS,
     "copy_sq(dst, src, sq=None, stream=False, scale=1.0, wide=None, part=0, squares=True,\n"
     "        simd=-1) -> float or None\n\n"
     "Write scale * src into dst (same shape; both float64, both float32, or float64\n"
     "into float32; rows contiguous; products in double, cast to dst's type) and return\n"
     "the sum of squares of src's values; sq (float64, one entry per row) gets each row's\n"
     "sum added. stream: non-temporal stores (x86-64). wide (float64, src's shape; float32\n"
     "src): also gets src's values in double. part > 0: sq has one entry per block of\n"
     "part columns, summed over the rows. squares false: no sum (None returned). simd 0:\n"
     "the SSE2 loops even where the CPU has AVX2 and FMA (COPY_SIMD 1: those are used).\n"},
    {"copy_i64", (PyCFunction)(void (*)(void))copy_i64, METH_VARARGS | METH_KEYWORDS,
     "copy_i64(dst, src, wide=None, stream=False) -> int\n\n"
     "Copy int64 src into int64 dst (same shape, rows contiguous) and, with wide\n"
     "(float64), the values converted to double into it, in one loop; returns the largest\n"
     "value of src read as unsigned (0 when empty)."},
    {"mod_store", (PyCFunction)(void (*)(void))mod_store, METH_VARARGS | METH_KEYWORDS,
     "mod_store(dst, src, p, stream=False) -> None\n\n"
     "Write float64 src (integers in [0, 2**52)) into int64 dst reduced mod p, in one loop;\n"
     "ValueError naming the row when a value is not such an integer."},
    {"lincomb", (PyCFunction)(void (*)(void))lincomb, METH_VARARGS | METH_KEYWORDS,
     "lincomb(G, srcs, dsts, sq=None, stream=False, pairs=False, simd=-1, p=0, run=0) -> None or int\n\n"
     "Write sum_j G[o, j] * srcs[j] into each output o (float64 G, m x k; float64 or\n"
     "float32 sources and outputs, rows contiguous; products and sums in double, rounded\n"
     "once), a source's missing rows and columns read as zero; srcs / dsts a sequence of\n"
     "arrays or one 2-D array whose rows they are. pairs: complex outputs as interleaved\n"
     "floats from G's rows 2o, 2o + 1. sq gets each output's sum of squared magnitudes.\n"
     "simd: -1 the best of SIMD (2 AVX-512F, 1 AVX2/FMA, 0 plain C), or at most that.\n"
     "p > 0: GF(p), int64 sources and outputs, exact sums reduced mod p; returns the\n"
     "largest source value read as unsigned (the range check)."},
    {"small_encode", (PyCFunction)small_encode, METH_VARARGS,
     "small_encode(G, src, out, nsys, per, b, bout) -> scales\n\n"
     "A small float64 encode in one call: small_rows' rows into out, b copied into bout as "
     "copy_sq does, each of the R / per tasks' noise scale (sqrt of its sum of squares times "
     "sqrt of b's) as Python floats."},
    {"small_rows", (PyCFunction)(void (*)(void))small_rows, METH_VARARGS | METH_KEYWORDS,
     "small_rows(G, src, out, nsys, sq, per=1) -> None\n\n"
     "A small encode's rows: out[o] = source row o (o < nsys, copied) or\n"
     "sum_j G[o - nsys, j] * source row j (each product rounded, summed in order from 0),\n"
     "the source rows being src's float64 values in rows of out's width (zeros past its\n"
     "end); sq gets each group of per rows' sum of squares added. All float64, C-contiguous."},
    {"proj_sq", (PyCFunction)(void (*)(void))proj_sq, METH_VARARGS | METH_KEYWORDS,
     "proj_sq(srcs, u, v, proj, sq, simd=-1, halves=False) -> None\n\n"
     "The decoder's consistency check in one pass: for each of the m sources (float64 or\n"
     "float32, x by y, rows contiguous) proj[s, j] = u_j . (src_s v_j) and sq[s] = the sum\n"
     "of the squares of its values, in double (u: k x x, v: k x y, float64, C-contiguous,\n"
     "1 <= k <= 8; proj: m x k, sq: m, float64, written). simd 0: plain C even where the\n"
     "CPU has AVX2 and FMA (k 4 uses them there). halves: each source 2x by y, its top and\n"
     "bottom x rows projected apart into proj[s, 2j] and proj[s, 2j + 1] (proj: m x 2k),\n"
     "sq[s] their two sums added."},
    {"copy_runs", (PyCFunction)(void (*)(void))copy_runs, METH_VARARGS | METH_KEYWORDS,
     "copy_runs(dst, src, runs, sq=None, part=0, stream=False, scales=None) -> None\n\n"
     "Per row r of src (R x N or 1-D; float64 or float32, rows contiguous) and run\n"
     "(w, lo, hi, c0, q) of runs (int64, nr x 5) in order: dst[w, r, c0:c0 + hi - lo] =\n"
     "scales[i] * src[r, lo:hi] (dst: n x R x L, src's dtype, rows contiguous; scales\n"
     "float64 nr, else 1), as copy_sq's loop; q >= 0: the values' squares added into\n"
     "sq[q + b] per block b of part columns (part 0: the run's sum into sq[q])."},
    {"cat_sq", (PyCFunction)(void (*)(void))cat_sq, METH_VARARGS | METH_KEYWORDS,
     "cat_sq(dst, srcs, squares=True) -> float\n\n"
     "Copy the sources' values one after the other into dst (float64, C-contiguous, their\n"
     "sizes adding up to dst's; at most 256 sources, none overlapping dst) and return the\n"
     "sum of their squares (0.0 without squares): finite only where every value is and no\n"
     "square overflowed."},
    {"wresid", (PyCFunction)wresid, METH_VARARGS,
     "wresid(q0, w, y) -> (resmax, ykmax)\n\n"
     "The consistency check's weighted residual: with B = diag(w) q0 (r x d) and\n"
     "Z = diag(w) y (r x k), ykmax = max |Z| and resmax = max |Z - P Z|, P the orthogonal\n"
     "projector onto range(B) (Householder reflections). q0 and y complex, given as the\n"
     "float64 views r x 2d and r x 2k; w float64; all C-contiguous. resmax NaN where\n"
     "anything is not finite or B has not full column rank."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels", "The encode's compiled copy-with-norms loop.", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void)
{
#if CODEDML_AVX2
    __builtin_cpu_init();
#if CODEDML_SSE2 && defined(__x86_64__) && defined(__GNUC__)
    i64_avx512_ok = __builtin_cpu_supports("avx512f");
#endif
    lc_simd_ok = __builtin_cpu_supports("avx512f") ? 2
                 : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
#endif
#if CODEDML_ROW_AVX2
    row_avx2_ok = lc_simd_ok >= 1;   /* the same AVX2 and FMA check */
#endif
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "STREAMS", CODEDML_SSE2) < 0
              || PyModule_AddIntConstant(m, "SIMD", lc_simd_ok) < 0
              || PyModule_AddIntConstant(m, "COPY_SIMD", row_avx2_ok) < 0
              /* lincomb takes ``run`` (a build before it: the caller passes slices) */
              || PyModule_AddIntConstant(m, "LINCOMB_RUN", 1) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
