// The torch-free safetensors checks (core/model/safetensors_header.h). Whole files are covered in
// safetensors_test.cpp; here the header and index parsers alone, with the hostile inputs the
// fuzz targets (tests/fuzz/fuzz_safetensors_*.cpp) look for.
#include "core/model/safetensors_header.h"

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace ganpo {
namespace {

// The message of the ModelFileError f throws ("" and a test failure when it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ModelFileError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no ModelFileError";
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A header text in a file with data_bytes bytes of data after it.
SafetensorsHeader parse(const std::string& header, uint64_t data_bytes) {
  return parse_safetensors_header(header, 8 + header.size() + data_bytes, "m.safetensors");
}

TEST(SafetensorsHeader, LengthIsCheckedAgainstTheFileBeforeAnythingIsRead) {
  unsigned char len[8] = {16, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(safetensors_header_length(len, 24, "m.safetensors"), 16u);
  EXPECT_TRUE(has(error_of([&] { safetensors_header_length(len, 5, "m.safetensors"); }), "5 bytes long"));
  EXPECT_TRUE(has(error_of([&] { safetensors_header_length(len, 23, "m.safetensors"); }), "exceeds file size 23"));
  unsigned char huge[8] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  EXPECT_TRUE(has(error_of([&] { safetensors_header_length(huge, 100, "m.safetensors"); }), "exceeds file size"));
  unsigned char big[8] = {0, 0xe2, 0xf5, 0x05, 1, 0, 0, 0};  // 4395000320, under a 5 GB file
  EXPECT_TRUE(has(error_of([&] { safetensors_header_length(big, 5'000'000'000ULL, "m.safetensors"); }),
                  "-byte limit"));
  unsigned char one[8] = {1, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_TRUE(has(error_of([&] { safetensors_header_length(one, 9, "m.safetensors"); }), "too small"));
}

TEST(SafetensorsHeader, ValidHeaderGivesEntriesByNameAndMetadata) {
  const SafetensorsHeader h = parse(
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
      R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"e":{"dtype":"I8","shape":[0],"data_offsets":[28,28]}})",
      28);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].name, "a");
  EXPECT_EQ(h.tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors[0].dtype->size, 4);
  EXPECT_EQ(h.tensors[1].name, "b");
  EXPECT_EQ(h.tensors[1].begin, 24u);
  EXPECT_EQ(h.tensors[2].end, 28u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
}

TEST(SafetensorsHeader, DeeplyNestedShapeIsRefusedWithoutRecursion) {
  // The loader used to print the shape with dump(), which recurses once per nesting level: a
  // shape nested 100000 deep crashed it with a stack overflow.
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  const std::string e = error_of([&] { parse(R"({"a":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,0]}})", 0); });
  EXPECT_TRUE(has(e, "not a list of non-negative integers")) << e;
  EXPECT_TRUE(has(e, "holding lists or objects")) << e;
}

TEST(SafetensorsHeader, NumberTooLargeForADoubleIsInvalidJson) {
  // json::parse throws out_of_range, not parse_error, for 1e999; it escaped the loader and the
  // index reader uncaught (found by tests/fuzz/fuzz_safetensors_header.cpp and _index.cpp).
  std::string e = error_of([] { parse(R"({"a":{"dtype":"F16","shape":[1E554],"data_offsets":[0,2]}})", 2); });
  EXPECT_TRUE(has(e, "m.safetensors is not a valid safetensors file") && has(e, "not valid JSON")) << e;
  e = error_of([] { parse_safetensors_index(R"({"metadata":{"total_size":1E554},"weight_map":{"a":"s.safetensors"}})", "i.json"); });
  EXPECT_TRUE(has(e, "i.json is not valid JSON") && has(e, "restore the file")) << e;
}

TEST(SafetensorsHeader, SizesThatOverflowOrLeaveTheDataAreRefused) {
  EXPECT_TRUE(has(error_of([] { parse(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})", 8); }),
                  "too large"));
  EXPECT_TRUE(has(error_of([] { parse(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 7); }),
                  "past the end of the 7-byte data section"));
  EXPECT_TRUE(has(error_of([] {
                    parse(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[3,7]}})", 8);
                  }),
                  "overlapping"));
}

TEST(SafetensorsIndex, ShardsOutsideTheFolderAreRefused) {
  const std::vector<std::string> hostile = {"../model-00001-of-00002.safetensors", "/etc/passwd", "sub/x.safetensors",
                                            "..", ".", "", "a\\b.safetensors", std::string("x\0y", 3)};
  for (const std::string& file : hostile) {
    SCOPED_TRACE(file);
    const nlohmann::json index = {{"weight_map", {{"lm_head.weight", file}, {"a", "model.safetensors"}}}};
    const std::string e = error_of([&] { parse_safetensors_index(index.dump(), "dir/model.safetensors.index.json"); });
    EXPECT_TRUE(has(e, "dir/model.safetensors.index.json") && has(e, "\"lm_head.weight\"") &&
                has(e, "not a file name in the folder"))
        << e;
  }
  const std::string e = error_of([] { parse_safetensors_index(R"({"weight_map":{"a":["x"]}})", "i.json"); });
  EXPECT_TRUE(has(e, "not a file name in the folder") && has(e, "array")) << e;
}

TEST(SafetensorsIndex, ListsShardsInFirstUseOrder) {
  const SafetensorsIndex index = parse_safetensors_index(
      R"({"metadata":{"total_size":12},"weight_map":{"c":"s2.safetensors","a":"s1.safetensors","b":"s2.safetensors"}})",
      "i.json");
  EXPECT_EQ(index.shards, (std::vector<std::string>{"s1.safetensors", "s2.safetensors"}));
  EXPECT_EQ(index.tensor_shard.at("a"), 0u);
  EXPECT_EQ(index.tensor_shard.at("b"), 1u);
  EXPECT_EQ(index.tensor_shard.at("c"), 1u);
  EXPECT_TRUE(has(error_of([] { parse_safetensors_index("{\"weight_map\": ", "i.json"); }), "not valid JSON"));
  EXPECT_TRUE(has(error_of([] { parse_safetensors_index(R"({"weight_map":{}})", "i.json"); }), "no \"weight_map\""));
  EXPECT_TRUE(has(error_of([] { parse_safetensors_index("[1]", "i.json"); }), "no \"weight_map\""));
}

}  // namespace
}  // namespace ganpo
