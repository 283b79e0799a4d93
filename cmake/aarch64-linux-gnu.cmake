# Cross-compiling for linux-arm64 (aarch64) on an x64 Debian host: scripts/prebuild-arm64.js.
#
# Compiler: clang-19 targeting aarch64-linux-gnu, on top of Debian's GCC cross toolchain
# (g++-aarch64-linux-gnu: glibc, libstdc++, binutils under /usr/aarch64-linux-gnu). Clang,
# not aarch64-linux-gnu-g++ (GCC 12), because ggml's armv9.2 CPU variants need +sme, which
# GCC learned only in version 14.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(XGLM_CROSS_TRIPLE aarch64-linux-gnu)
find_program(XGLM_CROSS_CLANG NAMES clang-19 REQUIRED)
find_program(XGLM_CROSS_CLANGXX NAMES clang++-19 REQUIRED)
set(CMAKE_C_COMPILER "${XGLM_CROSS_CLANG}")
set(CMAKE_CXX_COMPILER "${XGLM_CROSS_CLANGXX}")
set(CMAKE_C_COMPILER_TARGET ${XGLM_CROSS_TRIPLE})
set(CMAKE_CXX_COMPILER_TARGET ${XGLM_CROSS_TRIPLE})
# GNU binutils for aarch64 (clang finds the linker through the GCC cross installation).
set(CMAKE_AR "/usr/bin/${XGLM_CROSS_TRIPLE}-ar" CACHE FILEPATH "")
set(CMAKE_RANLIB "/usr/bin/${XGLM_CROSS_TRIPLE}-ranlib" CACHE FILEPATH "")
set(CMAKE_STRIP "/usr/bin/${XGLM_CROSS_TRIPLE}-strip" CACHE FILEPATH "")

# Libraries and headers come from the target's tree, programs from the host.
set(CMAKE_FIND_ROOT_PATH "/usr/${XGLM_CROSS_TRIPLE}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
