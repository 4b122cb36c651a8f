// distributed::Communicator: the process group, over MPI when the build has
// it (KORTEX_WITH_MPI) and the program was started by an MPI launcher, else
// a world of one process. The only file of the library that includes mpi.h.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>

#include "kortexdl/distributed.hpp"
#include "kortexdl/error.hpp"

#ifdef KORTEX_WITH_MPI
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace kortexdl::distributed {

namespace {

using Clock = std::chrono::steady_clock;

constexpr double kDefaultTimeout = 300.0;
constexpr int kTimeoutExitStatus = 70;  // EX_SOFTWARE

double timeout_from(const InitOptions& options) {
  if (options.timeout_seconds) {
    const double t = *options.timeout_seconds;
    if (!(t >= 0.0) || t > 1e9) {
      throw InvalidArgumentError("timeout_seconds: must be >= 0 (0 disables the watchdog), got " + std::to_string(t));
    }
    return t;
  }
  if (const char* env = std::getenv("KORTEX_DISTRIBUTED_TIMEOUT"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const double t = std::strtod(env, &end);
    if (end == env || *end != '\0' || !(t >= 0.0) || t > 1e9) {
      throw InvalidArgumentError(std::string("KORTEX_DISTRIBUTED_TIMEOUT: expected seconds >= 0, got '") + env + "'");
    }
    return t;
  }
  return kDefaultTimeout;
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

// Whether an MPI launcher (mpirun/mpiexec of Open MPI or MPICH, srun with
// PMI/PMIx) started this process: then init() initialises MPI; otherwise a
// world of one process needs no MPI at all. KORTEX_MPI=1 / 0 forces it.
bool launched_by_mpi() {
  if (const char* force = std::getenv("KORTEX_MPI"); force != nullptr && *force != '\0') {
    return std::strcmp(force, "0") != 0;
  }
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

// The size an MPI launcher announced, or 0.
std::size_t launcher_world_size() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"}) {
    if (const char* v = std::getenv(name); v != nullptr) return static_cast<std::size_t>(std::strtoull(v, nullptr, 10));
  }
  return 0;
}

// Ends this process when a collective outlives the timeout. Makes no MPI
// call (so it needs no MPI thread support): it prints what was pending and
// _exit()s; the launcher then ends the rest of the job.
class Watchdog {
 public:
  Watchdog(double timeout, std::string who) : timeout_(timeout), who_(std::move(who)) {
    if (timeout_ > 0.0) thread_ = std::thread([this] { loop(); });
  }
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void arm(const char* operation, std::size_t count, const char* unit) {
    if (timeout_ <= 0.0) return;
    operation_.store(operation, std::memory_order_relaxed);
    count_.store(count, std::memory_order_relaxed);
    unit_.store(unit, std::memory_order_relaxed);
    sequence_.fetch_add(1, std::memory_order_relaxed);
    const auto now = Clock::now().time_since_epoch().count();
    started_.store(now == 0 ? 1 : now, std::memory_order_release);
  }
  void disarm() { started_.store(0, std::memory_order_release); }

 private:
  void loop() {
    const auto period = std::chrono::duration<double>(std::clamp(timeout_ / 20.0, 0.01, 0.5));
    std::unique_lock<std::mutex> lock(mutex_);
    while (!quit_) {
      wake_.wait_for(lock, period);
      if (quit_) break;
      const auto started = started_.load(std::memory_order_acquire);
      if (started == 0) continue;
      const double waited =
          std::chrono::duration<double>(Clock::now().time_since_epoch() - Clock::duration(started)).count();
      if (waited < timeout_) continue;
      char message[1024];
      std::snprintf(message, sizeof message,
                    "kortexdl.distributed: %s: %s of %zu %s (collective #%llu) did not complete within %.3g s: "
                    "another rank has died, stalled, or is not calling the same collectives. Exiting with "
                    "status %d so the job ends instead of hanging (the limit is init(timeout_seconds=...) or "
                    "KORTEX_DISTRIBUTED_TIMEOUT; model files already written are complete).\n",
                    who_.c_str(), operation_.load(), count_.load(), unit_.load(),
                    static_cast<unsigned long long>(sequence_.load()), timeout_, kTimeoutExitStatus);
      const ssize_t ignored = ::write(2, message, std::strlen(message));
      (void)ignored;
      std::fflush(nullptr);
      ::_exit(kTimeoutExitStatus);
    }
  }

  double timeout_;
  std::string who_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool quit_ = false;
  std::atomic<Clock::rep> started_{0};
  std::atomic<const char*> operation_{""};
  std::atomic<std::size_t> count_{0};
  std::atomic<const char*> unit_{""};
  std::atomic<std::uint64_t> sequence_{0};
};

struct Armed {
  Armed(Watchdog* w, const char* operation, std::size_t count, const char* unit) : watchdog(w) {
    if (watchdog) watchdog->arm(operation, count, unit);
  }
  ~Armed() {
    if (watchdog) watchdog->disarm();
  }
  Armed(const Armed&) = delete;
  Armed& operator=(const Armed&) = delete;
  Watchdog* watchdog;
};

std::mutex registry_mutex;
std::unique_ptr<Communicator> registry;  // the process's communicator once init() ran
bool finalized_once = false;
InitOptions registry_options;

}  // namespace

struct Communicator::Impl {
  std::size_t rank = 0;
  std::size_t size = 1;
  double timeout = kDefaultTimeout;
  bool owns_mpi = false;
  bool uses_mpi = false;
  std::string library = "none";
  std::string host;
  std::mutex calls;  // one collective at a time (MPI_THREAD_SERIALIZED)
  std::unique_ptr<Watchdog> watchdog;
  double allreduce_seconds = 0.0;
  std::uint64_t allreduce_calls = 0;
#ifdef KORTEX_WITH_MPI
  MPI_Comm comm = MPI_COMM_NULL;

  [[noreturn]] void fail(const char* call, int code) const {
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) std::snprintf(text, sizeof text, "error %d", code);
    throw DistributedError("kortexdl.distributed: " + std::string(call) + " failed on rank " + std::to_string(rank) +
                           " of " + std::to_string(size) + " (" + host + "): " + text +
                           "; another rank has probably died. The training state of this process is no longer in "
                           "step with the others; restart the job from the last saved model");
  }
  void check(const char* call, int code) const {
    if (code != MPI_SUCCESS) fail(call, code);
  }
#endif
};

Communicator::Communicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Communicator::~Communicator() {
#ifdef KORTEX_WITH_MPI
  int finalized = 1;
  if (impl_ && impl_->comm != MPI_COMM_NULL && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) {
    MPI_Comm_free(&impl_->comm);
  }
#endif
}

std::size_t Communicator::rank() const { return impl_->rank; }
std::size_t Communicator::world_size() const { return impl_->size; }
double Communicator::timeout_seconds() const { return impl_->timeout; }
bool Communicator::owns_mpi() const { return impl_->owns_mpi; }

double Communicator::allreduce_seconds() const {
  std::lock_guard<std::mutex> lock(impl_->calls);
  return impl_->allreduce_seconds;
}

std::uint64_t Communicator::allreduce_calls() const {
  std::lock_guard<std::mutex> lock(impl_->calls);
  return impl_->allreduce_calls;
}

std::string Communicator::description() const {
  std::string library = impl_->library;
  if (const auto cut = library.find_first_of(",\n"); cut != std::string::npos) library.resize(cut);
  return library + ", rank " + std::to_string(impl_->rank) + " of " + std::to_string(impl_->size) + " on " +
         impl_->host;
}

namespace {

#ifdef KORTEX_WITH_MPI
// MPI counts are ints: large buffers go in pieces.
constexpr std::size_t kMaxPiece = std::size_t{1} << 30;

template <class T>
void allreduce_pieces(Communicator::Impl& impl, T* data, std::size_t count, MPI_Datatype type, const char* unit) {
  Armed armed(impl.watchdog.get(), "MPI_Allreduce(sum)", count, unit);
  for (std::size_t done = 0; done < count; done += kMaxPiece) {
    const int n = static_cast<int>(std::min(kMaxPiece, count - done));
    impl.check("MPI_Allreduce", MPI_Allreduce(MPI_IN_PLACE, data + done, n, type, MPI_SUM, impl.comm));
  }
}
#endif

template <class T>
void allreduce_impl(Communicator::Impl& impl, T* data, std::size_t count, const char* unit) {
  std::lock_guard<std::mutex> lock(impl.calls);
  const auto start = Clock::now();
#ifdef KORTEX_WITH_MPI
  if (impl.uses_mpi && impl.size > 1 && count > 0) {
    allreduce_pieces(impl, data, count, std::is_same_v<T, float> ? MPI_FLOAT : MPI_DOUBLE, unit);
  }
#else
  (void)data;
  (void)count;
  (void)unit;
#endif
  impl.allreduce_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  ++impl.allreduce_calls;
}

}  // namespace

void Communicator::allreduce_sum(float* data, std::size_t count) { allreduce_impl(*impl_, data, count, "floats"); }
void Communicator::allreduce_sum(double* data, std::size_t count) { allreduce_impl(*impl_, data, count, "doubles"); }

void Communicator::broadcast(void* data, std::size_t bytes, std::size_t root) {
  if (root >= impl_->size) {
    throw InvalidArgumentError("broadcast: root must be a rank below " + std::to_string(impl_->size) + ", got " +
                               std::to_string(root));
  }
  std::lock_guard<std::mutex> lock(impl_->calls);
#ifdef KORTEX_WITH_MPI
  if (impl_->uses_mpi && impl_->size > 1 && bytes > 0) {
    Armed armed(impl_->watchdog.get(), "MPI_Bcast", bytes, "bytes");
    auto* p = static_cast<unsigned char*>(data);
    for (std::size_t done = 0; done < bytes; done += kMaxPiece) {
      const int n = static_cast<int>(std::min(kMaxPiece, bytes - done));
      impl_->check("MPI_Bcast", MPI_Bcast(p + done, n, MPI_BYTE, static_cast<int>(root), impl_->comm));
    }
  }
#else
  (void)data;
  (void)bytes;
#endif
}

void Communicator::barrier() {
  std::lock_guard<std::mutex> lock(impl_->calls);
#ifdef KORTEX_WITH_MPI
  if (impl_->uses_mpi && impl_->size > 1) {
    Armed armed(impl_->watchdog.get(), "MPI_Barrier", 0, "bytes");
    impl_->check("MPI_Barrier", MPI_Barrier(impl_->comm));
  }
#endif
}

bool mpi_available() noexcept {
#ifdef KORTEX_WITH_MPI
  return true;
#else
  return false;
#endif
}

namespace {

bool same_options(const InitOptions& a, const InitOptions& b) {
  return a.timeout_seconds == b.timeout_seconds && a.fortran_handle == b.fortran_handle;
}

void finalize_at_exit() { finalize(); }

std::unique_ptr<Communicator::Impl> make_impl(const InitOptions& options) {
  auto impl = std::make_unique<Communicator::Impl>();
  impl->timeout = timeout_from(options);
  impl->host = host_name();
#ifdef KORTEX_WITH_MPI
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) throw DistributedError("kortexdl.distributed.init: MPI has already been finalized in this process");
  if (!initialized && (launched_by_mpi() || options.fortran_handle)) {
    int provided = 0;
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
      throw DistributedError("kortexdl.distributed.init: MPI_Init_thread failed on " + impl->host);
    }
    impl->owns_mpi = true;
    initialized = 1;
  }
  if (initialized) {
    impl->uses_mpi = true;
    char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
    int length = 0;
    if (MPI_Get_library_version(version, &length) == MPI_SUCCESS) impl->library = version;
    const MPI_Comm parent = options.fortran_handle ? MPI_Comm_f2c(*options.fortran_handle) : MPI_COMM_WORLD;
    if (parent == MPI_COMM_NULL) throw InvalidArgumentError("init: the communicator handle is MPI_COMM_NULL");
    int rank = 0;
    int size = 1;
    impl->check("MPI_Comm_rank", MPI_Comm_rank(parent, &rank));
    impl->check("MPI_Comm_size", MPI_Comm_size(parent, &size));
    impl->rank = static_cast<std::size_t>(rank);
    impl->size = static_cast<std::size_t>(size);
    impl->watchdog = std::make_unique<Watchdog>(
        impl->timeout, "rank " + std::to_string(rank) + " of " + std::to_string(size) + " (" + impl->host +
                           ", pid " + std::to_string(static_cast<long>(getpid())) + ")");
    {
      Armed armed(impl->watchdog.get(), "MPI_Comm_dup", 0, "bytes");
      impl->check("MPI_Comm_dup", MPI_Comm_dup(parent, &impl->comm));
    }
    // Errors on our communicator come back as codes (a DistributedError),
    // never as an abort inside the library. The caller's communicators keep
    // their own handlers.
    impl->check("MPI_Comm_set_errhandler", MPI_Comm_set_errhandler(impl->comm, MPI_ERRORS_RETURN));
    return impl;
  }
#endif
  if (options.fortran_handle) {
    throw InvalidArgumentError("init: a communicator was given, but this kortexdl was built without MPI "
                               "(KORTEX_WITH_MPI=OFF)");
  }
  const std::size_t announced = launcher_world_size();
  if (announced > 1) {
    throw DistributedError("kortexdl.distributed.init: this process was started by an MPI launcher with " +
                           std::to_string(announced) +
                           " processes, but this kortexdl was built without MPI (KORTEX_WITH_MPI=OFF), so every "
                           "process would train alone; rebuild with libopenmpi-dev installed");
  }
  impl->library = "no MPI (one process)";
  return impl;
}

}  // namespace

