#include "parallel/step_gate.hpp"

#include <algorithm>

#include "kortexdl/threading.hpp"
#include "parallel/step_combiner.hpp"

namespace kortexdl::detail {

bool StepGate::worth_gating(std::size_t rows, double work) {
  if (rows <= StepCombiner::kMaxRows || work < kMinWork) return false;
  return work < StepCombiner::kMinTeamStepFlops || get_num_threads() <= 1;
}

StepGate::StepGate(std::size_t slots) : slots_(std::max<std::size_t>(slots, 1)) {}

bool StepGate::head_overdue(Clock::time_point now) const {
  return head_ != nullptr && now >= head_->deadline;
}

void StepGate::pop_head(Clock::time_point now) {
  head_ = head_->next;
  if (head_ == nullptr) {
    tail_ = nullptr;
    return;
  }
  // The new head sleeps without a timeout: wake it to start its turn.
  head_->deadline = now + kTurn;
  head_->turn.notify_one();
}

void StepGate::take_slot() {
  ++admitted_;
  // Any slot still free was freed more recently than this one was taken
  // back, as far as the gate can tell: its clock starts again.
  free_since_.reset();
}

StepGate::Admission::Admission(StepGate& gate) : gate_(gate) {
  std::unique_lock<std::mutex> lock(gate.mutex_);
  const Clock::time_point now = Clock::now();
  if (gate.admitted_ < gate.slots_ && !gate.head_overdue(now)) {
    gate.take_slot();
    return;
  }
  Waiter self;
  if (gate.tail_ != nullptr) {
    gate.tail_->next = &self;
  } else {
    gate.head_ = &self;
    self.deadline = now + kTurn;
  }
  gate.tail_ = &self;
  while (!self.admitted) {
    if (gate.head_ != &self) {
      self.turn.wait(lock);
      continue;
    }
    // At the head until the turn ends: a freed slot goes to whoever arrives
    // first. Then the next freed slot is this thread's, or a free one now.
    if (self.turn.wait_until(lock, self.deadline) == std::cv_status::no_timeout) continue;
    if (self.admitted) break;
    if (gate.admitted_ < gate.slots_) {
      const Clock::time_point at = Clock::now();
      gate.take_slot();
      gate.pop_head(at);
      break;
    }
    self.turn.wait(lock, [&] { return self.admitted; });
  }
}

StepGate::Admission::~Admission() {
  std::lock_guard<std::mutex> lock(gate_.mutex_);
  const Clock::time_point now = Clock::now();
  // A slot free for kAbandoned while steps kept coming was left by a thread
  // that is not coming back: the first sleeper is owed a slot, this one.
  const bool abandoned = gate_.free_since_ && now - *gate_.free_since_ >= kAbandoned;
  // The last step inside ends: with more than one slot, the sleeper may have
  // this one and its thread the other when it comes back, so no slot waits
  // for the end of a turn when several threads stop together.
  const bool last_inside = gate_.admitted_ == 1 && gate_.slots_ > 1;
  if (gate_.head_ == nullptr || !(gate_.head_overdue(now) || abandoned || last_inside)) {
    --gate_.admitted_;
    if (!gate_.free_since_) gate_.free_since_ = now;
    return;
  }
  // The slot passes straight to the head, so admitted_ is unchanged. Under
  // the mutex: the waiter's node (and its condition variable) lives on its
  // stack and may go as soon as it has been admitted and the mutex is free.
  Waiter* head = gate_.head_;
  gate_.pop_head(now);
  head->admitted = true;
  head->turn.notify_one();
}

std::size_t StepGate::admitted() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return admitted_;
}

std::size_t StepGate::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::size_t count = 0;
  for (const Waiter* w = head_; w != nullptr; w = w->next) ++count;
  return count;
}

}  // namespace kortexdl::detail
