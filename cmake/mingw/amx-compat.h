// Force-included into ggml's CPU backend C++ files when cross-compiling with mingw-w64
// (CMakeLists.txt). GCC 12's AMX tile load/store macros cast the stride to long, which is 32
// bits on Windows (LLP64): the assembler then rejects the 32-bit index register
// ("(%rax,%esi,1) is not a valid base/index expression") in ggml's AMX kernels
// (sapphirerapids variant). GCC 13 casts to a pointer-sized integer; so do these.
#pragma once
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13 && defined(_WIN64)
#include <immintrin.h>
#undef _tile_loadd_internal
#define _tile_loadd_internal(dst, base, stride)                                              \
    __asm__ volatile("{tileloadd\t(%0,%1,1), %%tmm" #dst "|tileloadd\t%%tmm" #dst ", [%0+%1*1]}" \
                     ::"r"((const void *)(base)), "r"((long long)(stride)))
#undef _tile_stream_loadd_internal
#define _tile_stream_loadd_internal(dst, base, stride)                                           \
    __asm__ volatile("{tileloaddt1\t(%0,%1,1), %%tmm" #dst "|tileloaddt1\t%%tmm" #dst ", [%0+%1*1]}" \
                     ::"r"((const void *)(base)), "r"((long long)(stride)))
#undef _tile_stored_internal
#define _tile_stored_internal(src, base, stride)                                               \
    __asm__ volatile("{tilestored\t%%tmm" #src ", (%0,%1,1)|tilestored\t[%0+%1*1], %%tmm" #src "}" \
                     ::"r"((void *)(base)), "r"((long long)(stride))                           \
                     : "memory")
#endif
