#include "workspace.hpp"

#include <algorithm>
#include <new>

#include "checked_math.hpp"
#include "kortexdl/error.hpp"

namespace kortexdl::detail {

namespace {
constexpr std::size_t kAlignFloats = 16;  // 64 bytes
constexpr std::align_val_t kAlignment{64};

float* allocate_floats(std::size_t floats) {
  const std::size_t bytes = checked_mul(floats, sizeof(float), "workspace");
  return static_cast<float*>(::operator new(bytes, kAlignment));
}
}  // namespace

void Workspace::Block::FreeAligned::operator()(float* p) const { ::operator delete(p, kAlignment); }

Workspace& Workspace::local() {
  thread_local Workspace workspace;
  return workspace;
}

std::size_t Workspace::padded_floats(std::size_t floats) {
  return checked_add(floats, kAlignFloats - 1, "workspace") / kAlignFloats * kAlignFloats;
}

std::size_t Workspace::capacity() const {
  std::size_t total = 0;
  for (const auto& b : blocks_) total += b.capacity;
  return total;
}

Workspace::Lease Workspace::acquire(std::size_t floats) {
  floats = padded_floats(std::max<std::size_t>(floats, 1));
  if (floats > kMaxWorkspaceFloats) {
    throw ResourceLimitError("scratch memory: a call would need " + std::to_string(floats * sizeof(float)) +
                             " bytes, more than the limit of " +
                             std::to_string(kMaxWorkspaceFloats * sizeof(float)) +
                             " bytes; use a smaller batch_size");
  }
  // Coalesce: when nothing is leased, several blocks become one big enough
  // for all of them, so the steady state is a single block and no allocation.
  if (depth_ == 0 && (blocks_.size() > 1 || (blocks_.size() == 1 && blocks_[0].capacity < floats))) {
    std::size_t total = std::max(capacity(), floats);
    blocks_.clear();
    Block block;
    block.data.reset(allocate_floats(total));
    block.capacity = total;
    blocks_.push_back(std::move(block));
    ++allocations_;
  }
  if (blocks_.empty() || blocks_.back().capacity - blocks_.back().used < floats) {
    const std::size_t grow = blocks_.empty() ? 0 : blocks_.back().capacity;
    Block block;
    block.capacity = std::max(floats, grow);
    block.data.reset(allocate_floats(block.capacity));
    blocks_.push_back(std::move(block));
    ++allocations_;
  }
  const std::size_t index = blocks_.size() - 1;
  Block& block = blocks_[index];
  float* data = block.data.get() + block.used;
  const std::size_t mark = block.used;
  block.used += floats;
  ++depth_;
  return Lease(this, data, floats, index, mark);
}

void Workspace::release(std::size_t block, std::size_t mark) {
  blocks_[block].used = mark;
  --depth_;
}

Workspace::Lease::Lease(Lease&& other) noexcept
    : owner_(other.owner_), data_(other.data_), size_(other.size_), block_(other.block_),
      mark_(other.mark_), taken_(other.taken_) {
  other.owner_ = nullptr;
}

Workspace::Lease::~Lease() {
  if (owner_ != nullptr) owner_->release(block_, mark_);
}

float* Workspace::Lease::take(std::size_t floats) {
  const std::size_t padded = padded_floats(floats);
  if (padded > size_ - taken_) throw InternalError("workspace lease overdrawn");
  float* p = data_ + taken_;
  taken_ += padded;
  return p;
}

}  // namespace kortexdl::detail
