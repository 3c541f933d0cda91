// Precompiled header of the sanitized unit tests: the library's, plus GoogleTest.
#pragma once
#include "tests/sanitized/pch.h"
#include <gtest/gtest.h>
