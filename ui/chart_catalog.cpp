#include "ui/chart_catalog.h"

namespace ganpo::ui {

const QStringList& chart_groups() {
  static const QStringList groups = {"Preference", "Adversarial", "Optimisation", "System", "Other"};
  return groups;
}

ChartSpec chart_spec_for_key(const QString& key, bool sigmoid_loss, bool total_is_base) {
  struct Entry {
    const char* prefix;  // exact key, or a prefix ending in '/' or '_'
    const char* group;
    const char* id;
    const char* title;
    bool bce;
    bool zero_line = false;
  };
  static const Entry entries[] = {
      {"loss", "Preference", "loss", "Loss", false},
      {"opo_loss", "Preference", "opo_loss", "Base (OPO) loss", true},
      {"nll_loss", "Preference", "nll_loss", "RPO NLL loss", false},
      {"rewards/chosen", "Preference", "rewards", "Rewards (chosen / rejected)", false},
      {"rewards/rejected", "Preference", "rewards", "Rewards (chosen / rejected)", false},
      {"rewards/margins", "Preference", "margins", "Reward margin", false},
      {"rewards/accuracies", "Preference", "accuracies", "Reward accuracy", false},
      {"logps/chosen", "Preference", "logps", "Log-probs (chosen / rejected)", false},
      {"logps/rejected", "Preference", "logps", "Log-probs (chosen / rejected)", false},
      {"adv/loss", "Adversarial", "adv_loss", "Adversarial loss", true},
      {kAdvShareKey, "Adversarial", "adv_share", "\u03bb \u00b7 adv share of the loss", false},
      {"adv/g_chosen", "Adversarial", "adv_terms", "Generator terms (chosen / rejected)", true},
      {"adv/g_rejected", "Adversarial", "adv_terms", "Generator terms (chosen / rejected)", true},
      {"critic/loss_chosen", "Adversarial", "critic_loss", "Critic losses", true},
      {"critic/loss_rejected", "Adversarial", "critic_loss", "Critic losses", true},
      {"critic/acc_chosen", "Adversarial", "critic_acc", "Critic accuracy", false},
      {"critic/acc_rejected", "Adversarial", "critic_acc", "Critic accuracy", false},
      {kEmaGapChosenKey, "Adversarial", "ema_gap", "EMA score gaps (reference \u2212 policy)", false, true},
      {kEmaGapRejectedKey, "Adversarial", "ema_gap", "EMA score gaps (reference \u2212 policy)", false, true},
      {"ema/", "Adversarial", "ema", "EMA critic scores", false},
      {"learning_rate", "Optimisation", "lr", "Learning rate", false},
      {"critic/learning_rate", "Optimisation", "critic_lr", "Critic learning rate", false},
      {"grad_norm", "Optimisation", "grad_norm", "Gradient norm", false},
      {"tokens_per_s", "System", "tokens_per_s", "Tokens / s", false},
      {"step_time_s", "System", "step_time", "Step time (s)", false},
      {"model_tflops", "System", "model_tflops", "Model TFLOP/s", false},
      {"mfu", "System", "mfu", "Model FLOPs utilisation (1 = the device's peak)", false},
      {"gpu/", "System", "gpu", "GPU utilisation (%)", false},
      // The GPU's memory (NVML's used, the caching allocator's view) apart from the process's
      // host memory below: tens of GB beside a few, and a different question.
      {"memory/gpu_used_mb", "System", "gpu_memory", "GPU memory (MB)", false},
      {"memory/cuda_", "System", "gpu_memory", "GPU memory (MB)", false},
      {"ranks/tokens_per_s/", "System", "rank_tokens_per_s", "Tokens / s per process", false},
      {"ranks/world_size", "System", "world_size", "Processes (world size)", false},
      {"ranks/allreduce_s", "System", "allreduce", "Gradient all-reduce per step (s)", false},
      {"memory/", "System", "memory", "Process memory (MB)", false},
      {"tokens_seen", "System", "tokens_seen", "Tokens seen", false},
      {"cpu/cores", "System", "cpu_cores", "CPU cores (the run's thread plan)", false},
      {"epoch", "System", "epoch", "Epoch", false},
  };
  int order = 0;
  for (const auto& e : entries) {
    const QString p = QString::fromUtf8(e.prefix);
    const bool match = p.endsWith('/') || p.endsWith('_') ? key.startsWith(p) : key == p;
    if (match) {
      ChartSpec spec{e.group, e.id, QString::fromUtf8(e.title), e.bce, order, e.zero_line};
      // The base loss is a BCE only for sigmoid DPO (and so is the total when it is the base alone).
      if (spec.id == "opo_loss") spec.bce = sigmoid_loss;
      if (spec.id == "loss") spec.bce = sigmoid_loss && total_is_base;
      return spec;
    }
    ++order;
  }
  return ChartSpec{"Other", "other:" + key, key, false, order};
}

}  // namespace ganpo::ui
