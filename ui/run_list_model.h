// RunListModel: the run list as a Qt table model over run-store rows. It never queries the
// store itself: the main window's poller hands it changed rows (upsert) and the ids that still
// exist (retain), so the view updates in place (dataChanged / row inserts), keeping selection
// and scroll. RunListProxy adds the filter language (ui/run_filter.h) and numeric sorting.
// run_color() gives each run the colour it keeps everywhere (list swatch, chart overlays).
#pragma once

#include <QAbstractTableModel>
#include <QColor>
#include <QSortFilterProxyModel>

#include <optional>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/run_store.h"
#include "ui/run_filter.h"

namespace ganpo::ui {

QColor run_color(int64_t run_id);

// What the list shows of one run.
struct RunListEntry {
  RunRow row;
  nlohmann::json config;              // parsed config_json (null when unreadable)
  std::optional<double> best_eval;    // best held-out metric so far
  QString best_eval_name;             // e.g. "acc" or "eval loss"
};

class RunListModel : public QAbstractTableModel {
  Q_OBJECT
public:
  enum Column { Color, Name, Status, Objective, Step, BestEval, Device, Started, Duration, Tags, ColumnCount };
  static constexpr int SortRole = Qt::UserRole + 1;  // numbers for numeric columns
  static constexpr int RunIdRole = Qt::UserRole + 2;

  explicit RunListModel(QObject* parent = nullptr);

  int rowCount(const QModelIndex& parent = {}) const override;
  int columnCount(const QModelIndex& parent = {}) const override;
  QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
  QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

  // Inserts new runs (one insertion for all of them) and updates known ones in place. Linear in
  // the entries given: the poll hands over every changed row each half second.
  void upsert(const std::vector<RunListEntry>& entries);
  // Removes runs whose id is not in ids (deleted elsewhere). Linear in the rows and ids: the poll
  // passes every id of the workspace (10,000 runs must not cost 10^8 comparisons).
  void retain(const std::vector<int64_t>& ids);
  const RunListEntry* entry(int64_t run_id) const;
  const RunListEntry& entryAt(int row) const { return entries_.at(static_cast<size_t>(row)); }
  int rowOf(int64_t run_id) const;

  // One-line description of the objective: "dpo+ganpo", "simpo", "sft".
  static QString objective_of(const RunListEntry& e);

private:
  void reindex();

  std::vector<RunListEntry> entries_;
  std::unordered_map<int64_t, int> row_of_;  // run id -> row in entries_
};

class RunListProxy : public QSortFilterProxyModel {
  Q_OBJECT
public:
  explicit RunListProxy(QObject* parent = nullptr);
  // Returns the filter's error message ("" when it parsed).
  QString setFilterText(const QString& text);

protected:
  bool filterAcceptsRow(int source_row, const QModelIndex& source_parent) const override;

private:
  RunFilter filter_;
};

}  // namespace ganpo::ui
