#include "core/text/post_processors.h"

#include <map>
#include <sstream>

namespace ganpo::text {

namespace {

// The single-sequence template reduced to what it adds: ids before and after $A.
class WrapProcessor final : public PostProcessor {
public:
  WrapProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void add_special_tokens(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }

private:
  std::vector<int32_t> before_, after_;
};

class NoOpProcessor final : public PostProcessor {
public:
  void add_special_tokens(std::vector<int32_t>&) const override {}
};

class SequenceProcessor final : public PostProcessor {
public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void add_special_tokens(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts_) p->add_special_tokens(ids);
  }

private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

int32_t checked_id(const nlohmann::json& v, const JsonPlace& at) {
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= INT32_MAX)
    at.fail("expected a token id, found " + json_excerpt(v));
  return static_cast<int32_t>(v.get<int64_t>());
}

std::unique_ptr<PostProcessor> make_template(const nlohmann::json& j, const JsonPlace& at) {
  // special_tokens: name -> {"id": name, "ids": [...], "tokens": [...]}
  std::map<std::string, std::vector<int32_t>> specials;
  const JsonPlace sp_at = at.child("special_tokens");
  auto sp = j.find("special_tokens");
  if (sp != j.end() && !sp->is_null()) {
    if (!sp->is_object()) sp_at.fail("expected an object");
    for (auto it = sp->begin(); it != sp->end(); ++it) {
      const JsonPlace one = sp_at.child(it.key());
      auto ids = it.value().find("ids");
      if (!it.value().is_object() || ids == it.value().end() || !ids->is_array())
        one.fail("expected {\"id\": ..., \"ids\": [...], \"tokens\": [...]}");
      std::vector<int32_t> v;
      for (size_t i = 0; i < ids->size(); ++i) v.push_back(checked_id((*ids)[i], one.child("ids").index(i)));
      specials[it.key()] = std::move(v);
    }
  }
  // single: a list of {"SpecialToken": {"id": ...}} / {"Sequence": {"id": "A"}}, or the
  // string form "[CLS] $A [SEP]".
  struct Item {
    bool sequence;
    std::string name;
  };
  std::vector<Item> items;
  const JsonPlace single_at = at.child("single");
  auto single = j.find("single");
  if (single == j.end()) single_at.fail("is missing");
  if (single->is_string()) {
    std::istringstream words(single->get<std::string>());
    std::string w;
    while (words >> w) {
      if (w[0] == '$') {
        items.push_back({true, w});
        continue;
      }
      // "[SEP]:1" names [SEP] with type id 1.
      const size_t colon = w.rfind(':');
      const bool typed = colon != std::string::npos && colon > 0 && colon + 1 < w.size() &&
                         w.find_first_not_of("0123456789", colon + 1) == std::string::npos;
      items.push_back({false, typed ? w.substr(0, colon) : w});
    }
  } else if (single->is_array()) {
    for (size_t i = 0; i < single->size(); ++i) {
      const auto& e = (*single)[i];
      const JsonPlace e_at = single_at.index(i);
      if (e.is_object() && e.contains("SpecialToken") && e["SpecialToken"].is_object() &&
          e["SpecialToken"].contains("id") && e["SpecialToken"]["id"].is_string())
        items.push_back({false, e["SpecialToken"]["id"].get<std::string>()});
      else if (e.is_object() && e.contains("Sequence"))
        items.push_back({true, "$A"});
      else
        e_at.fail("expected {\"SpecialToken\": {...}} or {\"Sequence\": {...}}, found " + json_excerpt(e));
    }
  } else {
    single_at.fail("expected a list or a string, found " + json_excerpt(*single));
  }
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  for (const Item& item : items) {
    if (item.sequence) {
      seen_sequence = true;
      continue;
    }
    auto it = specials.find(item.name);
    if (it == specials.end())
      single_at.fail("uses special token \"" + item.name +
                     "\", which special_tokens does not define; the file is damaged, re-download it");
    auto& dst = seen_sequence ? after : before;
    dst.insert(dst.end(), it->second.begin(), it->second.end());
  }
  return std::make_unique<WrapProcessor>(std::move(before), std::move(after));
}

}  // namespace

std::unique_ptr<PostProcessor> make_wrap_processor(std::vector<int32_t> before,
                                                   std::vector<int32_t> after) {
  return std::make_unique<WrapProcessor>(std::move(before), std::move(after));
}

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& j, const JsonPlace& at) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, at);
  if (type == "TemplateProcessing") return make_template(j, at);
  if (type == "ByteLevel") return std::make_unique<NoOpProcessor>();
  if (type == "Sequence") {
    auto it = j.find("processors");
    const JsonPlace list = at.child("processors");
    if (it == j.end() || !it->is_array()) list.fail("expected a list");
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < it->size(); ++i) {
      auto p = make_post_processor((*it)[i], list.index(i));
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    // {"sep": ["</s>", 2], "cls": ["<s>", 0]}
    auto pair_id = [&](const char* key) {
      auto it = j.find(key);
      if (it == j.end() || !it->is_array() || it->size() != 2)
        at.child(key).fail("expected [token, id]");
      return checked_id((*it)[1], at.child(key).index(1));
    };
    return std::make_unique<WrapProcessor>(std::vector<int32_t>{pair_id("cls")},
                                           std::vector<int32_t>{pair_id("sep")});
  }
  at.fail("post-processor type \"" + type +
          "\" is not supported (supported: TemplateProcessing, ByteLevel, RobertaProcessing, "
          "BertProcessing, Sequence)");
}

}  // namespace ganpo::text
