#pragma once
// CPU affinity of the calling thread.
#include <cstddef>
#include <vector>

namespace kortexdl::detail {

std::vector<int> allowed_cpus();          // CPUs this process may run on, ascending
// How many, as the process started (read once: for spin-or-sleep decisions
// on hot paths, where a changed affinity mask only makes them less apt).
std::size_t allowed_cpu_count();
bool pinning_allowed();                   // whether sched_setaffinity works here (probed once)
bool pin_current_thread(const std::vector<int>& cpus);  // false if the OS refused
std::vector<int> current_thread_cpus();

}  // namespace kortexdl::detail
