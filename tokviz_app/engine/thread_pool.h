/* The matrix kernels' thread pool (exact_quant.c's tokviz_parallel), as other kernels of a step call it: one
   pool spins beside a step, not one per library. function(arg, part, parts) runs for every part. */
#ifndef TOKVIZ_THREAD_POOL_H
#define TOKVIZ_THREAD_POOL_H

typedef void (*PartFunction)(const void *arg, int part, int parts);
typedef void (*Parallel)(PartFunction function, const void *arg, int threads);

#endif
