// Windows only (platform.cpp, backend.cpp): <windows.h> without its rarely used parts and its
// min/max macros, and the UTF-8 <-> UTF-16 conversions for the wide (W) API, which is how paths
// with characters outside the ANSI code page are opened.
#pragma once
#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <string>

std::wstring xglm_utf8_to_wide(const std::string & s);
std::string  xglm_wide_to_utf8(const std::wstring & w);
#endif
