// The run list's filter language. Terms separated by spaces must all match:
//   text            name or a tag contains it (case-insensitive)
//   status:running  tag:baseline  name:dpo  stage:sft      a field of the run
//   beta>0.05  objective.loss_type=ipo  ganpo.enabled=true  train.learning_rate<=1e-4
//                   a config field (full "section.key", or a bare key that names one field)
//                   compared with = == != > >= < <= or ~ (contains); numbers compare as numbers.
// A term that cannot be parsed (an unknown config key, a missing value) makes the filter invalid
// with a message; an invalid filter matches every run so the list never goes blank by mistake.
#pragma once

#include <QString>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "db/run_store.h"

namespace ganpo::ui {

struct FilterTerm {
  enum class Kind { Text, Field, Config } kind = Kind::Text;
  std::string field;  // Field: status | tag | name | stage; Config: JSON pointer such as /objective/beta
  std::string op;     // Config only
  std::string value;
};

class RunFilter {
public:
  static RunFilter parse(const QString& text);
  bool valid() const { return error_.isEmpty(); }
  const QString& error() const { return error_; }
  const std::vector<FilterTerm>& terms() const { return terms_; }
  bool matches(const RunRow& run, const nlohmann::json& config) const;

private:
  std::vector<FilterTerm> terms_;
  QString error_;
};

}  // namespace ganpo::ui
