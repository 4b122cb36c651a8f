#pragma once
// Data-parallel training across processes and machines over MPI
// (DESIGN.md section 4, docs/distributed.md).
//
// The same synchronous step as train_parallel_numa, one level up: inside a
// process the NUMA replicas' gradients are reduce-scattered into one
// contiguous buffer; across processes that one buffer is summed with a single
// MPI_Allreduce per step (plus a 3-double allreduce of the loss sums), and
// every process applies the same update to the same parameters. Start with
// `mpirun -np N program`; every rank runs the same program on its own shard
// of the data.
//
// Gradient semantics: a step's gradient is the mean over the COMBINED batch
// (every rank's rows of that step). Each rank scales its shard's gradient by
// 1 / (rows of the step over all ranks) from the start, so the allreduced sum
// is that mean directly; K steps on W ranks equal K single-process steps on
// the concatenated batches, up to float summation order.
//
// This header never includes mpi.h. Without MPI in the build
// (KORTEX_WITH_MPI=OFF) every call works with a world of one process.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kortexdl/error.hpp"
#include "kortexdl/evaluation.hpp"
#include "kortexdl/loss.hpp"
#include "kortexdl/network.hpp"
#include "kortexdl/targets.hpp"
#include "kortexdl/training.hpp"

namespace kortexdl {

// The cross-process step of data-parallel training, as an interface so the
// training loop never sees MPI. Every method is collective: every process of
// the group calls it, in the same order, with the same sizes.
class GradientExchange {
 public:
  virtual ~GradientExchange() = default;
  virtual std::size_t rank() const = 0;
  virtual std::size_t world_size() const = 0;
  // Element-wise sum over every process, in place.
  virtual void allreduce_sum(float* data, std::size_t count) = 0;
  virtual void allreduce_sum(double* data, std::size_t count) = 0;
  // `bytes` bytes from `root` to every process.
  virtual void broadcast(void* data, std::size_t bytes, std::size_t root) = 0;
};

// An MPI call failed (a peer's connection broke, the runtime reported an
// error). Python: kortexdl.InternalError (a RuntimeError).
class DistributedError : public InternalError {
 public:
  using InternalError::InternalError;
};

namespace distributed {

// Whether this build has MPI (KORTEX_WITH_MPI). Without it a world has one
// process, and init() refuses to run under mpirun with more than one.
bool mpi_available() noexcept;

struct InitOptions {
  // Every collective must complete within this many seconds, else this
  // process prints which collective timed out and exits with status 70
  // (a rank died, stalled or called something else). Default: the
  // environment variable KORTEX_DISTRIBUTED_TIMEOUT, else 300. 0 disables it.
  std::optional<double> timeout_seconds;
  // A communicator to duplicate instead of MPI_COMM_WORLD, as its Fortran
  // handle (MPI_Comm_c2f(comm), or mpi4py's comm.py2f()).
  std::optional<int> fortran_handle;
};

// The process group training runs over: a duplicate of MPI_COMM_WORLD (or of
// the given communicator) with MPI_ERRORS_RETURN, so an MPI error becomes a
// DistributedError instead of aborting, and a watchdog that ends this
// process when a collective outlives the timeout (so a dead or stalled peer
// never hangs the others). Calls are serialised by a mutex.
class Communicator final : public GradientExchange {
 public:
  ~Communicator() override;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  std::size_t rank() const override;
  std::size_t world_size() const override;
  void allreduce_sum(float* data, std::size_t count) override;
  void allreduce_sum(double* data, std::size_t count) override;
  void broadcast(void* data, std::size_t bytes, std::size_t root) override;
  void barrier();

  double timeout_seconds() const;
  // Cumulative wall time inside allreduce_sum (both overloads).
  double allreduce_seconds() const;
  std::uint64_t allreduce_calls() const;
  // Whether init() called MPI_Init (else MPI was initialised by someone
  // else, e.g. mpi4py, and finalize() leaves it alone).
  bool owns_mpi() const;
  // e.g. "Open MPI v4.1.4, rank 0 of 2 on host1"
  std::string description() const;

  struct Impl;

