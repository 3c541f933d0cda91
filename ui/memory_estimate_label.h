// MemoryEstimateLabel: one line showing the parameter count and the estimated training memory
// (core/memory_estimate.h) for the config being edited, broken down on hover.
//
// When model.checkpoint names a folder with a config.json, that shape (with its real
// vocabulary) is used, as the trainer would; otherwise the config's preset or explicit shape
// with the byte tokenizer's vocabulary. The checkpoint's config.json is read once per path. An
// estimate above what the run's device holds (the GPU's memory, or the RAM free on this machine
// for a CPU run) is said, in red.
#pragma once

#include <QLabel>
#include <QString>

#include <map>
#include <optional>
#include <string>
#include <utility>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo::ui {

class MemoryEstimateLabel : public QLabel {
  Q_OBJECT
public:
  explicit MemoryEstimateLabel(QWidget* parent = nullptr);
  void showEstimate(const RunConfig& config);
  void showUnavailable(const QString& why);
  // The shape in the model folder's config.json (read once per folder); none when unreadable.
  std::optional<ModelShape> checkpointShape(const std::string& folder);

private:
  // What the run's device holds: the GPU's memory (NVML) for "cuda[:N]", and for "auto" where a
  // GPU answers; else the RAM free now, shared by the run's processes. bytes < 0: unknown.
  struct DeviceMemory {
    int64_t bytes = -1;
    int processes = 1;
    std::string where;
  };
  DeviceMemory deviceMemory(const RunConfig& config);
  std::map<int, std::optional<std::pair<std::string, double>>> gpus_;  // index -> name, MiB (read once)

  std::string cached_folder_;
  std::optional<ModelShape> cached_shape_;
};

// "1.4 GiB", "236 MiB", "812 KiB", "12 B".
QString format_bytes(int64_t bytes);
// "0.89M", "2.61B", "512K".
QString format_count(int64_t count);

}  // namespace ganpo::ui
