/* A stand-in for a ggml CPU variant that XGLM_DEV_CPU_VARIANTS leaves out (CMakeLists.txt):
   no code, and no ggml_backend_score, so the engine never picks it. Never shipped. */
typedef int xglm_empty_variant;
