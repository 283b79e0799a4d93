# Cross-compiling for win32-x64 on an x64 Debian host: scripts/prebuild-win32.js.
#
# Compiler: Debian's mingw-w64 GCC (g++-mingw-w64-x86-64), its -posix flavour: the default
# (-win32) flavour has no std::thread / std::mutex, which the engine and ggml use.
set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR AMD64)

set(XGLM_CROSS_TRIPLE x86_64-w64-mingw32)
find_program(XGLM_CROSS_GCC NAMES ${XGLM_CROSS_TRIPLE}-gcc-posix REQUIRED)
find_program(XGLM_CROSS_GXX NAMES ${XGLM_CROSS_TRIPLE}-g++-posix REQUIRED)
set(CMAKE_C_COMPILER "${XGLM_CROSS_GCC}")
set(CMAKE_CXX_COMPILER "${XGLM_CROSS_GXX}")
set(CMAKE_RC_COMPILER "/usr/bin/${XGLM_CROSS_TRIPLE}-windres" CACHE FILEPATH "")
set(CMAKE_AR "/usr/bin/${XGLM_CROSS_TRIPLE}-ar" CACHE FILEPATH "")
set(CMAKE_RANLIB "/usr/bin/${XGLM_CROSS_TRIPLE}-ranlib" CACHE FILEPATH "")
set(CMAKE_STRIP "/usr/bin/${XGLM_CROSS_TRIPLE}-strip" CACHE FILEPATH "")
set(XGLM_DLLTOOL "/usr/bin/${XGLM_CROSS_TRIPLE}-dlltool" CACHE FILEPATH "")

set(CMAKE_FIND_ROOT_PATH "/usr/${XGLM_CROSS_TRIPLE}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
