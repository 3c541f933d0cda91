# Finds LibTorch for the build (included by the top CMakeLists.txt) and says which one it took.
#
# Where it looks, in order:
#   1. GANPO_TORCH_DIR, when set: an unpacked LibTorch folder (libtorch/), a Python torch install
#      (its torch/ folder or the site-packages above it) or a folder holding TorchConfig.cmake.
#   2. With GANPO_CUDA (the "cuda" preset): the LibTorch of the python3 torch install, then the
#      rest.
#   3. Torch_DIR, CMAKE_PREFIX_PATH and the system (Debian's libtorch-dev).
#   4. The python3 torch install's LibTorch.
# A LibTorch picked in 1 or 2 is searched first for its own libraries and Caffe2 config too (its
# TorchConfig.cmake would otherwise take a system LibTorch's where both exist), and switching to
# another one drops what the cache held of the previous. GANPO_CUDA requires the LibTorch found
# to have CUDA. Sets what find_package(Torch) sets. (A pip CUDA torch's config needs the CUDA
# toolkit, nvcc included, to configure.)

# The folder holding TorchConfig.cmake under DIR, or "" when DIR holds no LibTorch.
function(ganpo_torch_config_dir dir out)
  set(found "")
  foreach(sub "" "Torch" "share/cmake/Torch" "torch/share/cmake/Torch" "lib/cmake/Torch")
    if(NOT found AND EXISTS "${dir}/${sub}/TorchConfig.cmake")
      get_filename_component(found "${dir}/${sub}" ABSOLUTE)
    endif()
  endforeach()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

# The LibTorch of `python3 -c "import torch"`, or "" when there is none.
function(ganpo_python_torch_dir out)
  set(found "")
  find_package(Python3 COMPONENTS Interpreter QUIET)
  if(Python3_Interpreter_FOUND)
    execute_process(COMMAND ${Python3_EXECUTABLE} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
    if(rc EQUAL 0 AND prefix)
      ganpo_torch_config_dir("${prefix}" found)
    endif()
  endif()
  set(${out} "${found}" PARENT_SCOPE)
endfunction()

# Build against the LibTorch whose TorchConfig.cmake is in CONFIG_DIR (<prefix>/share/cmake/Torch).
macro(ganpo_use_torch config_dir)
  if(DEFINED CACHE{GANPO_TORCH_PICKED} AND NOT GANPO_TORCH_PICKED STREQUAL "${config_dir}")
    # Another LibTorch than last time: forget the libraries and configs found for that one.
    get_cmake_property(ganpo_cached CACHE_VARIABLES)
    foreach(var ${ganpo_cached})
      if(var MATCHES "^(TORCH_LIBRARY|C10_CUDA_LIBRARY|c10_LIBRARY|kineto_LIBRARY|Caffe2_DIR|Torch_DIR)$")
        unset(${var} CACHE)
      endif()
    endforeach()
  endif()
  set(GANPO_TORCH_PICKED "${config_dir}" CACHE INTERNAL "")
  get_filename_component(ganpo_torch_prefix "${config_dir}/../../.." ABSOLUTE)
  list(PREPEND CMAKE_PREFIX_PATH "${ganpo_torch_prefix}")
  set(Torch_DIR "${config_dir}" CACHE PATH "" FORCE)
  if(EXISTS "${config_dir}/../Caffe2/Caffe2Config.cmake")
    get_filename_component(ganpo_caffe2 "${config_dir}/../Caffe2" ABSOLUTE)
    set(Caffe2_DIR "${ganpo_caffe2}" CACHE PATH "" FORCE)
  endif()
endmacro()

if(GANPO_TORCH_DIR)
  ganpo_torch_config_dir("${GANPO_TORCH_DIR}" config_dir)
  if(NOT config_dir)
    message(FATAL_ERROR "GANPO_TORCH_DIR=${GANPO_TORCH_DIR} holds no LibTorch (no TorchConfig.cmake in it, in "
                        "Torch/, share/cmake/Torch/ or torch/share/cmake/Torch/). Give an unpacked LibTorch "
                        "folder or a Python torch install: python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))'")
  endif()
  ganpo_use_torch("${config_dir}")
  find_package(Torch REQUIRED)
else()
  set(python_torch "")
  if(GANPO_CUDA)
    ganpo_python_torch_dir(python_torch)
    if(python_torch)
      ganpo_use_torch("${python_torch}")
    endif()
  endif()
  find_package(Torch QUIET)
  if(NOT Torch_FOUND AND NOT python_torch)
    ganpo_python_torch_dir(python_torch)
    if(python_torch)
      ganpo_use_torch("${python_torch}")
      find_package(Torch QUIET)
    endif()
  endif()
  if(NOT Torch_FOUND)
    message(FATAL_ERROR "LibTorch was not found. On Debian: apt install libtorch-dev (CPU). For a GPU: install a CUDA "
                        "torch for python3 (it is found by itself) or unpack a LibTorch and pass "
                        "-DGANPO_TORCH_DIR=/path/to/libtorch.")
  endif()
endif()

set(GANPO_TORCH_PICKED "${Torch_DIR}" CACHE INTERNAL "")

# A CUDA LibTorch lists its CUDA libraries (TorchConfig.cmake) and exports torch_cuda.
if(TORCH_CUDA_LIBRARIES OR TARGET torch_cuda)
  set(GANPO_TORCH_HAS_CUDA ON)
else()
  set(GANPO_TORCH_HAS_CUDA OFF)
endif()
message(STATUS "LibTorch ${Torch_VERSION} from ${Torch_DIR} (CUDA: ${GANPO_TORCH_HAS_CUDA}; ${TORCH_LIBRARY})")
# pip wheels before torch 2.7 are built with the old C++ string ABI (_GLIBCXX_USE_CXX11_ABI=0 in
# TORCH_CXX_FLAGS); the rest of this build (our run store, Debian's toml++ and GoogleTest, Qt) has
# the new one, and the link would fail on std::string symbols. Say so instead.
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  message(FATAL_ERROR "The LibTorch at ${Torch_DIR} uses the old C++ string ABI (_GLIBCXX_USE_CXX11_ABI=0: pip torch "
                      "before 2.7), which cannot link with this build's libraries. Use torch 2.7 or later, or a "
                      "cxx11-ABI LibTorch download (libtorch-cxx11-abi-...) with -DGANPO_TORCH_DIR=.")
endif()
if(GANPO_CUDA AND NOT GANPO_TORCH_HAS_CUDA)
  message(FATAL_ERROR "GANPO_CUDA (the cuda preset) needs a LibTorch built with CUDA; the one at ${Torch_DIR} is "
                      "CPU-only. Install a CUDA torch for python3, or pass -DGANPO_TORCH_DIR= a CUDA LibTorch "
                      "(the release preset builds against a CPU one).")
endif()
