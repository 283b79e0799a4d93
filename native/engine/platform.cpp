// What the engine asks of the operating system: a read-only mapping of a model file, dropping
// pages of it, the page size, physical memory and cores. POSIX (Linux) and Windows.
#include "xglm-impl.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <thread>

#ifdef _WIN32
#include <vector>

#include "win32.h"
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#endif

#ifdef _WIN32
std::wstring xglm_utf8_to_wide(const std::string & s) {
    if (s.empty()) return std::wstring();
    const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), nullptr, 0);
    std::wstring w(static_cast<size_t>(n > 0 ? n : 0), L'\0');
    if (n > 0) MultiByteToWideChar(CP_UTF8, 0, s.data(), static_cast<int>(s.size()), w.data(), n);
    return w;
}

std::string xglm_wide_to_utf8(const std::wstring & w) {
    if (w.empty()) return std::string();
    const int n = WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), nullptr, 0, nullptr, nullptr);
    std::string s(static_cast<size_t>(n > 0 ? n : 0), '\0');
    if (n > 0) WideCharToMultiByte(CP_UTF8, 0, w.data(), static_cast<int>(w.size()), s.data(), n, nullptr, nullptr);
    return s;
}

namespace {
std::string win32_message(DWORD code) {
    wchar_t * buf = nullptr;
    const DWORD n = FormatMessageW(FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS,
                                   nullptr, code, 0, reinterpret_cast<LPWSTR>(&buf), 0, nullptr);
    std::string msg = n > 0 && buf != nullptr ? xglm_wide_to_utf8(std::wstring(buf, n)) : "error " + std::to_string(code);
    if (buf != nullptr) LocalFree(buf);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r' || msg.back() == ' ' || msg.back() == '.')) msg.pop_back();
    return msg;
}

// Long paths: the wide API takes more than MAX_PATH characters behind the \\?\ prefix, which
// needs an absolute path with backslashes.
std::wstring win32_long_path(const std::string & path) {
    std::wstring w = xglm_utf8_to_wide(path);
    if (w.size() < MAX_PATH - 12 || w.rfind(L"\\\\", 0) == 0) return w;
    std::replace(w.begin(), w.end(), L'/', L'\\');
    const DWORD n = GetFullPathNameW(w.c_str(), 0, nullptr, nullptr);
    if (n == 0) return w;
    std::wstring full(n, L'\0');
    const DWORD m = GetFullPathNameW(w.c_str(), n, full.data(), nullptr);
    full.resize(m);
    return L"\\\\?\\" + full;
}
}  // namespace
#endif

bool xglm_file_exists(const std::string & path, std::string * why) {
#ifdef _WIN32
    if (GetFileAttributesW(win32_long_path(path).c_str()) != INVALID_FILE_ATTRIBUTES) return true;
    const DWORD code = GetLastError();
    if (why != nullptr) {
        // the same words as strerror(ENOENT) on POSIX, so messages (and scripts matching them) agree
        *why = code == ERROR_FILE_NOT_FOUND || code == ERROR_PATH_NOT_FOUND ? "No such file or directory" : win32_message(code);
    }
    return false;
#else
    struct stat st{};
    if (stat(path.c_str(), &st) == 0) return true;
    if (why != nullptr) *why = std::strerror(errno);
    return false;
#endif
}

