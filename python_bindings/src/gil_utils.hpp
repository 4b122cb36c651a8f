#pragma once
// The one way the bindings run C++ work: without the GIL, timed and counted.
//
//   float loss = without_gil<"train_batch">([&] { return net.train_batch(...); });
//
// The caller converts every argument and allocates every output while it
// still holds the GIL, takes raw pointers and sizes, and keeps the Python
// objects alive in its own scope; the lambda then sees only C++ values. The
// helper
//   * releases the GIL (ReleasedGil, gil_handoff.hpp) for the whole lambda
//     and re-acquires it afterwards, also when the lambda throws;
//   * checks that the GIL really is not held inside the region
//     (PyGILState_Check() == 0) and counts a violation otherwise;
//   * records per-method counters: calls, total and maximum seconds.
// The counters are relaxed atomics (a few nanoseconds per call); a method's
// slot is looked up once per call site (a function-local static), never per
// call. kortexdl.gil_stats() and kortexdl.reset_gil_stats() expose them.
#include <pybind11/pybind11.h>

#include "gil_handoff.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace kortexdl::python {

// A string literal usable as a template argument: without_gil<"forward">.
template <std::size_t N>
struct MethodName {
  char text[N]{};
  constexpr MethodName(const char (&s)[N]) {  // NOLINT: implicit by design
    std::copy_n(s, N, text);
  }
};

struct MethodStats {
  explicit MethodStats(std::string method) : name(std::move(method)) {}
  std::string name;
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> total_ns{0};
  std::atomic<std::uint64_t> max_ns{0};

  void record(std::uint64_t ns) noexcept {
    calls.fetch_add(1, std::memory_order_relaxed);
    total_ns.fetch_add(ns, std::memory_order_relaxed);
    std::uint64_t seen = max_ns.load(std::memory_order_relaxed);
    while (ns > seen && !max_ns.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
    }
  }
};

struct MethodSnapshot {
  std::string name;
  std::uint64_t calls = 0;
  double total_seconds = 0.0;
  double max_seconds = 0.0;
};

// The process-wide table (defined in gil_utils.cpp). Slots are never removed,
// so references to them stay valid for the life of the process.
MethodStats& method_stats(const char* name);   // finds or adds a slot
std::vector<MethodSnapshot> snapshot_stats();  // every slot, in registration order
std::uint64_t gil_held_violations();
void record_gil_violation() noexcept;
void reset_stats();

namespace detail {

// Records the region's time when it ends, including by an exception, from
// the moment the GIL was released; tells the release when the work ended,
// so the two share their clock reads.
class RegionTimer {
 public:
  RegionTimer(MethodStats& stats, ReleasedGil& release) noexcept : stats_(stats), release_(release) {}
  ~RegionTimer() {
    const auto end = ReleasedGil::Clock::now();
    release_.work_ended_at(end);
    const auto elapsed = end - release_.released_at();
    stats_.record(static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count()));
  }
  RegionTimer(const RegionTimer&) = delete;
  RegionTimer& operator=(const RegionTimer&) = delete;

 private:
  MethodStats& stats_;
  ReleasedGil& release_;
};

template <class T>
inline constexpr bool is_python_object_v = std::is_base_of_v<pybind11::handle, std::remove_cvref_t<T>>;

}  // namespace detail

// Runs fn() with the GIL released. fn must not touch any Python object; its
// result must be a plain C++ value (checked at compile time). Training steps
// pass ReturnGate::leave (gil_return_gate.hpp).
template <MethodName Name, ReturnGate Gate = ReturnGate::pass, class Fn>
decltype(auto) without_gil(Fn&& fn) {
  using Result = std::invoke_result_t<Fn&>;
  static_assert(!detail::is_python_object_v<Result>,
                "without_gil: the released region must return a C++ value, not a Python object");
  static MethodStats& stats = method_stats(Name.text);
  ReleasedGil release(Gate);
  if (PyGILState_Check() != 0) record_gil_violation();
  detail::RegionTimer timer(stats, release);
  return fn();
}

}  // namespace kortexdl::python
