#include "gil_utils.hpp"

#include <deque>
#include <mutex>

#include "gil_return_gate.hpp"

namespace kortexdl::python {

namespace {

struct Registry {
  std::mutex mutex;               // guards adding slots, not the counters
  std::deque<MethodStats> slots;  // a deque never moves its elements
};

Registry& registry() {
  static Registry* instance = new Registry();  // never destroyed: calls may outlive static destruction
  return *instance;
}

std::atomic<std::uint64_t> violations{0};

}  // namespace

MethodStats& method_stats(const char* name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (MethodStats& slot : r.slots) {
    if (slot.name == name) return slot;
  }
  return r.slots.emplace_back(name);
}

std::vector<MethodSnapshot> snapshot_stats() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<MethodSnapshot> all;
  all.reserve(r.slots.size());
  for (const MethodStats& slot : r.slots) {
    MethodSnapshot s;
    s.name = slot.name;
    s.calls = slot.calls.load(std::memory_order_relaxed);
    s.total_seconds = static_cast<double>(slot.total_ns.load(std::memory_order_relaxed)) * 1e-9;
    s.max_seconds = static_cast<double>(slot.max_ns.load(std::memory_order_relaxed)) * 1e-9;
    all.push_back(std::move(s));
  }
  return all;
}

std::uint64_t gil_held_violations() { return violations.load(std::memory_order_relaxed); }

void record_gil_violation() noexcept { violations.fetch_add(1, std::memory_order_relaxed); }

void reset_stats() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (MethodStats& slot : r.slots) {
    slot.calls.store(0, std::memory_order_relaxed);
    slot.total_ns.store(0, std::memory_order_relaxed);
    slot.max_ns.store(0, std::memory_order_relaxed);
  }
  violations.store(0, std::memory_order_relaxed);
  reset_gil_handoff_counts();
  reset_return_gate_counts();
}

}  // namespace kortexdl::python
