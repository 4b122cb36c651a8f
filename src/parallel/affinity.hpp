#pragma once
// CPU affinity of the calling thread.
#include <vector>

namespace kortexdl::detail {

std::vector<int> allowed_cpus();          // CPUs this process may run on, ascending
bool pinning_allowed();                   // whether sched_setaffinity works here (probed once)
bool pin_current_thread(const std::vector<int>& cpus);  // false if the OS refused
std::vector<int> current_thread_cpus();

}  // namespace kortexdl::detail
