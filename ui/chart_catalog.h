// Chart catalog: which dashboard group and which chart every logged metric key belongs to.
// Groups follow UX.md (Preference, Adversarial, Optimisation, System); every key lands in exactly
// one chart, and keys the catalog does not know get a chart of their own in "Other", so nothing
// the trainer logs is ever hidden. Pure functions, no widgets.
#pragma once

#include <QString>
#include <QStringList>

namespace ganpo::ui {

struct ChartSpec {
  QString group;     // "Preference", "Adversarial", "Optimisation", "System", "Other"
  QString id;        // chart id, unique on a dashboard
  QString title;     // what the chart says on top
  bool bce = false;  // values are binary cross-entropies: draw the ln 2 chance line
  int order = 0;     // position inside the group
  bool zero_line = false;  // differences whose 0 means "no difference": draw a line at 0
};

// Derived series computed by the dashboard (not stored; derived_series.h): lambda * adv/loss /
// loss, and the EMA score gaps mu_w[A] - mu_w[P] and mu_l[B] - mu_l[P].
inline const char* const kAdvShareKey = "adv/lambda_share";
inline const char* const kEmaGapChosenKey = "ema_gap/chosen";
inline const char* const kEmaGapRejectedKey = "ema_gap/rejected";

// The chart a metric key is drawn in. sigmoid_loss: the run's base loss is sigmoid DPO (its
// loss chart is BCE-valued then); total_is_base: the total loss is the base loss alone (a
// preference stage without GANPO or RPO), so it is BCE-valued too under sigmoid DPO.
ChartSpec chart_spec_for_key(const QString& key, bool sigmoid_loss = true, bool total_is_base = false);

// Group names in display order ("Other" last).
const QStringList& chart_groups();

}  // namespace ganpo::ui
