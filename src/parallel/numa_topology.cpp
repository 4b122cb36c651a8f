#include <dlfcn.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kortexdl/error.hpp"
#include "kortexdl/numa.hpp"
#include "parallel/affinity.hpp"

namespace kortexdl {

namespace {

// libnuma is opened at run time, so the library loads and runs (as one node)
// where it is not installed.
struct LibNuma {
  struct bitmask;
  using available_fn = int (*)();
  using max_node_fn = int (*)();
  using allocate_cpumask_fn = bitmask* (*)();
  using node_to_cpus_fn = int (*)(int, bitmask*);
  using isbitset_fn = int (*)(const bitmask*, unsigned int);
  using free_fn = void (*)(bitmask*);

  void* handle = nullptr;
  available_fn available = nullptr;
  max_node_fn max_node = nullptr;
  allocate_cpumask_fn allocate_cpumask = nullptr;
  node_to_cpus_fn node_to_cpus = nullptr;
  isbitset_fn isbitset = nullptr;
  free_fn bitmask_free = nullptr;

  static const LibNuma& get() {
    static const LibNuma instance = load();
    return instance;
  }

  bool usable() const { return handle != nullptr && available() >= 0; }

 private:
  static LibNuma load() {
    LibNuma lib;
#ifdef KORTEX_DISABLE_LIBNUMA
    return lib;
#endif
    lib.handle = dlopen("libnuma.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib.handle == nullptr) return lib;
    lib.available = reinterpret_cast<available_fn>(dlsym(lib.handle, "numa_available"));
    lib.max_node = reinterpret_cast<max_node_fn>(dlsym(lib.handle, "numa_max_node"));
    lib.allocate_cpumask = reinterpret_cast<allocate_cpumask_fn>(dlsym(lib.handle, "numa_allocate_cpumask"));
    lib.node_to_cpus = reinterpret_cast<node_to_cpus_fn>(dlsym(lib.handle, "numa_node_to_cpus"));
    lib.isbitset = reinterpret_cast<isbitset_fn>(dlsym(lib.handle, "numa_bitmask_isbitset"));
    lib.bitmask_free = reinterpret_cast<free_fn>(dlsym(lib.handle, "numa_bitmask_free"));
    if (!lib.available || !lib.max_node || !lib.allocate_cpumask || !lib.node_to_cpus || !lib.isbitset ||
        !lib.bitmask_free) {
      dlclose(lib.handle);
      lib.handle = nullptr;
    }
    return lib;
  }
};

std::size_t env_nodes() {
  const char* value = std::getenv("KORTEX_NUMA_NODES");
  if (value == nullptr || *value == '\0') return 0;
  char* end = nullptr;
  const unsigned long parsed = std::strtoul(value, &end, 10);
  if (end == value || *end != '\0' || parsed == 0 || parsed > 1024) {
    throw InvalidArgumentError("KORTEX_NUMA_NODES: must be a whole number between 1 and 1024, got '" +
                               std::string(value) + "'");
  }
  return parsed;
}

}  // namespace

NumaTopology numa_topology(std::size_t requested_nodes) {
  if (requested_nodes > 1024) {
    throw InvalidArgumentError("numa_nodes: must be between 0 (automatic) and 1024, got " +
                               std::to_string(requested_nodes));
  }
  NumaTopology topology;
  const std::vector<int> usable = detail::allowed_cpus();
  topology.pinning_allowed = detail::pinning_allowed();
  const LibNuma& lib = LibNuma::get();
  topology.libnuma_available = lib.usable();

  const std::size_t split = requested_nodes > 0 ? requested_nodes : env_nodes();
  if (split > 0) {
    topology.virtual_nodes = true;
    topology.note = std::to_string(split) + " virtual node(s) over " + std::to_string(usable.size()) + " CPU(s)" +
                    (requested_nodes > 0 ? " (numa_nodes option)" : " (KORTEX_NUMA_NODES)");
    topology.nodes.resize(split);
    for (std::size_t n = 0; n < split; ++n) topology.nodes[n].id = static_cast<int>(n);
    if (usable.size() >= split) {
      // Contiguous blocks, sizes differing by at most one.
      for (std::size_t i = 0; i < usable.size(); ++i) topology.nodes[i * split / usable.size()].cpus.push_back(usable[i]);
    } else {
      for (std::size_t n = 0; n < split; ++n) topology.nodes[n].cpus.push_back(usable[n % usable.size()]);
      topology.note += "; fewer CPUs than nodes, so nodes share CPUs";
    }
    return topology;
  }

  if (topology.libnuma_available) {
    const int max_node = lib.max_node();
    for (int node = 0; node <= max_node; ++node) {
      auto* mask = lib.allocate_cpumask();
      if (mask == nullptr) break;
      NumaNode entry;
      entry.id = node;
      if (lib.node_to_cpus(node, mask) == 0) {
        for (int cpu : usable) {
          if (lib.isbitset(mask, static_cast<unsigned>(cpu)) != 0) entry.cpus.push_back(cpu);
        }
      }
      lib.bitmask_free(mask);
      if (!entry.cpus.empty()) topology.nodes.push_back(std::move(entry));
    }
    topology.note = std::to_string(topology.nodes.size()) + " NUMA node(s) from libnuma";
  }
  if (topology.nodes.empty()) {
    topology.nodes.push_back(NumaNode{0, usable});
    topology.note = topology.libnuma_available ? "libnuma reports no node with usable CPUs; one node"
                                               : "libnuma is not available here; one node with every usable CPU";
  }
  if (!topology.pinning_allowed) topology.note += "; thread pinning is not permitted here, threads run unpinned";
  return topology;
}

}  // namespace kortexdl
