// The run list's model at the size of a long-lived workspace: 10,000 runs arrive in one poll,
// some change, some are deleted elsewhere, and every id still finds its row, in order, through a
// sorting and filtering proxy. Prints how long the poll's two calls take (figures, not asserted).
#include "ui/run_list_model.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <set>

using namespace ganpo;
using namespace ganpo::ui;

namespace {

RunListEntry entry(int64_t id, const std::string& name) {
  RunListEntry e;
  e.row.id = id;
  e.row.name = name;
  e.row.status = RunStatus::completed;
  e.config = nlohmann::json::object();
  return e;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST(RunListModel, TenThousandRunsKeepEveryIdOnItsRowThroughUpdatesAndDeletions) {
  RunListModel model;
  RunListProxy proxy;
  proxy.setSourceModel(&model);
  proxy.sort(RunListModel::Name, Qt::AscendingOrder);
  int insertions = 0;
  QObject::connect(&model, &QAbstractItemModel::rowsInserted, [&] { ++insertions; });

  constexpr int64_t kRuns = 10000;
  std::vector<RunListEntry> first;
  for (int64_t id = 1; id <= kRuns; ++id) first.push_back(entry(id, "run " + std::to_string(id)));
  first.push_back(entry(7, "run 7 again"));  // a run given twice in one poll is one row, as last given
  auto t0 = std::chrono::steady_clock::now();
  model.upsert(first);
  const double insert_ms = ms_since(t0);
  ASSERT_EQ(model.rowCount(), kRuns);
  EXPECT_EQ(insertions, 1) << "one insertion for the whole poll";
  EXPECT_EQ(model.entry(7)->row.name, "run 7 again");

  // Deleted elsewhere: every third run and the block 5000..5999 (runs of neighbouring rows).
  std::vector<int64_t> kept;
  std::set<int64_t> gone;
  for (int64_t id = 1; id <= kRuns; ++id)
    if (id % 3 == 0 || (id >= 5000 && id < 6000)) gone.insert(id);
    else kept.push_back(id);
  t0 = std::chrono::steady_clock::now();
  model.retain(kept);
  const double retain_ms = ms_since(t0);
  const size_t bulk_deleted = gone.size();
  t0 = std::chrono::steady_clock::now();
  model.retain(kept);  // what every later poll does when nothing was deleted
  const double steady_retain_ms = ms_since(t0);

  // A few deleted, in two blocks: removed row by row, the others keep their rows' identity.
  int removals = 0;
  QObject::connect(&model, &QAbstractItemModel::rowsRemoved, [&] { ++removals; });
  std::vector<int64_t> fewer;
  for (int64_t id : kept)
    if (id == 1 || id == 2 || id == 8000) gone.insert(id);
    else fewer.push_back(id);
  kept = fewer;
  const QPersistentModelIndex held = model.index(model.rowOf(8002), RunListModel::Name);
  model.retain(kept);
  EXPECT_EQ(removals, 2) << "rows 1-2 and 8000";
  EXPECT_EQ(held.row(), model.rowOf(8002)) << "an index the view holds follows its run";

  // An update in place and two new runs, as the next poll brings them.
  model.upsert({entry(4, "renamed"), entry(kRuns + 1, "new a"), entry(kRuns + 2, "new b")});
  ASSERT_EQ(model.rowCount(), static_cast<int>(kept.size()) + 2);
  EXPECT_EQ(proxy.rowCount(), model.rowCount());
  for (int64_t id : gone) EXPECT_EQ(model.rowOf(id), -1) << id;
  int64_t previous = 0;
  for (int row = 0; row < model.rowCount(); ++row) {
    const int64_t id = model.entryAt(row).row.id;
    ASSERT_EQ(model.rowOf(id), row) << "id " << id;
    EXPECT_GT(id, previous) << "rows keep their order";
    previous = id;
  }
  EXPECT_EQ(model.entry(4)->row.name, "renamed");
  EXPECT_EQ(model.entry(kRuns + 2)->row.name, "new b");
  // The proxy's sorted view agrees with the rows it maps to.
  const QModelIndex top = proxy.index(0, RunListModel::Name);
  EXPECT_EQ(top.data().toString(), "new a") << "sorted by name";
  EXPECT_EQ(model.entryAt(proxy.mapToSource(top).row()).row.id, kRuns + 1);

  std::printf("[figures] %lld runs: upsert (first poll) %.1f ms, retain with %zu deleted %.1f ms, "
              "retain with none deleted %.1f ms (this machine, sorted proxy attached)\n",
              static_cast<long long>(kRuns), insert_ms, bulk_deleted, retain_ms, steady_retain_ms);
}
