// Force-included into ggml's CPU backend C files when cross-compiling with mingw-w64
// (CMakeLists.txt): declarations newer Windows SDKs have and mingw-w64 10's headers lack.
// ggml-cpu.c asks Windows not to throttle its worker threads (SetThreadInformation with
// ThreadPowerThrottling, Windows 8+); the enum value exists in mingw-w64 10, the struct not.
#pragma once
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#ifndef THREAD_POWER_THROTTLING_CURRENT_VERSION
#define THREAD_POWER_THROTTLING_CURRENT_VERSION 1
#define THREAD_POWER_THROTTLING_EXECUTION_SPEED 0x1
typedef struct _THREAD_POWER_THROTTLING_STATE {
    ULONG Version;
    ULONG ControlMask;
    ULONG StateMask;
} THREAD_POWER_THROTTLING_STATE;
#endif
