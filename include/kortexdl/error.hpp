#pragma once
// The exception hierarchy every public call reports failures through.
// Bindings map each class to one Python exception type, so the class chosen
// at a throw site is part of the contract:
//   InvalidArgumentError (and ShapeError) -> ValueError
//   ConcurrencyError, InternalError       -> RuntimeError
//   NumericalError                        -> FloatingPointError
//   ResourceLimitError                    -> MemoryError
//   FormatError                           -> ValueError
//   IoError                               -> OSError
//   InterruptedError                      -> KeyboardInterrupt
#include <stdexcept>
#include <string>

namespace kortexdl {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// An argument has a value the call cannot accept (learning rate <= 0, label
// out of range, unknown activation name, ...).
class InvalidArgumentError : public Error {
 public:
  using Error::Error;
};

// An array's length or shape does not match what the network expects.
class ShapeError : public InvalidArgumentError {
 public:
  using InvalidArgumentError::InvalidArgumentError;
};

// Calls overlapped in a way that is only safe with thread safety enabled.
class ConcurrencyError : public Error {
 public:
  using Error::Error;
};

// A training step produced a non-finite loss (diverged or overflowed); the
// step was not applied, so the parameters are still the last finite ones.
class NumericalError : public Error {
 public:
  using Error::Error;
};

// A request would need more memory than the library allows or than size_t
// can express; raised before anything is allocated.
class ResourceLimitError : public Error {
 public:
  using Error::Error;
};

// A file or byte stream is not in the expected format (bad magic, truncated,
// checksum mismatch, inconsistent sizes).
class FormatError : public Error {
 public:
  using Error::Error;
};

// The operating system refused a file operation.
class IoError : public Error {
 public:
  using Error::Error;
};

// A long call was stopped on request (the should_stop option of fit and
// train_parallel_numa, which the Python bindings wire to Ctrl-C); the network
// is left in the state after the last completed mini-batch.
class InterruptedError : public Error {
 public:
  using Error::Error;
};

// A backend call failed in a way no argument explains.
class InternalError : public Error {
 public:
  using Error::Error;
};

}  // namespace kortexdl
