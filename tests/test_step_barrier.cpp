// The data-parallel step's barrier (src/parallel/step_barrier.hpp): every
// phase lets all parties through together, again and again, whether the
// waiters catch the phase change while polling or after falling asleep.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "parallel/step_barrier.hpp"

namespace {

using kortexdl::detail::StepBarrier;

// Each party counts its phases; between two arrivals nobody may be more
// than one phase ahead of anybody else, and nobody may stall.
void run_phases(std::size_t parties, std::size_t phases, std::chrono::microseconds stagger) {
  StepBarrier barrier(parties);
  std::vector<std::atomic<std::size_t>> done(parties);
  std::atomic<bool> overtaken{false};
  std::vector<std::thread> threads;
  for (std::size_t me = 0; me < parties; ++me) {
    threads.emplace_back([&, me] {
      for (std::size_t phase = 0; phase < phases; ++phase) {
        // Party `me` is late every few phases, so the others fall asleep.
        if (stagger.count() > 0 && phase % (me + 2) == 0) std::this_thread::sleep_for(stagger);
        barrier.arrive_and_wait();
        done[me].store(phase + 1, std::memory_order_release);
        for (std::size_t other = 0; other < parties; ++other) {
          if (done[other].load(std::memory_order_acquire) + 1 < phase + 1) overtaken.store(true);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(overtaken.load()) << "a party passed a phase that another had not reached";
  for (std::size_t me = 0; me < parties; ++me) EXPECT_EQ(done[me].load(), phases);
}

TEST(StepBarrier, ManyShortPhases) { run_phases(2, 200000, std::chrono::microseconds(0)); }

TEST(StepBarrier, ThreePartiesManyShortPhases) { run_phases(3, 50000, std::chrono::microseconds(0)); }

TEST(StepBarrier, LatePartiesMakeTheOthersSleep) { run_phases(3, 400, std::chrono::microseconds(300)); }

TEST(StepBarrier, OnePartyNeverWaits) {
  StepBarrier barrier(1);
  for (int i = 0; i < 1000; ++i) barrier.arrive_and_wait();
}

}  // namespace
