#pragma once
// Per-thread scratch memory. Every compute call takes its buffers from the
// calling thread's arena, so calls on different threads never share scratch
// (forward and evaluate are reentrant) and, once the arena has grown to the
// largest request, a call allocates nothing.
#include <cstddef>
#include <memory>
#include <vector>

namespace kortexdl::detail {

class Workspace {
 public:
  // Scratch for one call; returned to the arena when destroyed. Leases are
  // strictly nested (stack order), which holds for calls on one thread.
  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    float* data() const { return data_; }
    std::size_t size() const { return size_; }
    // Carves consecutive, 64-byte aligned sub-buffers out of the lease.
    float* take(std::size_t floats);

   private:
    friend class Workspace;
    Lease(Workspace* owner, float* data, std::size_t size, std::size_t block, std::size_t mark)
        : owner_(owner), data_(data), size_(size), block_(block), mark_(mark) {}
    Workspace* owner_;
    float* data_;
    std::size_t size_;
    std::size_t block_;
    std::size_t mark_;
    std::size_t taken_ = 0;
  };

  static Workspace& local();
  // floats is rounded up to whole cache lines; every sub-buffer taken from
  // the lease must also be rounded (use padded_floats()).
  Lease acquire(std::size_t floats);
  static std::size_t padded_floats(std::size_t floats);

  std::size_t capacity() const;          // floats held by this arena
  std::size_t allocation_count() const { return allocations_; }

 private:
  struct Block {
    struct FreeAligned {
      void operator()(float* p) const;
    };
    std::unique_ptr<float[], FreeAligned> data;
    std::size_t capacity = 0;
    std::size_t used = 0;
  };
  void release(std::size_t block, std::size_t mark);

  std::vector<Block> blocks_;
  std::size_t depth_ = 0;
  std::size_t allocations_ = 0;
};

}  // namespace kortexdl::detail
