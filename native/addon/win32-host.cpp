// Windows only: how the addon finds Node-API in whatever executable loads it, and keeps its
// code mapped for the life of the process.
//
// Node-API's functions are exported by the host executable. The addon imports them from
// "node.exe" through a delay-load import library (CMakeLists.txt); the first call of any
// napi_* function runs the delay-load helper, whose pre-load notification this hook answers
// with the module of the running executable. So node.exe, a renamed copy of it and
// electron.exe all serve the calls, and no file named node.exe is ever searched for (a
// plain import would bind to the module name node.exe: another host would fail to load the
// addon, or load a second Node).
#ifdef _WIN32

#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
// windows.h first: delayimp.h uses its types
#include <delayimp.h>

#include <cstring>

namespace {

FARPROC WINAPI host_module_hook(unsigned event, PDelayLoadInfo info) {
    if (event != dliNotePreLoadLibrary || info == nullptr || info->szDll == nullptr) return nullptr;
    if (_stricmp(info->szDll, "node.exe") != 0) return nullptr;
    return reinterpret_cast<FARPROC>(GetModuleHandleW(nullptr));
}

// Node may unload the addon when the last worker thread that used it exits while ggml's
// threadpool threads still unwind (the Linux build links with -z nodelete for the same
// reason): pin this module so FreeLibrary never unmaps it.
const bool g_pinned = [] {
    HMODULE self = nullptr;
    return GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                              reinterpret_cast<LPCWSTR>(&host_module_hook), &self) != 0;
}();

}  // namespace

// delayimp.h declares it extern "C"; the helper reads it before every load it does
PfnDliHook __pfnDliNotifyHook2 = host_module_hook;

#endif
