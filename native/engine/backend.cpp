#include "xglm-impl.h"

#ifdef _WIN32
#include "win32.h"
#else
#include <dirent.h>
#include <dlfcn.h>
#include <unistd.h>
#endif

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "ggml.h"

namespace {

std::mutex        g_mutex;
bool              g_done = false;
xglm_backend_info g_info;
std::string       g_error;
xglm_kernel_isa   g_isa = xglm_kernel_isa::none;  // choose_kernels; g_info.kernels is its name
bool              g_vnni = false;                  // choose_kernels: the variant runs AVX-512 VNNI

// ggml logs to stderr by default; a library should be quiet unless asked (XGLM_LOG=1).
// Its errors reach users as our own error messages (e.g. a bad GGUF file), not as log lines.
void log_callback(enum ggml_log_level /*level*/, const char * text, void * /*user_data*/) {
    static const bool verbose = std::getenv("XGLM_LOG") != nullptr;
    if (verbose) {
        std::fputs(text, stderr);
    }
}

#ifdef XGLM_BACKEND_DL
#ifdef _WIN32
// ggml's variant libraries: ggml-cpu-<variant>.dll on Windows, libggml-cpu-<variant>.so elsewhere.
const char k_variant_prefix[] = "ggml-cpu-";
const char k_variant_suffix[] = ".dll";

// The folder that holds the binary the engine is linked into (the .node, or an executable such
// as xglm-engine-tests), as UTF-8 with backslashes (LoadLibrary wants them).
std::string binary_dir() {
    HMODULE self = nullptr;
    GetModuleHandleExW(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                       reinterpret_cast<LPCWSTR>(&binary_dir), &self);
    std::wstring buf(32768, L'\0');
    const DWORD  n = GetModuleFileNameW(self, buf.data(), static_cast<DWORD>(buf.size()));
    buf.resize(n);
    const std::string path  = xglm_wide_to_utf8(buf);
    const size_t      slash = path.find_last_of("\\/");
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::vector<std::string> list_variants(const std::string & dir) {
    std::vector<std::string> names;
    WIN32_FIND_DATAW         fd;
    HANDLE h = FindFirstFileW(xglm_utf8_to_wide(dir + "\\" + k_variant_prefix + "*" + k_variant_suffix).c_str(), &fd);
    if (h == INVALID_HANDLE_VALUE) return names;
    do {
        const std::string f = xglm_wide_to_utf8(fd.cFileName);
        if (f.size() > sizeof(k_variant_prefix) + sizeof(k_variant_suffix) - 2) {
            names.push_back(f.substr(sizeof(k_variant_prefix) - 1, f.size() - sizeof(k_variant_prefix) - sizeof(k_variant_suffix) + 2));
        }
    } while (FindNextFileW(h, &fd));
    FindClose(h);
    return names;
}

// ggml's own score for a variant library on this CPU: 0 = cannot run here.
int variant_score(const std::string & path) {
    // no error dialog for a library that cannot load on this CPU or system
    const UINT old_mode = SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOOPENFILEERRORBOX);
    HMODULE    handle   = LoadLibraryExW(xglm_utf8_to_wide(path).c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH);
    SetErrorMode(old_mode);
    if (handle == nullptr) {
        return 0;
    }
    using score_fn = int (*)();
    auto score     = reinterpret_cast<score_fn>(reinterpret_cast<void *>(GetProcAddress(handle, "ggml_backend_score")));
    const int s    = score != nullptr ? score() : 0;
    FreeLibrary(handle);
    return s;
}
#else
const char k_variant_prefix[] = "libggml-cpu-";
const char k_variant_suffix[] = ".so";

// The folder that holds the binary the engine is linked into (where the variant libraries are):
// the .node, or an executable such as xglm-engine-tests. For the main program glibc's dladdr
// reports argv[0], which is a bare name when it was found on PATH; /proc/self/exe is then the file.
std::string binary_dir() {
    Dl_info     info{};
    std::string path;
    if (dladdr(reinterpret_cast<void *>(&binary_dir), &info) != 0 && info.dli_fname != nullptr) path = info.dli_fname;
#if defined(__linux__)
    if (path.find('/') == std::string::npos) {
        char          buf[4096];
        const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (n > 0) path.assign(buf, static_cast<size_t>(n));
    }
#endif
    const size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::vector<std::string> list_variants(const std::string & dir) {
    std::vector<std::string> names;
    if (DIR * d = opendir(dir.c_str())) {
        while (const dirent * e = readdir(d)) {
            std::string f = e->d_name;
            if (f.size() > sizeof(k_variant_prefix) + sizeof(k_variant_suffix) - 2 &&
                f.compare(0, sizeof(k_variant_prefix) - 1, k_variant_prefix) == 0 &&
                f.compare(f.size() - (sizeof(k_variant_suffix) - 1), sizeof(k_variant_suffix) - 1, k_variant_suffix) == 0) {
                names.push_back(f.substr(sizeof(k_variant_prefix) - 1, f.size() - sizeof(k_variant_prefix) - sizeof(k_variant_suffix) + 2));
            }
        }
        closedir(d);
    }
    return names;
}

// ggml's own score for a variant library on this CPU: 0 = cannot run here.
int variant_score(const std::string & path) {
    void * handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
        return 0;
    }
    using score_fn = int (*)();
    auto score     = reinterpret_cast<score_fn>(dlsym(handle, "ggml_backend_score"));
    const int s    = score != nullptr ? score() : 0;
    dlclose(handle);
    return s;
}
#endif

#ifdef _WIN32
// ggml_backend_load takes a narrow path, which Windows reads in the ANSI code page: an install
// folder with characters outside it would not load. The same steps with the UTF-16 path; the
// library stays loaded for the life of the process (it is never unloaded on Linux either).
ggml_backend_reg_t load_variant(const std::string & path) {
    HMODULE handle = LoadLibraryExW(xglm_utf8_to_wide(path).c_str(), nullptr, LOAD_WITH_ALTERED_SEARCH_PATH);
    if (handle == nullptr) return nullptr;
    using init_fn = ggml_backend_reg_t (*)();
    auto               init = reinterpret_cast<init_fn>(reinterpret_cast<void *>(GetProcAddress(handle, "ggml_backend_init")));
    ggml_backend_reg_t reg  = init != nullptr ? init() : nullptr;
    if (reg == nullptr) {
        FreeLibrary(handle);
        return nullptr;
    }
    ggml_backend_register(reg);
    return reg;
}
#else
ggml_backend_reg_t load_variant(const std::string & path) { return ggml_backend_load(path.c_str()); }
#endif

std::string variant_path(const std::string & dir, const std::string & name) {
#ifdef _WIN32
    return dir + "\\" + k_variant_prefix + name + k_variant_suffix;
#else
    return dir + "/" + k_variant_prefix + name + k_variant_suffix;
#endif
}

bool load_cpu_variant() {
    const std::string dir = binary_dir();
    g_info.available      = list_variants(dir);
    if (g_info.available.empty()) {
        g_error = std::string("no ggml CPU library (") + k_variant_prefix + "*" + k_variant_suffix + ") beside the addon in " + dir +
                  "; reinstall the package or rebuild it with 'npm run build:native'";
        return false;
    }
    std::string chosen;
    if (const char * forced = std::getenv("XGLM_CPU_VARIANT"); forced != nullptr && forced[0] != '\0') {
        chosen = forced;
        bool known = false;
        for (const auto & n : g_info.available) {
            known = known || n == chosen;
        }
        if (!known || variant_score(variant_path(dir, chosen)) == 0) {
            std::string list;
            for (const auto & n : g_info.available) {
                list += (list.empty() ? "" : ", ") + n;
            }
            g_error = "XGLM_CPU_VARIANT=" + chosen + " is not a variant this CPU can run (found: " + list +
                      "); unset it or pick another";
            return false;
        }
    } else {
        int best = 0;
        for (const auto & n : g_info.available) {
            const int s = variant_score(variant_path(dir, n));
            if (s > best) {
                best   = s;
                chosen = n;
            }
        }
        if (chosen.empty()) {
            g_error = "none of the ggml CPU variants beside the addon runs on this CPU";
            return false;
        }
    }
    const std::string path = variant_path(dir, chosen);
    if (load_variant(path) == nullptr) {
        g_error = "could not load " + path + "; reinstall the package";
        return false;
    }
    g_info.variant = chosen;
    return true;
}
#endif

void collect_features() {
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(xglm_cpu_device());
    using features_fn      = ggml_backend_feature * (*) (ggml_backend_reg_t);
    auto get = reinterpret_cast<features_fn>(ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
    if (get == nullptr) {
        return;
    }
    for (const ggml_backend_feature * f = get(reg); f->name != nullptr; ++f) {
        g_info.features.emplace_back(f->name);
    }
}

bool has_feature(const char * name) {
    for (const auto & f : g_info.features) {
        if (f == name) return true;
    }
    return false;
}

// The custom ops (attention, decode-gemv, gelu, layer-norm) follow the ggml code in use, not
// only the CPU: a forced x64 variant runs no AVX2 ops, and the ops mirror ggml's own arithmetic
// (e.g. the 16-lane variance sum of its AVX-512 norm) where they repeat it bit for bit.
// XGLM_KERNELS=ggml runs none of them in any context (kernel-plan.h), and says so here too.
void choose_kernels() {
    g_isa  = xglm_kernel_isa::none;
    g_vnni = false;
#if defined(__x86_64__)
    if (const char * k = std::getenv("XGLM_KERNELS"); k == nullptr || std::strcmp(k, "ggml") != 0) {
        const bool avx2 = has_feature("AVX2") && has_feature("FMA") && has_feature("F16C") && __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
        // ggml's AVX-512 paths need AVX512F and DQ; every AVX-512 variant it builds has both
        const bool avx512 = avx2 && has_feature("AVX512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
        g_isa = avx512 ? xglm_kernel_isa::avx512 : avx2 ? xglm_kernel_isa::avx2 : xglm_kernel_isa::none;
        // the VNNI products need the variant to run AVX-512 VNNI (cascadelake, icelake, zen4,
        // sapphirerapids …; not skylakex), with BW and VL, which all of those have
        g_vnni = avx512 && has_feature("AVX512_VNNI") && __builtin_cpu_supports("avx512vnni") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
#endif
    g_info.kernels = xglm_kernel_isa_name(g_isa);
}

}  // namespace

xglm_kernel_isa xglm_backend_kernel_isa() {
    // decided once: the backend is initialised before any model or graph exists
    static const xglm_kernel_isa isa = xglm_backend_init(nullptr) != nullptr ? g_isa : xglm_kernel_isa::none;
    return isa;
}

bool xglm_kernel_plan_now(xglm_kernel_plan_info * out, std::string * error) {
    xglm_kernel_plan plan;
    if (!xglm_kernel_plan_from_env(xglm_backend_kernel_isa(), xglm_backend_kernel_vnni(), &plan, error)) return false;
    out->isa  = xglm_kernel_isa_name(plan.isa);
    out->vnni = plan.vnni;
    out->ops.clear();
    for (const auto & o : xglm_kernel_plan_ops(plan)) out->ops.push_back({o.node, o.detail, o.ours});
    return true;
}

bool xglm_backend_kernel_vnni() {
    return xglm_backend_kernel_isa() == xglm_kernel_isa::avx512 && g_vnni;
}

const xglm_backend_info * xglm_backend_init(std::string * error) {
    std::lock_guard<std::mutex> lock(g_mutex);
    // Node can unload and reload this addon (last worker exits); set the callback each time.
    ggml_log_set(log_callback, nullptr);
    if (!g_done) {
        g_done = true;
#ifdef XGLM_BACKEND_DL
        g_info.dynamic = true;
        const bool ok  = load_cpu_variant();
#else
        g_info.dynamic = false;
        g_info.variant = "native";
        const bool ok  = true;
#endif
        if (ok && xglm_cpu_device() == nullptr) {
            g_error = "ggml has no CPU device";
        } else if (ok) {
            collect_features();
            choose_kernels();
        }
    }
    if (!g_error.empty()) {
        if (error != nullptr) {
            *error = g_error;
        }
        return nullptr;
    }
    return &g_info;
}

ggml_backend_dev_t xglm_cpu_device() {
    return ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
}

void * xglm_cpu_proc(const char * name) {
    ggml_backend_dev_t dev = xglm_cpu_device();
    return dev == nullptr ? nullptr : ggml_backend_reg_get_proc_address(ggml_backend_dev_backend_reg(dev), name);
}

void xglm_advise_huge_pages(ggml_backend_buffer_t buf) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (!buf || xglm_env_flag("XGLM_NO_HUGE_PAGES")) return;
    constexpr uintptr_t huge = uintptr_t(2) << 20;
    const auto          base = reinterpret_cast<uintptr_t>(ggml_backend_buffer_get_base(buf));
    const uintptr_t     end  = base + ggml_backend_buffer_get_size(buf);
    const uintptr_t     b    = (base + huge - 1) & ~(huge - 1);  // whole 2 MB pages inside the buffer
    const uintptr_t     e    = end & ~(huge - 1);
    if (e > b) madvise(reinterpret_cast<void *>(b), e - b, MADV_HUGEPAGE);  // advice only: errors are harmless
#else
    (void)buf;
#endif
}
