// Process-wide ggml backend set-up: which CPU code ggml runs.
//
// A static build links one CPU backend compiled for the build machine. A distributable
// build (XGLM_BACKEND_DL) ships every ggml CPU variant as libggml-cpu-<name>.so beside the
// .node and loads the best one this CPU supports; XGLM_CPU_VARIANT=<name> forces one.
#pragma once

#include <string>
#include <vector>

#include "ggml-backend.h"

struct xglm_backend_info {
    std::string              variant;   // "haswell", "x64", ... or "native" for a static build
    bool                     dynamic;   // variants loaded at run time
    std::vector<std::string> features;  // CPU features the chosen code uses ("AVX2", ...)
    std::vector<std::string> available; // variant libraries found beside the addon
    std::string              kernels;   // the custom ops' code path: "avx512", "avx2" or "none"
};

// Loads the CPU backend once per process (thread-safe). Returns nullptr and sets *error
// when no usable CPU backend exists (e.g. a forced variant this CPU cannot run).
const xglm_backend_info * xglm_backend_init(std::string * error);

// The CPU device after a successful xglm_backend_init.
ggml_backend_dev_t xglm_cpu_device();

// A function the CPU backend exports by name (ggml_threadpool_new, ...), or nullptr.
void * xglm_cpu_proc(const char * name);

// Asks the kernel to back a freshly allocated (untouched) host buffer with 2 MB pages
// (transparent huge pages, madvise mode): the repacked weights and the KV cache are streamed
// every token, and with 4 KB pages each page costs a TLB miss and restarts the hardware
// prefetcher. No effect where THP is off or the platform has no madvise; XGLM_NO_HUGE_PAGES=1
// disables it (A/B runs).
void xglm_advise_huge_pages(ggml_backend_buffer_t buf);