void * xglm_map_file(const std::string & path, size_t * size, std::string * error) {
#ifdef _WIN32
    // FILE_SHARE_DELETE is not granted: while the model is loaded (its file mapped), Windows
    // refuses to delete or replace the file; dispose the model first.
    HANDLE file = CreateFileW(win32_long_path(path).c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                              FILE_ATTRIBUTE_NORMAL, nullptr);
    if (file == INVALID_HANDLE_VALUE) {
        const DWORD code = GetLastError();
        std::string msg = "cannot open " + path + ": " + win32_message(code);
        if (code == ERROR_SHARING_VIOLATION || code == ERROR_LOCK_VIOLATION) {
            msg += " (another process has it open for writing; wait until it has finished)";
        }
        xglm_fail(error, msg);
        return nullptr;
    }
    LARGE_INTEGER sz{};
    if (!GetFileSizeEx(file, &sz)) {
        xglm_fail(error, "cannot read the size of " + path + ": " + win32_message(GetLastError()));
        CloseHandle(file);
        return nullptr;
    }
    if (sz.QuadPart == 0) {
        CloseHandle(file);
        xglm_fail(error, "cannot map " + path + " into memory: the file is empty");
        return nullptr;
    }
    HANDLE mapping = CreateFileMappingW(file, nullptr, PAGE_READONLY, 0, 0, nullptr);
    const DWORD map_error = GetLastError();
    CloseHandle(file);  // the mapping keeps the file open
    if (mapping == nullptr) {
        xglm_fail(error, "cannot map " + path + " into memory: " + win32_message(map_error));
        return nullptr;
    }
    void * addr = MapViewOfFile(mapping, FILE_MAP_READ, 0, 0, 0);
    const DWORD view_error = GetLastError();
    CloseHandle(mapping);  // the view keeps the mapping
    if (addr == nullptr) {
        xglm_fail(error, "cannot map " + path + " into memory: " + win32_message(view_error));
        return nullptr;
    }
    *size = static_cast<size_t>(sz.QuadPart);
    return addr;
#else
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st{};
    if (fd < 0 || fstat(fd, &st) != 0) {
        const int e = errno;
        if (fd >= 0) close(fd);
        xglm_fail(error, "cannot open " + path + ": " + std::strerror(e));
        return nullptr;
    }
    void * addr = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_SHARED, fd, 0);
    const int e = errno;
    close(fd);
    if (addr == MAP_FAILED) {
        xglm_fail(error, "cannot map " + path + " into memory: " + std::strerror(e));
        return nullptr;
    }
    *size = static_cast<size_t>(st.st_size);
    return addr;
#endif
}

void xglm_unmap_file(void * addr, size_t size) {
    if (addr == nullptr) return;
#ifdef _WIN32
    (void)size;
    UnmapViewOfFile(addr);
#else
    munmap(addr, size);
#endif
}

size_t xglm_page_size() {
#ifdef _WIN32
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    return si.dwPageSize;
#else
    const long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? static_cast<size_t>(page) : 4096;
#endif
}

void xglm_drop_pages(const void * addr, size_t size) {
    const size_t    page = xglm_page_size();
    const uintptr_t b    = (reinterpret_cast<uintptr_t>(addr) + page - 1) / page * page;
    const uintptr_t e    = (reinterpret_cast<uintptr_t>(addr) + size) / page * page;
    if (e <= b) return;
#ifdef _WIN32
    // Unlocking pages that are not locked removes them from the working set (documented).
    VirtualUnlock(reinterpret_cast<void *>(b), e - b);
#else
    madvise(reinterpret_cast<void *>(b), e - b, MADV_DONTNEED);
#endif
}

size_t xglm_physical_memory() {
#ifdef _WIN32
    MEMORYSTATUSEX ms{};
    ms.dwLength = sizeof ms;
    return GlobalMemoryStatusEx(&ms) ? static_cast<size_t>(ms.ullTotalPhys) : SIZE_MAX;
#else
    const long pages = sysconf(_SC_PHYS_PAGES);
    const long page  = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : SIZE_MAX;
#endif
}

int xglm_physical_cores() {
    const unsigned n_logical = std::max(1u, std::thread::hardware_concurrency());
#ifdef _WIN32
    // One RelationProcessorCore record per physical core (SMT siblings share one).
    DWORD len = 0;
    GetLogicalProcessorInformationEx(RelationProcessorCore, nullptr, &len);
    std::vector<char> buf(len);
    int cores = 0;
    if (len > 0 && GetLogicalProcessorInformationEx(RelationProcessorCore,
                                                    reinterpret_cast<PSYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX>(buf.data()), &len)) {
        for (DWORD off = 0; off < len;) {
            auto * info = reinterpret_cast<PSYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX>(buf.data() + off);
            if (info->Size == 0) break;
            if (info->Relationship == RelationProcessorCore) ++cores;
            off += info->Size;
        }
    }
    return cores > 0 ? cores : static_cast<int>(n_logical);
#else
    // Distinct (package, core) pairs; SMT siblings share one.
    std::set<std::string> cores;
    for (unsigned cpu = 0; cpu < n_logical; ++cpu) {
        std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
        std::string   siblings;
        if (f && std::getline(f, siblings)) cores.insert(siblings);
    }
    return cores.empty() ? static_cast<int>(n_logical) : static_cast<int>(cores.size());
#endif
}
