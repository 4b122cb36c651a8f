#pragma once
// Networks after fork(): only the forking thread lives on in the child, so
// a network that other threads were reading keeps their hold on its lock,
// and the child's first write to it would wait forever (measured from
// Python: 20 of 20 children that trained a network four parent threads were
// serving hung).
//
// Every network registers here; in the child, a network that only other
// threads' reads held is freed of them (the parameters are whole), and a
// network another thread was writing, or whose queued or combined training
// steps were in flight, refuses every later call with ConcurrencyError (its
// parameters may be partly updated; load it again). A network the forking
// thread itself was using at the fork is left as it was.
namespace kortexdl::detail {

class NetworkState;

// Registers a network for its lifetime (a member of NetworkState).
class ForkRegistration {
 public:
  explicit ForkRegistration(NetworkState* state);
  ~ForkRegistration();
  ForkRegistration(const ForkRegistration&) = delete;
  ForkRegistration& operator=(const ForkRegistration&) = delete;

 private:
  NetworkState* state_;
};

bool network_fork_handler_installed();

}  // namespace kortexdl::detail
