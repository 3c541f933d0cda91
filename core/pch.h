// Precompiled header for translation units that use LibTorch (a LibTorch TU costs ~20 s).
#pragma once
#include <torch/torch.h>
#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>
