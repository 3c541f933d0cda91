/* How much of a CPU step is matrix products, and how fast they run: a preload library that times
 * every single-precision BLAS product (`sgemm_`, the Fortran entry ATen calls on the CPU) and,
 * when the process exits, writes one line per product shape to $SGEMM_TIMER_OUT:
 *   transa transb m n k calls seconds GFLOP/s
 * then "busy SECONDS": the time at least one product was running (products on two threads at
 * once, as `ganpo`'s two lanes run them, count once there and twice in the lines above).
 * Built with -DSGEMM_TIMER_PEAK it is instead a program that prints this core's sgemm rate on
 * square products (the best a step's products could reach with the same library and threads).
 * Used by packaging/bench-gemm-share.sh; not part of the build. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef void (*sgemm_fn)(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                         const int*, const float*, const int*, const float*, float*, const int*);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifndef SGEMM_TIMER_PEAK

enum { kShapes = 8192 };
static struct {
  char ta, tb;
  int m, n, k;
  long calls;
  double seconds;
} shapes[kShapes];
static int used;
static long dropped;
static int in_flight;
static double busy_since, busy_seconds;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void sgemm_(const char* ta, const char* tb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) {
  static sgemm_fn real;
  if (!real) real = (sgemm_fn)dlsym(RTLD_NEXT, "sgemm_");
  if (!real) {  // a BLAS loaded privately (Python imports torch with RTLD_LOCAL): ask it directly
    void* blas = dlopen("libblas.so.3", RTLD_NOW | RTLD_NOLOAD);
    if (blas) real = (sgemm_fn)dlsym(blas, "sgemm_");
  }
  if (!real) {
    fprintf(stderr, "sgemm_timer: no sgemm_ to forward to\n");
    abort();
  }
  const double t0 = now_s();
  pthread_mutex_lock(&lock);
  if (in_flight++ == 0) busy_since = t0;
  pthread_mutex_unlock(&lock);
  real(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  const double t1 = now_s(), dt = t1 - t0;
  pthread_mutex_lock(&lock);
  if (--in_flight == 0) busy_seconds += t1 - busy_since;
  int i = 0;
  while (i < used && !(shapes[i].ta == *ta && shapes[i].tb == *tb && shapes[i].m == *m && shapes[i].n == *n &&
                       shapes[i].k == *k))
    ++i;
  if (i == used && used < kShapes) {
    shapes[i].ta = *ta, shapes[i].tb = *tb, shapes[i].m = *m, shapes[i].n = *n, shapes[i].k = *k;
    ++used;
  }
  if (i < used) {
    shapes[i].calls++;
    shapes[i].seconds += dt;
  } else {
    ++dropped;
  }
  pthread_mutex_unlock(&lock);
}

__attribute__((destructor)) static void write_table(void) {
  const char* path = getenv("SGEMM_TIMER_OUT");
  FILE* out = path ? fopen(path, "w") : NULL;
  if (!out) return;
  for (int i = 0; i < used; ++i) {
    const double flops = 2.0 * shapes[i].m * shapes[i].n * (double)shapes[i].k * (double)shapes[i].calls;
    fprintf(out, "%c %c %d %d %d %ld %.6f %.1f\n", shapes[i].ta, shapes[i].tb, shapes[i].m, shapes[i].n, shapes[i].k,
            shapes[i].calls, shapes[i].seconds, shapes[i].seconds > 0 ? flops / shapes[i].seconds / 1e9 : 0.0);
  }
  fprintf(out, "busy %.6f\n", busy_seconds);
  if (dropped) fprintf(stderr, "sgemm_timer: %ld products of shapes beyond the first %d not counted\n", dropped, kShapes);
  fclose(out);
}

#else

void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);

int main(void) {
  const int sizes[] = {384, 1024, 2048};
  for (int s = 0; s < 3; ++s) {
    const int n = sizes[s];
    float* a = malloc(sizeof(float) * n * n);
    float* b = malloc(sizeof(float) * n * n);
    float* c = malloc(sizeof(float) * n * n);
    for (long i = 0; i < (long)n * n; ++i) a[i] = b[i] = (float)(i % 7) * 0.1f, c[i] = 0;
    const float one = 1, zero = 0;
    double best = 1e9;
    for (int rep = 0; rep < 8; ++rep) {
      const double t0 = now_s();
      sgemm_("N", "N", &n, &n, &n, &one, a, &n, b, &n, &zero, c, &n);
      const double dt = now_s() - t0;
      if (dt < best) best = dt;
    }
    printf("%d %.1f\n", n, 2.0 * n * n * (double)n / best / 1e9);
    free(a), free(b), free(c);
  }
  return 0;
}

#endif
