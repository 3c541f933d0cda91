#include "ui/run_list_model.h"

#include <QApplication>
#include <QDateTime>
#include <QStyle>

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace ganpo::ui {
namespace {

QString duration_text(double seconds) {
  const long t = static_cast<long>(seconds + 0.5);
  if (t >= 3600) return QString("%1h%2m").arg(t / 3600).arg((t % 3600) / 60, 2, 10, QChar('0'));
  if (t >= 60) return QString("%1m%2s").arg(t / 60).arg(t % 60, 2, 10, QChar('0'));
  return QString("%1s").arg(t);
}

double duration_of(const RunRow& r) { return run_duration_seconds(r, unix_now()); }

QIcon status_icon(RunStatus status) {
  QStyle* style = QApplication::style();
  switch (status) {
    case RunStatus::running: return style->standardIcon(QStyle::SP_MediaPlay);
    case RunStatus::paused: return style->standardIcon(QStyle::SP_MediaPause);
    case RunStatus::completed: return style->standardIcon(QStyle::SP_DialogApplyButton);
    case RunStatus::failed: return style->standardIcon(QStyle::SP_MessageBoxCritical);
    case RunStatus::stopped: return style->standardIcon(QStyle::SP_MediaStop);
    case RunStatus::queued: break;
  }
  return style->standardIcon(QStyle::SP_FileDialogDetailedView);
}

}  // namespace

QColor run_color(int64_t run_id) {
  // Tableau 10: distinct on light and dark backgrounds.
  static const QColor palette[] = {QColor(31, 119, 180), QColor(255, 127, 14), QColor(44, 160, 44),
                                   QColor(214, 39, 40),  QColor(148, 103, 189), QColor(140, 86, 75),
                                   QColor(227, 119, 194), QColor(127, 127, 127), QColor(188, 189, 34),
                                   QColor(23, 190, 207)};
  return palette[static_cast<size_t>((run_id > 0 ? run_id - 1 : 0) % 10)];
}

RunListModel::RunListModel(QObject* parent) : QAbstractTableModel(parent) {}

int RunListModel::rowCount(const QModelIndex& parent) const {
  return parent.isValid() ? 0 : static_cast<int>(entries_.size());
}

int RunListModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QString RunListModel::objective_of(const RunListEntry& e) {
  if (e.row.stage == "sft") return "sft";
  if (!e.config.is_object()) return "?";
  static const std::map<std::string, QString> names{{"sigmoid", "dpo"}, {"simpo", "simpo"}, {"ipo", "ipo"},
                                                     {"hinge", "hinge"}};
  // Read by type: a stored config of another shape ("loss_type": 1, "enabled": "yes", written by
  // another version or a script) reads as "?" / not GANPO; nlohmann's value() would throw while
  // the table paints.
  auto field = [&](const char* section, const char* key) -> const nlohmann::json* {
    const auto s = e.config.find(section);
    if (s == e.config.end() || !s->is_object()) return nullptr;
    const auto f = s->find(key);
    return f == s->end() ? nullptr : &*f;
  };
  const nlohmann::json* loss_type = field("objective", "loss_type");
  const std::string loss = !loss_type ? "sigmoid" : loss_type->is_string() ? loss_type->get<std::string>() : "?";
  auto it = names.find(loss);
  QString text = it == names.end() ? QString::fromStdString(loss) : it->second;
  const nlohmann::json* ganpo = field("ganpo", "enabled");
  if (ganpo && ganpo->is_boolean() && ganpo->get<bool>()) text += "+ganpo";
  return text;
}

QVariant RunListModel::data(const QModelIndex& index, int role) const {
  if (!index.isValid() || index.row() >= rowCount()) return {};
  const RunListEntry& e = entries_[static_cast<size_t>(index.row())];
  const RunRow& r = e.row;
  if (role == RunIdRole) return QVariant::fromValue<qlonglong>(r.id);
  const int col = index.column();
  if (role == Qt::DecorationRole) {
    if (col == Color) return run_color(r.id);
    if (col == Status) return status_icon(r.status);
    return {};
  }
  if (role == Qt::ToolTipRole) {
    if (col == Status && !r.error.empty()) return QString::fromStdString(r.error);
    if (col == Name && !r.notes.empty()) return QString::fromStdString(r.notes);
    return {};
  }
  if (role == SortRole) {
    switch (col) {
      case Color: return QVariant::fromValue<qlonglong>(r.id);
      case Step: return QVariant::fromValue<qlonglong>(r.last_step.value_or(0));
      case BestEval: return e.best_eval ? QVariant(*e.best_eval) : QVariant(-1e300);
      case Started: return r.started_at.value_or(0);
      case Duration: return duration_of(r);
      default: break;
    }
    role = Qt::DisplayRole;
  }
  if (role != Qt::DisplayRole) return {};
  switch (col) {
    case Color: return QString::number(r.id);
    case Name: return QString::fromStdString(r.name);
    case Status: return QString(to_string(r.status));
    case Objective: return objective_of(e);
    case Step: {
      const QString done = QString::number(r.last_step.value_or(0));
      return r.total_steps ? done + " / " + QString::number(*r.total_steps) : done;
    }
    case BestEval:
      return e.best_eval ? QString("%1 %2").arg(e.best_eval_name).arg(*e.best_eval, 0, 'f', 3) : QString();
    case Device: return QString::fromStdString(r.device);
    case Started:
      return r.started_at ? QDateTime::fromSecsSinceEpoch(static_cast<qint64>(*r.started_at)).toString("yyyy-MM-dd HH:mm")
                          : QString();
    case Duration: return r.started_at ? duration_text(duration_of(r)) : QString();
    case Tags: return QString::fromStdString(r.tags);
    default: return {};
  }
}

QVariant RunListModel::headerData(int section, Qt::Orientation orientation, int role) const {
  if (orientation != Qt::Horizontal || role != Qt::DisplayRole) return {};
  static const char* names[] = {"#", "Name", "Status", "Objective", "Step", "Best eval", "Device", "Started",
                                "Duration", "Tags"};
  return section >= 0 && section < ColumnCount ? QString(names[section]) : QVariant();
}

int RunListModel::rowOf(int64_t run_id) const {
  const auto it = row_of_.find(run_id);
  return it == row_of_.end() ? -1 : it->second;
}

const RunListEntry* RunListModel::entry(int64_t run_id) const {
  const int row = rowOf(run_id);
  return row < 0 ? nullptr : &entries_[static_cast<size_t>(row)];
}

void RunListModel::reindex() {
  row_of_.clear();
  row_of_.reserve(entries_.size());
  for (size_t i = 0; i < entries_.size(); ++i) row_of_[entries_[i].row.id] = static_cast<int>(i);
}

void RunListModel::upsert(const std::vector<RunListEntry>& entries) {
  std::vector<const RunListEntry*> added;
  std::unordered_map<int64_t, size_t> added_at;  // a run given twice is added once, as last given
  for (const auto& e : entries) {
    const int row = rowOf(e.row.id);
    if (row >= 0) {
      entries_[static_cast<size_t>(row)] = e;
      Q_EMIT dataChanged(index(row, 0), index(row, ColumnCount - 1));
    } else if (const auto it = added_at.find(e.row.id); it != added_at.end()) {
      added[it->second] = &e;
    } else {
      added_at[e.row.id] = added.size();
      added.push_back(&e);
    }
  }
  if (added.empty()) return;
  const int first = rowCount();
  beginInsertRows({}, first, first + static_cast<int>(added.size()) - 1);
  for (const RunListEntry* e : added) {
    row_of_[e->row.id] = rowCount();
    entries_.push_back(*e);
  }
  endInsertRows();
}

void RunListModel::retain(const std::vector<int64_t>& ids) {
  const std::unordered_set<int64_t> keep(ids.begin(), ids.end());
  // The blocks of neighbouring rows to remove, first row and last.
  std::vector<std::pair<int, int>> blocks;
  for (int row = 0; row < rowCount(); ++row) {
    if (keep.count(entries_[static_cast<size_t>(row)].row.id)) continue;
    if (!blocks.empty() && blocks.back().second == row - 1) blocks.back().second = row;
    else blocks.emplace_back(row, row);
  }
  if (blocks.empty()) return;
  const auto compact = [&] {
    entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                  [&](const RunListEntry& e) { return !keep.count(e.row.id); }),
                   entries_.end());
    reindex();
  };
  // Many scattered deletions at once (runs deleted in bulk elsewhere): one reset, since each
  // removal costs the view and the sorting proxy a pass over every row. The selection is lost
  // then; the toolbar acts on nothing until the user selects again.
  constexpr size_t kMostRemovalsOneByOne = 64;
  if (blocks.size() > kMostRemovalsOneByOne) {
    beginResetModel();
    compact();
    endResetModel();
    return;
  }
  // Otherwise block by block from the end, so the view keeps its selection and scroll.
  for (auto b = blocks.rbegin(); b != blocks.rend(); ++b) {
    beginRemoveRows({}, b->first, b->second);
    entries_.erase(entries_.begin() + b->first, entries_.begin() + b->second + 1);
    reindex();  // before endRemoveRows: its listeners may look runs up
    endRemoveRows();
  }
}

RunListProxy::RunListProxy(QObject* parent) : QSortFilterProxyModel(parent) {
  setSortRole(RunListModel::SortRole);
  setDynamicSortFilter(true);
}

QString RunListProxy::setFilterText(const QString& text) {
  filter_ = RunFilter::parse(text);
  invalidateFilter();
  return filter_.error();
}

bool RunListProxy::filterAcceptsRow(int source_row, const QModelIndex&) const {
  auto* model = static_cast<RunListModel*>(sourceModel());
  const RunListEntry& e = model->entryAt(source_row);
  return filter_.matches(e.row, e.config);
}

}  // namespace ganpo::ui
