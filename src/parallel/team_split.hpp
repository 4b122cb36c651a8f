// Work split over the calling thread's OpenMP team, or done right here.
#pragma once

#include <omp.h>

#include <cstddef>

namespace kortexdl::detail {

// Runs part(me, threads) on every thread of the calling thread's team when
// the work is worth a team and the team has more than one thread, else
// part(0, 1) on this thread. The serial case opens no region at all: one
// whose `if` clause is false still costs libgomp a team allocated and freed
// (0.4 us a region in a bare loop; docs/BENCHMARKS.md, "serial work opens
// no OpenMP region").
template <class Part>
void split_over_team(bool worth_a_team, Part part) {
  if (!worth_a_team || omp_get_max_threads() <= 1) {
    part(std::size_t{0}, std::size_t{1});
    return;
  }
#pragma omp parallel
  part(static_cast<std::size_t>(omp_get_thread_num()), static_cast<std::size_t>(omp_get_num_threads()));
}

}  // namespace kortexdl::detail
