{
  # node-gyp (node-gyp-build's fallback, prebuildify, electron-rebuild) delegates to the
  # one CMake build in CMakeLists.txt, so every tool yields the same addon.
  "targets": [
    {
      "target_name": "xglm",
      "type": "none",
      "actions": [
        {
          "action_name": "cmake_build",
          "inputs": [],
          "outputs": ["<(module_root_dir)/build/Release/xglm.node"],
          "action": ["node", "<(module_root_dir)/scripts/build-native.js", "<!@(node -p \"process.env.XGLM_ALL_VARIANTS === '1' ? '--all-variants' : ''\")"]
        }
      ]
    }
  ]
}