 private:
  friend Communicator& init(const InitOptions& options);
  friend void finalize();
  explicit Communicator(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Collective, once per process (later calls return the same communicator;
// their options must then be empty or equal). Initialises MPI when nobody
// has (MPI_Initialized), with MPI_THREAD_SERIALIZED, and then finalises it
// at exit; works as well when mpi4py or the program initialised it. Without
// mpirun it is a world of one process.
Communicator& init(const InitOptions& options = {});
bool initialized() noexcept;
// init() with the default options when not done yet.
Communicator& communicator();
std::size_t rank();
std::size_t world_size();
// Frees the communicator and, if init() initialised MPI, finalises it.
// Called automatically at exit; safe to call twice.
void finalize();

// ---- data -------------------------------------------------------------------
// The row indices rank `rank` of `world_size` trains on: the rows in a
// seeded order (Fisher-Yates over mt19937_64(seed), the library's shuffle;
// without a seed, in order), cut into world_size contiguous parts of
// floor(rows / world_size) or one more rows (the first rows % world_size
// ranks get one more). Every rank computes the same split; the parts are
// disjoint and cover every row.
std::vector<std::size_t> shard_indices(std::size_t rows, std::size_t rank, std::size_t world_size,
                                       std::optional<std::uint64_t> seed = 0);

// This rank's rows of a dataset, copied out (see shard_indices).
struct Shard {
  std::vector<float> inputs;          // rows x input_size
  std::vector<std::int32_t> labels;   // rows (when the targets were labels)
  std::vector<float> values;          // rows x target width (when they were values)
  std::size_t rows = 0;
  Targets targets() const;
};
Shard shard(std::span<const float> inputs, const Targets& targets, std::size_t input_size, std::size_t rank,
            std::size_t world_size, std::optional<std::uint64_t> seed = 0);

// ---- start-up ---------------------------------------------------------------
// Collective. Checks that every rank has the same architecture (sizes,
// activations), parameter count and optimizer (kind and hyper-parameters);
// a mismatch throws InvalidArgumentError on EVERY rank, naming the ranks
// and what differs. Then copies rank 0's parameters and optimizer state to
// every rank. The training calls below (and fit / train_parallel_numa with
// a `distributed` exchange) do this themselves at their start.
void synchronize(Network& network, GradientExchange& exchange);

// FNV-1a (64-bit) of the parameter bytes: equal on every rank after a
// distributed step.
std::uint64_t parameter_hash(const Network& network);

// ---- training ---------------------------------------------------------------
struct DistributedOptions {
  GradientExchange* exchange = nullptr;  // default: communicator()
  // Rank 0 writes the model (Network::save: temporary file + rename, so the
  // last one written is always whole) after every `checkpoint_every` epochs
  // and at the end. Empty: no file.
  std::string checkpoint_path;
  std::size_t checkpoint_every = 1;
  bool include_optimizer_state = true;
  // Every rank writes: rank k > 0 to checkpoint_path + ".rank<k>".
  bool save_on_all_ranks = false;
};

struct DistributedHistory {
  History history;                 // as fit() returns it; losses are over all ranks' rows
  std::size_t world_size = 1;
  std::size_t rank = 0;
  std::size_t global_rows = 0;     // training rows over all ranks
  double seconds = 0.0;            // wall time of the call
  double allreduce_seconds = 0.0;  // of which in cross-process allreduces
  std::uint64_t allreduces = 0;
  std::size_t checkpoints_written = 0;  // by this rank
};

// fit() over every rank: each rank passes ITS shard of the data; batch_size
// is the per-rank batch, so a step trains on world_size x batch_size rows
// (the effective batch; see docs/distributed.md for learning-rate scaling).
// Losses, validation and early stopping use sums over all ranks, so every
// rank takes the same decisions; a callback returning false (or should_stop)
// on any rank stops every rank after the same step.
DistributedHistory train_distributed(Network& network, std::span<const float> inputs, const Targets& targets,
                                     LossType loss, FitOptions fit_options, const DistributedOptions& options = {});

// evaluate() over every rank's rows: the loss and accuracy of all of them.
Evaluation evaluate(const Network& network, std::span<const float> inputs, const Targets& targets, LossType loss,
                    GradientExchange& exchange, std::size_t batch_size = 0);

// Network::save on rank 0 only (every rank with all_ranks, rank k > 0 to
// path + ".rank<k>"). Not collective. Returns whether this rank wrote.
bool save(const Network& network, const std::string& path, const GradientExchange& exchange, bool all_ranks = false,
          bool include_optimizer_state = true);

}  // namespace distributed
}  // namespace kortexdl
