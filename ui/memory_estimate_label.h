// MemoryEstimateLabel: one line showing the parameter count and the estimated training memory
// (core/memory_estimate.h) for the config being edited, broken down on hover.
//
// When model.checkpoint names a folder with a config.json, that shape (with its real
// vocabulary) is used, as the trainer would; otherwise the config's preset or explicit shape
// with the byte tokenizer's vocabulary. The checkpoint's config.json is read once per path.
#pragma once

#include <QLabel>
#include <QString>

#include <optional>

#include "core/config.h"
#include "core/model/model_shape.h"

namespace ganpo::ui {

class MemoryEstimateLabel : public QLabel {
  Q_OBJECT
public:
  explicit MemoryEstimateLabel(QWidget* parent = nullptr);
  void showEstimate(const RunConfig& config);
  void showUnavailable(const QString& why);

private:
  std::optional<ModelShape> checkpointShape(const std::string& folder);

  std::string cached_folder_;
  std::optional<ModelShape> cached_shape_;
};

// "1.4 GiB", "236 MiB", "812 KiB", "12 B".
QString format_bytes(int64_t bytes);
// "0.89M", "2.61B", "512K".
QString format_count(int64_t count);

}  // namespace ganpo::ui
