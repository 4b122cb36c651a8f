#pragma once
// The NUMA nodes data-parallel training spreads over.
#include <cstddef>
#include <string>
#include <vector>

namespace kortexdl {

struct NumaNode {
  int id = 0;             // the OS node id, or the virtual node's index
  std::vector<int> cpus;  // CPUs this process may run on that belong to the node
};

struct NumaTopology {
  std::vector<NumaNode> nodes;
  bool libnuma_available = false;  // libnuma loaded and the kernel supports NUMA
  bool virtual_nodes = false;      // CPUs split by request (KORTEX_NUMA_NODES or an option)
  bool pinning_allowed = true;     // thread affinity can be set here
  std::string note;                // why the topology looks as it does (fallbacks)
};

// The machine's nodes (libnuma, loaded at run time; one node when absent),
// restricted to the CPUs this process may use. requested_nodes > 0, or else
// the environment variable KORTEX_NUMA_NODES, splits the usable CPUs into
// that many virtual nodes (CPUs are shared round-robin when there are fewer
// CPUs than nodes), so the multi-node path runs on any machine.
NumaTopology numa_topology(std::size_t requested_nodes = 0);

}  // namespace kortexdl
