// gtest main for every test binary: like gtest_main, but a binary whose tests were all
// skipped (e.g. parity tests without ../shared/fixtures) exits 77, so meson reports SKIP
// instead of a pass that checked nothing.
#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  const auto* unit = ::testing::UnitTest::GetInstance();
  if (status == 0 && unit->test_to_run_count() > 0 && unit->skipped_test_count() == unit->test_to_run_count()) {
    return 77;
  }
  return status;
}
