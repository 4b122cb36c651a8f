#pragma once
// Letting Python in during a long GIL-released call: Ctrl-C and callbacks.
//
// A long C++ call (train_parallel_numa, fit) polls a should_stop function
// between mini-batches on the calling thread. SignalPoller is that function:
// at most every 50 ms it takes the GIL and runs Python's signal handlers
// (PyErr_CheckSignals). If a handler raised (Ctrl-C: KeyboardInterrupt), the
// exception is kept and the poller asks the library to stop; the library
// throws InterruptedError after the last whole step and the binding re-raises
// the kept exception (rethrow_pending). Between polls it costs one clock read.
// Signal handlers only run on the main thread; elsewhere the poll is a no-op.
#include <pybind11/pybind11.h>

#include <chrono>
#include <optional>

namespace kortexdl::python {

class SignalPoller {
 public:
  static constexpr std::chrono::milliseconds kInterval{50};

  // Called by the library with the GIL released.
  bool operator()() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_) return false;
    next_ = now + kInterval;
    pybind11::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      pending_.emplace();  // fetches (and clears) the raised exception
      return true;
    }
    return false;
  }

  // A Python exception raised in a callback: kept, re-raised after the call.
  void keep(const pybind11::error_already_set& error) {
    if (!pending_) pending_.emplace(error);
  }
  bool has_pending() const { return pending_.has_value(); }

  // With the GIL held, after the call: re-raise what a handler or callback raised.
  void rethrow_pending() {
    if (pending_) throw *pending_;
  }

 private:
  std::chrono::steady_clock::time_point next_ = std::chrono::steady_clock::now() + kInterval;
  std::optional<pybind11::error_already_set> pending_;
};

}  // namespace kortexdl::python
