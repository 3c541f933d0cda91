// Precompiled header for the sources without LibTorch (ganpo_base, ganpo_db and their tests).
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
