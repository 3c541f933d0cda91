#include "ui/run_filter.h"

#include <QStringList>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <functional>

#include "core/config.h"

namespace ganpo::ui {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

bool contains_ci(const std::string& haystack, const std::string& needle) {
  return lower(haystack).find(lower(needle)) != std::string::npos;
}

// Every config field as a JSON pointer, from the default config's JSON form.
const std::vector<std::string>& config_pointers() {
  static const std::vector<std::string> pointers = [] {
    std::vector<std::string> out;
    // Sections nest ("model.lora"): every leaf, at any depth.
    std::function<void(const nlohmann::json&, const std::string&)> walk = [&](const nlohmann::json& j,
                                                                              const std::string& prefix) {
      for (const auto& [key, value] : j.items()) {
        if (value.is_object())
          walk(value, prefix + "/" + key);
        else
          out.push_back(prefix + "/" + key);
      }
    };
    walk(config_to_json(RunConfig{}), "");
    return out;
  }();
  return pointers;
}

// "objective.beta" or "beta" -> "/objective/beta"; empty when unknown or ambiguous.
std::string resolve_key(const std::string& key, std::string* why) {
  std::string dotted = "/" + key;
  std::replace(dotted.begin(), dotted.end(), '.', '/');
  const auto& all = config_pointers();
  if (std::find(all.begin(), all.end(), dotted) != all.end()) return dotted;
  std::vector<std::string> hits;  // "beta" or "lora.r": the fields whose path ends so
  for (const auto& p : all)
    if (p.size() > dotted.size() && p.compare(p.size() - dotted.size(), std::string::npos, dotted) == 0)
      hits.push_back(p);
  if (hits.size() == 1) return hits[0];
  *why = hits.empty() ? "no config field named '" + key + "'"
                      : "'" + key + "' is ambiguous; write its section, e.g. " + hits[0].substr(1);
  std::replace(why->begin(), why->end(), '/', '.');
  return "";
}

bool parse_number(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  *out = std::strtod(s.c_str(), &end);
  return end && *end == '\0';
}

bool compare(const nlohmann::json& actual, const std::string& op, const std::string& wanted) {
  if (actual.is_null()) return false;
  if (op == "~") return contains_ci(actual.is_string() ? actual.get<std::string>() : actual.dump(), wanted);
  double a = 0, b = 0;
  const bool numeric = actual.is_number() && parse_number(wanted, &b);
  if (numeric) a = actual.get<double>();
  std::string text = actual.is_string() ? actual.get<std::string>() : actual.dump();
  if (op == "=" || op == "==") return numeric ? a == b : lower(text) == lower(wanted);
  if (op == "!=") return numeric ? a != b : lower(text) != lower(wanted);
  if (!numeric) return false;
  if (op == ">") return a > b;
  if (op == ">=") return a >= b;
  if (op == "<") return a < b;
  if (op == "<=") return a <= b;
  return false;
}

// The value a run trained with, where the stored one means something else: beta 0 is the loss's
// default (0.1; SimPO 2.5, effective_beta), and an SFT stage has no preference objective and no
// GANPO whatever its config's [objective] and [ganpo] say (the list's Objective column reads "sft").
nlohmann::json value_as_trained(const RunRow& run, const nlohmann::json& config, const std::string& field,
                                const nlohmann::json& stored) {
  const bool sft = lower(run.stage) == "sft";
  if (field == "/ganpo/enabled" && sft) return false;
  if (field == "/objective/beta") {
    if (sft) return nullptr;  // (compares as no value: matches no comparison)
    if (stored.is_number() && stored.get<double>() <= 0) {
      ObjectiveConfig objective;
      const auto section = config.find("objective");
      if (section != config.end() && section->is_object()) {
        const auto loss = section->find("loss_type");
        if (loss != section->end() && loss->is_string()) objective.loss_type = loss->get<std::string>();
      }
      return effective_beta(objective);
    }
  }
  return stored;
}

}  // namespace

RunFilter RunFilter::parse(const QString& text) {
  RunFilter f;
  for (const QString& raw : text.split(' ', Qt::SkipEmptyParts)) {
    const std::string t = raw.toStdString();
    FilterTerm term;
    const size_t colon = t.find(':');
    if (colon != std::string::npos) {
      const std::string field = lower(t.substr(0, colon));
      if (field == "status" || field == "tag" || field == "name" || field == "stage") {
        term.kind = FilterTerm::Kind::Field;
        term.field = field;
        term.value = t.substr(colon + 1);
        if (term.value.empty()) f.error_ = QString("'%1' needs a value, e.g. %1running").arg(QString::fromStdString(field + ":"));
        f.terms_.push_back(term);
        continue;
      }
    }
    const size_t op_at = t.find_first_of("=!<>~");
    if (op_at != std::string::npos && op_at > 0) {
      size_t op_end = op_at + 1;
      while (op_end < t.size() && std::string("=<>").find(t[op_end]) != std::string::npos) ++op_end;
      term.kind = FilterTerm::Kind::Config;
      term.op = t.substr(op_at, op_end - op_at);
      term.value = t.substr(op_end);
      static const std::vector<std::string> ops{"=", "==", "!=", ">", ">=", "<", "<=", "~"};
      std::string why;
      if (std::find(ops.begin(), ops.end(), term.op) == ops.end()) {
        f.error_ = QString("unknown operator '%1'; use = != > >= < <= or ~").arg(QString::fromStdString(term.op));
      } else if (term.value.empty()) {
        f.error_ = QString("'%1' needs a value after %2").arg(raw, QString::fromStdString(term.op));
      } else {
        term.field = resolve_key(t.substr(0, op_at), &why);
        if (term.field.empty()) f.error_ = QString::fromStdString(why);
      }
      f.terms_.push_back(term);
      continue;
    }
    term.value = t;
    f.terms_.push_back(term);
  }
  return f;
}

bool RunFilter::matches(const RunRow& run, const nlohmann::json& config) const {
  if (!valid()) return true;
  for (const auto& term : terms_) {
    bool ok = false;
    switch (term.kind) {
      case FilterTerm::Kind::Text:
        ok = contains_ci(run.name, term.value) || contains_ci(run.tags, term.value);
        break;
      case FilterTerm::Kind::Field:
        if (term.field == "status") ok = to_string(run.status) == lower(term.value);
        if (term.field == "stage") ok = lower(run.stage) == lower(term.value);
        if (term.field == "name") ok = contains_ci(run.name, term.value);
        if (term.field == "tag") {
          const QStringList tags = QString::fromStdString(run.tags).split(',', Qt::SkipEmptyParts);
          ok = tags.contains(QString::fromStdString(term.value), Qt::CaseInsensitive);
        }
        break;
      case FilterTerm::Kind::Config: {
        const nlohmann::json::json_pointer ptr(term.field);
        ok = config.is_object() && config.contains(ptr) &&
             compare(value_as_trained(run, config, term.field, config.at(ptr)), term.op, term.value);
        break;
      }
    }
    if (!ok) return false;
  }
  return true;
}

}  // namespace ganpo::ui
