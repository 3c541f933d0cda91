// Precompiled header of the sanitizer builds: nlohmann/json is in most of their translation
// units and costs seconds in each under ASan.
#pragma once
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
