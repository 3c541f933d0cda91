#include "ui/memory_estimate_label.h"

#include <QFile>

#include <algorithm>
#include <cstdlib>
#include <exception>

#include <nlohmann/json.hpp>

#include "core/gpu_monitor.h"
#include "core/memory_estimate.h"
#include "core/model/architectures.h"

namespace ganpo::ui {

QString format_bytes(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return QString::number(b / (1024.0 * 1024 * 1024), 'f', 1) + QStringLiteral(" GiB");
  if (b >= 1024.0 * 1024) return QString::number(b / (1024.0 * 1024), 'f', 0) + QStringLiteral(" MiB");
  if (b >= 1024.0) return QString::number(b / 1024.0, 'f', 0) + QStringLiteral(" KiB");
  return QString::number(bytes) + QStringLiteral(" B");
}

QString format_count(int64_t count) {
  const double c = static_cast<double>(count);
  if (c >= 1e9) return QString::number(c / 1e9, 'f', 2) + QStringLiteral("B");
  if (c >= 1e5) return QString::number(c / 1e6, 'f', 2) + QStringLiteral("M");  // 0.89M reads better than 886K
  if (c >= 1e3) return QString::number(c / 1e3, 'f', 0) + QStringLiteral("K");
  return QString::number(count);
}

MemoryEstimateLabel::MemoryEstimateLabel(QWidget* parent) : QLabel(parent) {
  setObjectName(QStringLiteral("memoryEstimate"));
  setWordWrap(true);
  setTextInteractionFlags(Qt::TextSelectableByMouse);
}

std::optional<ModelShape> MemoryEstimateLabel::checkpointShape(const std::string& folder) {
  if (folder == cached_folder_) return cached_shape_;
  cached_folder_ = folder;
  cached_shape_.reset();
  QFile file(QString::fromStdString(folder) + QStringLiteral("/config.json"));
  if (!folder.empty() && file.open(QIODevice::ReadOnly)) {
    try {
      cached_shape_ = read_hf_config(nlohmann::json::parse(file.readAll().toStdString()));
    } catch (const std::exception&) {
      // An unreadable config.json is reported when the run starts; the estimate falls back.
    }
  }
  return cached_shape_;
}

MemoryEstimateLabel::DeviceMemory MemoryEstimateLabel::deviceMemory(const RunConfig& config) {
  const bool cuda = config.device.rfind("cuda", 0) == 0;
  if (cuda || config.device == "auto") {
    const int index = cuda && config.device.size() > 5 ? std::atoi(config.device.c_str() + 5) : 0;  // "cuda:N"
    if (!gpus_.count(index)) {
      const auto gpu = read_gpu(index);
      gpus_[index] = gpu ? std::optional(std::make_pair(gpu->name, gpu->memory_total_mb)) : std::nullopt;
    }
    if (const auto& gpu = gpus_[index])
      return {static_cast<int64_t>(gpu->second * 1024.0 * 1024.0), 1, "the memory of GPU " + std::to_string(index) +
                                                                          " (" + gpu->first + ")"};
    if (cuda) return {};  // a GPU named but not readable here: nothing to compare with
  }
  return {system_memory_bytes("MemAvailable"), static_cast<int>(std::max<int64_t>(config.train.num_processes, 1)),
          "the RAM free on this machine"};
}

void MemoryEstimateLabel::showEstimate(const RunConfig& config) {
  const std::optional<ModelShape> from_checkpoint = checkpointShape(config.model.checkpoint);
  const DeviceMemory device = deviceMemory(config);
  // "auto" is the GPU where one is found here, else the CPU, as the run will resolve it.
  RunConfig on_device = config;
  if (on_device.device == "auto") on_device.device = gpus_.count(0) && gpus_[0] ? "cuda" : "cpu";
  const std::optional<ModelShape> shape = from_checkpoint ? from_checkpoint : fresh_model_shape(config.model);
  if (!shape) {
    setStyleSheet(QString());
    setText(tr("No estimate: model.arch names no model family."));
    setToolTip(QString());
    return;
  }
  const MemoryEstimate e = estimate_training_memory(on_device, *shape);
  QString text = tr("Model: %1 parameters. Estimated training memory: %2 (weights, gradients and AdamW %3, "
                    "reference %4, critics %5, activations %6)")
                     .arg(format_count(e.parameters), format_bytes(e.total_bytes),
                          format_bytes(e.weights_bytes + e.gradients_bytes + e.optimizer_bytes),
                          format_bytes(e.reference_bytes), format_bytes(e.critic_bytes), format_bytes(e.activation_bytes));
  if (e.lora_parameters > 0)
    text += tr("; LoRA trains %1 adapter parameters (%2 of the model), the reference is the model with its "
               "adapters off")
                .arg(format_count(e.lora_parameters))
                .arg(QString::number(100.0 * static_cast<double>(e.lora_parameters) /
                                         static_cast<double>(std::max<int64_t>(e.parameters, 1)),
                                     'g', 2) +
                     QStringLiteral(" %"));
  if (peak_use(e) == MemoryUse::evaluation)
    text += tr("; at its peak in the held-out evaluations, whose passes (a batch of %1) take %2 instead of the "
               "activations")
                .arg(eval_batch_size(config.train))
                .arg(format_bytes(e.evaluation_bytes));
  if (!from_checkpoint && !config.model.checkpoint.empty())
    text += tr(". The checkpoint's config.json was not found: shape from these fields, byte vocabulary");
  const int64_t vocab = from_checkpoint ? from_checkpoint->vocab_size : kByteTokenizerVocab;
  const bool short_of_memory =
      !memory_shortfall_warning(e, device.processes, device.bytes, device.where, on_device, vocab).empty();
  if (short_of_memory)
    text += tr(". More than the %1 of %2%3: the run is likely to be killed or to run out of memory. To need less "
               "memory, %4")
                .arg(format_bytes(device.bytes), QString::fromStdString(device.where),
                     device.processes > 1 ? tr(" for %1 processes").arg(device.processes) : QString(),
                     QString::fromStdString(ways_to_use_less_memory(on_device, vocab, peak_use(e))));
  if (short_of_memory && config.train.auto_find_batch_size)
    text += tr(". With \"Find a batch size that fits\" the run lowers its batch where an allocation fails; on the "
               "CPU, where the system may stop a process first, the run starts with the batches this estimate says "
               "fit (its processes each in an equal share of the free RAM)");
  setStyleSheet(short_of_memory ? QStringLiteral("color: #b00020;") : QString());
  setText(text);
  setToolTip(tr("The peak of a training step: weights %1, gradients %2, AdamW moments %3 (fp32), frozen "
                "reference %4, GANPO critics with their optimiser and activations %5, policy activations %6 "
                "(what its backward pass needs, and the largest transient) for %7 x 2 rows of %8 tokens. Not "
                "counted: the CUDA context, allocator slack, the dataset. `ganpo bench` prints it beside the "
                "measured peak.")
                 .arg(format_bytes(e.weights_bytes), format_bytes(e.gradients_bytes), format_bytes(e.optimizer_bytes),
                      format_bytes(e.reference_bytes), format_bytes(e.critic_bytes), format_bytes(e.activation_bytes))
                 .arg(config.train.per_device_train_batch_size)
                 .arg(config.data.max_length));
}

void MemoryEstimateLabel::showUnavailable(const QString& why) {
  setText(tr("Memory estimate: %1").arg(why));
  setToolTip({});
}

}  // namespace ganpo::ui
