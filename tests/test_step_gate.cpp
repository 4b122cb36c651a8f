// Large locked training steps pass a gate that admits one per CPU
// (src/parallel/step_gate.hpp). What must hold:
//  * never more steps inside than slots, and every arrival gets in;
//  * a freed slot goes to the next arrival during the first sleeper's turn,
//    and to that sleeper after it, so nobody waits for ever, also when the
//    threads inside keep coming back; a slot left free goes to the sleeper
//    when the next step ends, and so does the last slot in use;
//  * which steps pass it;
//  * threads training one network through it lose no step.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include "architecture.hpp"
#include "kortexdl/kortexdl.hpp"
#include "parallel/step_combiner.hpp"
#include "parallel/step_gate.hpp"
#include "test_support.hpp"

namespace {

using kortexdl::detail::StepCombiner;
using kortexdl::detail::StepGate;
using Clock = std::chrono::steady_clock;

void busy_for(std::chrono::microseconds d) {
  const auto end = Clock::now() + d;
  while (Clock::now() < end) {
  }
}

void wait_until_waiting(const StepGate& gate, std::size_t count) {
  kortex_test::eventually([&] { return gate.waiting() >= count; }, std::chrono::seconds(20));
  ASSERT_GE(gate.waiting(), count) << "threads never queued";
}

TEST(StepGate, NeverAdmitsMoreThanItsSlots) {
  constexpr std::size_t kSlots = 2;
  constexpr int kThreads = 6;
  constexpr int kSteps = 60;
  StepGate gate(kSlots);
  std::atomic<int> inside{0};
  std::atomic<int> most_inside{0};
  std::atomic<int> steps{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kSteps; ++i) {
        StepGate::Admission admission(gate);
        const int now_inside = inside.fetch_add(1) + 1;
        int seen = most_inside.load();
        while (now_inside > seen && !most_inside.compare_exchange_weak(seen, now_inside)) {
        }
        busy_for(std::chrono::microseconds(100));
        inside.fetch_sub(1);
        steps.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(steps.load(), kThreads * kSteps);
  EXPECT_LE(most_inside.load(), static_cast<int>(kSlots));
  EXPECT_GE(most_inside.load(), 1);
  EXPECT_EQ(gate.admitted(), 0u);
  EXPECT_EQ(gate.waiting(), 0u);
}

TEST(StepGate, ZeroSlotsMeansOne) {
  StepGate gate(0);
  EXPECT_EQ(gate.slots(), 1u);
  std::optional<StepGate::Admission> first;
  first.emplace(gate);
  EXPECT_EQ(gate.admitted(), 1u);
  std::atomic<bool> second_in{false};
  std::thread second([&] {
    StepGate::Admission admission(gate);
    second_in = true;
  });
  wait_until_waiting(gate, 1);
  EXPECT_FALSE(second_in.load());
  first.reset();
  second.join();
  EXPECT_TRUE(second_in.load());
  EXPECT_EQ(gate.admitted(), 0u);
}

TEST(StepGate, AFreedSlotGoesToTheNextArrivalDuringTheSleepersTurn) {
  // One slot, held by this thread; another thread sleeps for it. Freeing
  // the slot and arriving again at once takes it back (the sleeper's turn
  // lasts kTurn), unless this thread was held up for the whole turn.
  StepGate gate(1);
  std::optional<StepGate::Admission> held;
  held.emplace(gate);
  std::atomic<bool> sleeper_in{false};
  std::thread sleeper([&] {
    StepGate::Admission admission(gate);
    sleeper_in = true;
  });
  wait_until_waiting(gate, 1);
  const auto queued_by = Clock::now();
  held.reset();
  held.emplace(gate);
  const auto back_at = Clock::now();
  if (back_at - queued_by < StepGate::kTurn) {
    EXPECT_FALSE(sleeper_in.load()) << "the sleeper took a slot freed during its turn";
  }
  EXPECT_EQ(gate.admitted(), 1u);
  held.reset();
  sleeper.join();
  EXPECT_TRUE(sleeper_in.load());
}

TEST(StepGate, TheFirstSleeperGetsASlotNobodyTakes) {
  // The holder leaves for good: the sleeper gets the slot at the end of its
  // turn without anyone arriving.
  StepGate gate(1);
  std::optional<StepGate::Admission> held;
  held.emplace(gate);
  std::thread sleeper([&] { StepGate::Admission admission(gate); });
  wait_until_waiting(gate, 1);
  const auto freed_at = Clock::now();
  held.reset();
  sleeper.join();
  EXPECT_LT(Clock::now() - freed_at, std::chrono::seconds(10));
  EXPECT_EQ(gate.admitted(), 0u);
  EXPECT_EQ(gate.waiting(), 0u);
}

// A thread that waits in the gate, then keeps its slot until destroyed.
class Sleeper {
 public:
  explicit Sleeper(StepGate& gate)
      : thread_([this, &gate] {
          StepGate::Admission admission(gate);
          while (!done_.load()) std::this_thread::sleep_for(std::chrono::microseconds(50));
        }) {}
  ~Sleeper() {
    done_ = true;
    thread_.join();
  }
  Sleeper(const Sleeper&) = delete;
  Sleeper& operator=(const Sleeper&) = delete;

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;  // last: starts once done_ exists
};

TEST(StepGate, ASlotLeftFreeGoesToTheSleeperWhenTheNextStepEnds) {
  // Three slots: one is freed and nobody takes it for kAbandoned; one of
  // the two other steps then ends and hands its slot to the sleeper at once
  // (without the rule the sleeper would wait for its turn to end).
  StepGate gate(3);
  std::optional<StepGate::Admission> leaving;
  std::optional<StepGate::Admission> ending;
  StepGate::Admission running(gate);
  ending.emplace(gate);
  leaving.emplace(gate);
  std::optional<Sleeper> sleeper;
  sleeper.emplace(gate);
  wait_until_waiting(gate, 1);
  const auto queued_by = Clock::now();
  leaving.reset();
  std::this_thread::sleep_for(StepGate::kAbandoned + std::chrono::microseconds(200));
  ending.reset();
  if (Clock::now() - queued_by < StepGate::kTurn) {
    EXPECT_EQ(gate.waiting(), 0u) << "the sleeper was not handed the slot";
    EXPECT_EQ(gate.admitted(), 2u);
  }
  sleeper.reset();
  EXPECT_EQ(gate.admitted(), 1u);
}

TEST(StepGate, TheLastStepInsideHandsItsSlotToTheSleeper) {
  // Two slots, one free for less than kAbandoned, a sleeper: when the other
  // step ends the sleeper gets its slot at once instead of at the end of
  // its turn.
  StepGate gate(2);
  std::optional<StepGate::Admission> last;
  std::optional<StepGate::Admission> other;
  last.emplace(gate);
  other.emplace(gate);
  std::optional<Sleeper> sleeper;
  sleeper.emplace(gate);
  wait_until_waiting(gate, 1);
  const auto queued_by = Clock::now();
  other.reset();
  last.reset();
  if (Clock::now() - queued_by < std::min(StepGate::kTurn, StepGate::kAbandoned)) {
    EXPECT_EQ(gate.waiting(), 0u) << "the sleeper was not handed the last slot";
    EXPECT_EQ(gate.admitted(), 1u);
  }
  sleeper.reset();
  EXPECT_EQ(gate.admitted(), 0u);
}

TEST(StepGate, SleepersGetInWhileTheThreadsInsideKeepComingBack) {
  // Two threads take both slots over and over with no pause between steps,
  // so a freed slot always finds one of them arriving; three sleepers must
  // still get in, each after about one turn, while the two keep going.
  constexpr std::size_t kSlots = 2;
  constexpr int kSleepers = 3;
  StepGate gate(kSlots);
  std::atomic<bool> stop{false};
  std::atomic<bool> gave_up{false};
  std::atomic<int> hog_steps{0};
  std::vector<std::thread> hogs;
  for (std::size_t h = 0; h < kSlots; ++h) {
    hogs.emplace_back([&] {
      const auto give_up = Clock::now() + std::chrono::seconds(20);
      while (!stop.load()) {
        if (Clock::now() > give_up) {
          gave_up = true;  // the sleepers never got in while the hogs ran
          return;
        }
        StepGate::Admission admission(gate);
        busy_for(std::chrono::microseconds(50));
        hog_steps.fetch_add(1);
      }
    });
  }
  while (hog_steps.load() < 10) std::this_thread::sleep_for(std::chrono::microseconds(100));
  std::atomic<int> sleepers_in{0};
  std::vector<std::thread> sleepers;
  for (int s = 0; s < kSleepers; ++s) {
    sleepers.emplace_back([&] {
      StepGate::Admission admission(gate);
      sleepers_in.fetch_add(1);
    });
  }
  for (auto& t : sleepers) t.join();
  stop = true;
  for (auto& t : hogs) t.join();
  EXPECT_EQ(sleepers_in.load(), kSleepers);
  EXPECT_FALSE(gave_up.load());
  EXPECT_EQ(gate.admitted(), 0u);
  EXPECT_EQ(gate.waiting(), 0u);
}

TEST(StepGate, PassesLargeStepsThatWouldNotRunOnATeam) {
  kortex_test::ThreadBudget one(1);
  EXPECT_FALSE(StepGate::worth_gating(1, 1e9));
  EXPECT_FALSE(StepGate::worth_gating(StepCombiner::kMaxRows, 1e9));
  EXPECT_FALSE(StepGate::worth_gating(StepCombiner::kMaxRows + 1, StepGate::kMinWork / 2));
  EXPECT_TRUE(StepGate::worth_gating(StepCombiner::kMaxRows + 1, StepGate::kMinWork));
  EXPECT_TRUE(StepGate::worth_gating(256, StepCombiner::kMinTeamStepFlops * 10));
  kortex_test::ThreadBudget two(2);
  EXPECT_TRUE(StepGate::worth_gating(256, StepGate::kMinWork));
  EXPECT_FALSE(StepGate::worth_gating(256, StepCombiner::kMinTeamStepFlops));
}

TEST(StepGate, ThreadsTrainingOneNetworkLoseNoStep) {
  // More threads than CPUs, large steps: they pass the gate, and every step
  // is applied once (the version counts updates).
  kortex_test::ThreadBudget one(1);
  constexpr int kThreads = 6;
  constexpr int kSteps = 12;
  constexpr std::size_t kRows = 64;
  kortexdl::NetworkConfig config;
  config.seed = 3;
  kortexdl::Network net({256, 128, 10}, config);
  net.enable_thread_safety(true);
  const auto arch = kortexdl::detail::Architecture::make({256, 128, 10}, config.hidden_activation,
                                                        config.output_activation);
  ASSERT_TRUE(StepGate::worth_gating(kRows, arch.training_work(kRows)));
  const std::vector<float> x = kortex_test::normal_floats(kRows * 256, 2);
  std::vector<std::int32_t> labels(kRows);
  for (std::size_t r = 0; r < kRows; ++r) labels[r] = static_cast<std::int32_t>(r % 10);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kSteps; ++i) {
        try {
          const float loss = net.train_batch(x, labels, kortexdl::LossType::CrossEntropy, 0.01f, kRows);
          if (!(loss > 0.0f)) failures.fetch_add(1);
        } catch (...) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(net.version(), static_cast<std::uint64_t>(kThreads * kSteps));
}

}  // namespace