Communicator& init(const InitOptions& options) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (registry) {
    const bool defaults = !options.timeout_seconds && !options.fortran_handle;
    if (!defaults && !same_options(options, registry_options)) {
      throw InvalidArgumentError("init: already initialised with other options (call finalize() first)");
    }
    return *registry;
  }
  if (finalized_once) {
    throw DistributedError("kortexdl.distributed.init: finalize() already ended MPI in this process; MPI cannot be "
                           "initialised twice");
  }
  registry.reset(new Communicator(make_impl(options)));
  registry_options = options;
  static bool registered = false;
  if (!registered) {
    std::atexit(&finalize_at_exit);
    registered = true;
  }
  return *registry;
}

bool initialized() noexcept {
  std::lock_guard<std::mutex> lock(registry_mutex);
  return registry != nullptr;
}

Communicator& communicator() { return init(); }
std::size_t rank() { return communicator().rank(); }
std::size_t world_size() { return communicator().world_size(); }

void finalize() {
  std::lock_guard<std::mutex> lock(registry_mutex);
  if (!registry) return;
  const bool owns = registry->owns_mpi();
  registry.reset();  // frees the communicator, stops the watchdog
  if (owns) finalized_once = true;  // MPI_Init cannot be called again
#ifdef KORTEX_WITH_MPI
  int finalized = 1;
  if (owns && MPI_Finalized(&finalized) == MPI_SUCCESS && !finalized) MPI_Finalize();
#else
  (void)owns;
#endif
}

}  // namespace kortexdl::distributed
