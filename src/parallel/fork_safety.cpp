#include "parallel/fork_safety.hpp"

#include <pthread.h>

#include <mutex>
#include <unordered_set>

#include "network_state.hpp"

namespace kortexdl::detail {
namespace {

// Held across fork() (prepare to parent / child), so no network is being
// created or destroyed at the fork.
std::mutex& registry_mutex() {
  static std::mutex* mutex = new std::mutex;  // never destroyed: handlers may run at exit
  return *mutex;
}

std::unordered_set<NetworkState*>& registry() {
  static auto* states = new std::unordered_set<NetworkState*>;
  return *states;
}

void before_fork() { registry_mutex().lock(); }

void after_fork_in_parent() { registry_mutex().unlock(); }

void after_fork_in_child() {
  count_only_this_threads_contention_after_fork();
  for (NetworkState* state : registry()) state->batcher.stop_after_fork();
  if (!this_thread_holds_a_network()) {
    for (NetworkState* state : registry()) {
      const bool steps_in_flight = !state->combiner.idle_in_forked_child() || !state->gate.idle_in_forked_child();
      state->guard.after_fork_in_child(steps_in_flight);
    }
  }
  registry_mutex().unlock();
}

const bool handler_registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child) == 0;

}  // namespace

ForkRegistration::ForkRegistration(NetworkState* state) : state_(state) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().insert(state_);
}

ForkRegistration::~ForkRegistration() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry().erase(state_);
}

bool network_fork_handler_installed() { return handler_registered; }

}  // namespace kortexdl::detail
