// Two threads of pure compute against one, with no Python and no library:
// what the machine's CPUs give two callers. Prints one speedup per round
// (one thread's time for `iterations`, then two threads doing as much each,
// 2 * one / two), as a JSON list.
//   fma_threads ITERATIONS ROUNDS
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fma_work.h"

static long long iterations;
static volatile float sink;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void* work(void* unused) {
  (void)unused;
  sink = floor_fma_work(iterations);
  return NULL;
}

int main(int argc, char** argv) {
  if (argc != 3 || (iterations = atoll(argv[1])) <= 0 || atoi(argv[2]) <= 0) {
    fprintf(stderr, "usage: fma_threads ITERATIONS ROUNDS\n");
    return 2;
  }
  const int rounds = atoi(argv[2]);
  printf("[");
  for (int r = 0; r < rounds; ++r) {
    double t0 = now();
    work(NULL);
    const double one = now() - t0;
    pthread_t a, b;
    t0 = now();
    if (pthread_create(&a, NULL, work, NULL) != 0 || pthread_create(&b, NULL, work, NULL) != 0) return 1;
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    const double two = now() - t0;
    printf("%s%.4f", r ? ", " : "", 2.0 * one / two);
  }
  printf("]\n");
  return 0;
}
