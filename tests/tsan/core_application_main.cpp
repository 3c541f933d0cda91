// Test main for the thread tests under ThreadSanitizer: a QCoreApplication (no widgets, no
// display) whose event loop receives what the worker threads hand back.
#include <gtest/gtest.h>

#include <QCoreApplication>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  QCoreApplication app(argc, argv);
  return RUN_ALL_TESTS();
}
