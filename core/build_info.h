// What this build is, for `--version` of both programs and the workbench's About box: the
// project's version, the git commit it was configured from, and the LibTorch it runs on with
// the CUDA devices that LibTorch sees.
#pragma once

#include <string>

namespace ganpo {

std::string project_version();  // "0.1.0"
std::string git_commit();       // "6d7a68a", "6d7a68a-dirty", or "unknown" outside a git checkout
// "0.1.0 (git 6d7a68a)\nLibTorch 1.13.0, CPU (no CUDA device)\nBLAS: OpenBLAS 0.3.21 pthreads SkylakeX"
std::string version_details();
// The same after the program's name: "ganpo 0.1.0 (git 6d7a68a)\n..."
std::string version_text(const std::string& program);

}  // namespace ganpo
