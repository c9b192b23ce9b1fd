# The kernel registry's build side (docs/kernel_cache.md): which kernel specializations are
# compiled into libflashserve, and the facts the run-time compiler needs. Included by the top-level
# CMakeLists.txt after the flashserve target exists.
#
#   -DFLASHSERVE_PREBUILT_PRESET=default   the small default set (src/runtime/kernel_presets.txt)
#   -DFLASHSERVE_PREBUILT_PRESET="llama3;qwen3"   those presets' specializations
#   -DFLASHSERVE_PREBUILT_PRESET=all       every specialization: no compiler needed at run time
#   -DFLASHSERVE_PREBUILT_PRESET=none      nothing: every kernel is compiled at first use
#
# Each prebuilt specialization is one generated translation unit, so they build in parallel. An op
# family takes part by defining flashserve_prebuild_<op>(spec) and flashserve_all_specs_<op>(out)
# below and adding its op to FLASHSERVE_KERNEL_OPS.

set(FLASHSERVE_PREBUILT_PRESET "default" CACHE STRING
    "Kernel presets compiled into the library: default, a preset name or ;-list, all, none")

set(_fs_presets_file ${PROJECT_SOURCE_DIR}/src/runtime/kernel_presets.txt)
set(_fs_gen ${PROJECT_BINARY_DIR}/generated/prebuilt)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_fs_presets_file})
set(FLASHSERVE_KERNEL_OPS decode prefill)

# ---- decode attention: q dtype x kv dtype x head_dim (src/api/decode_kernels.cc) ---------------
set(_fs_cuda_type_fp16 half)
set(_fs_cuda_type_bf16 nv_bfloat16)
set(_fs_cuda_type_fp8_e4m3 __nv_fp8_e4m3)
set(_fs_cuda_type_fp8_e5m2 __nv_fp8_e5m2)
set(_fs_dtype_fp16 kFloat16)
set(_fs_dtype_bf16 kBFloat16)
set(_fs_dtype_fp8_e4m3 kFloat8E4M3)
set(_fs_dtype_fp8_e5m2 kFloat8E5M2)
set(_fs_decode_decls "")
set(_fs_decode_entries "")

macro(flashserve_prebuild_decode spec)
  if(NOT "${spec}" MATCHES "^decode q=(fp16|bf16) kv=(fp16|bf16|fp8_e4m3|fp8_e5m2) hd=(64|128|256)$")
    message(FATAL_ERROR "kernel presets: '${spec}' is not a decode specialization "
                        "(decode q=fp16|bf16 kv=fp16|bf16|fp8_e4m3|fp8_e5m2 hd=64|128|256)")
  endif()
  set(_q ${CMAKE_MATCH_1})
  set(_kv ${CMAKE_MATCH_2})
  set(_hd ${CMAKE_MATCH_3})
  if(NOT _kv MATCHES "^fp8" AND NOT _kv STREQUAL _q)
    message(FATAL_ERROR "kernel presets: '${spec}': kv must be q's dtype or an fp8 type")
  endif()
  set(FS_SPEC "${spec}")
  set(FS_SYMBOL "kDecodeKernel_${_q}_${_kv}_hd${_hd}")
  set(FS_HD ${_hd})
  set(FS_TQ ${_fs_cuda_type_${_q}})
  set(FS_TKV ${_fs_cuda_type_${_kv}})
  configure_file(${PROJECT_SOURCE_DIR}/src/api/decode_prebuilt.cu.in
    ${_fs_gen}/decode_${_q}_${_kv}_hd${_hd}.cu @ONLY)
  list(APPEND FLASHSERVE_PREBUILT_SOURCES ${_fs_gen}/decode_${_q}_${_kv}_hd${_hd}.cu)
  string(APPEND _fs_decode_decls "extern const DecodeKernelFns ${FS_SYMBOL};\n")
  string(APPEND _fs_decode_entries
    "    {DType::${_fs_dtype_${_q}}, DType::${_fs_dtype_${_kv}}, ${_hd}, &${FS_SYMBOL}},\n")
endmacro()

function(flashserve_all_specs_decode out)
  set(specs "")
  foreach(q fp16 bf16)
    foreach(kv ${q} fp8_e4m3 fp8_e5m2)
      foreach(hd 64 128 256)
        list(APPEND specs "decode q=${q} kv=${kv} hd=${hd}")
      endforeach()
    endforeach()
  endforeach()
  set(${out} "${specs}" PARENT_SCOPE)
endfunction()

# ---- prefill attention: q dtype x head_dim x kind x kv (src/api/prefill_kernels.cc) ------------------
set(_fs_cutlass_type_fp16 cutlass::half_t)
set(_fs_cutlass_type_bf16 cutlass::bfloat16_t)
set(_fs_prefill_kind_plain kPlain)
set(_fs_prefill_kind_causal kCausal)
set(_fs_prefill_kind_general kGeneral)
set(_fs_prefill_decls "")
set(_fs_prefill_entries "")

macro(flashserve_prebuild_prefill spec)
  set(_fs_bad_hdv FALSE)
  if("${spec}" MATCHES " hdv=128" AND NOT "${spec}" MATCHES " hd=192 ")
    set(_fs_bad_hdv TRUE)
  endif()
  if("${spec}" MATCHES " bm=128$" AND NOT "${spec}" MATCHES " hd=64 ")
    set(_fs_bad_hdv TRUE)
  endif()
  if(_fs_bad_hdv OR NOT "${spec}" MATCHES
     "^prefill q=(fp16|bf16) hd=(64|96|128|192|256) kind=(plain|causal|general) kv=(ragged|paged)( hdv=128)?( bm=128)?$")
    message(FATAL_ERROR "kernel presets: '${spec}' is not a prefill specialization "
      "(prefill q=fp16|bf16 hd=64|96|128|192|256 kind=plain|causal|general kv=ragged|paged, "
      "then hdv=128 with hd=192, or bm=128 with hd=64)")
  endif()
  set(_q ${CMAKE_MATCH_1})
  set(_hd ${CMAKE_MATCH_2})
  set(_kind ${CMAKE_MATCH_3})
  set(_kv ${CMAKE_MATCH_4})
  if("${CMAKE_MATCH_5}" STREQUAL " hdv=128")
    set(_hdv 128)
    set(_hdv_tag "_v128")
  else()
    set(_hdv 0)
    set(_hdv_tag "")
  endif()
  if("${CMAKE_MATCH_6}" STREQUAL " bm=128")
    set(FS_BM 128)
    string(APPEND _hdv_tag "_m128")
  else()
    set(FS_BM 0)
  endif()
  set(FS_SPEC "${spec}")
  set(FS_SYMBOL "kPrefillKernel_${_q}_hd${_hd}${_hdv_tag}_${_kind}_${_kv}")
  set(FS_ELEMENT ${_fs_cutlass_type_${_q}})
  set(FS_HD ${_hd})
  if(_hdv EQUAL 0)
    set(FS_HDV ${_hd})
  else()
    set(FS_HDV ${_hdv})
  endif()
  set(FS_KIND ${_fs_prefill_kind_${_kind}})
  if(_kv STREQUAL "paged")
    set(FS_PAGED true)
  else()
    set(FS_PAGED false)
  endif()
  set(_fs_file prefill_${_q}_hd${_hd}${_hdv_tag}_${_kind}_${_kv}.cu)
  configure_file(${PROJECT_SOURCE_DIR}/src/api/prefill_prebuilt.cu.in ${_fs_gen}/${_fs_file} @ONLY)
  list(APPEND FLASHSERVE_PREBUILT_SOURCES ${_fs_gen}/${_fs_file})
  string(APPEND _fs_prefill_decls "extern const PrefillKernelFns ${FS_SYMBOL};\n")
  string(APPEND _fs_prefill_entries "    {DType::${_fs_dtype_${_q}}, ${_hd}, ${_hdv}, ${FS_BM}, "
    "attention::PrefillKind::${_fs_prefill_kind_${_kind}}, ${FS_PAGED}, &${FS_SYMBOL}},\n")
endmacro()

function(flashserve_all_specs_prefill out)
  set(specs "")
  foreach(q fp16 bf16)
    foreach(hd 64 96 128 192 256)
      foreach(kind plain causal general)
        foreach(kv ragged paged)
          list(APPEND specs "prefill q=${q} hd=${hd} kind=${kind} kv=${kv}")
        endforeach()
      endforeach()
    endforeach()
    foreach(kind plain causal general)
      foreach(kv ragged paged)
        list(APPEND specs "prefill q=${q} hd=192 kind=${kind} kv=${kv} hdv=128")
      endforeach()
    endforeach()
    foreach(kind causal general)
      foreach(kv ragged paged)
        list(APPEND specs "prefill q=${q} hd=64 kind=${kind} kv=${kv} bm=128")
      endforeach()
    endforeach()
  endforeach()
  set(${out} "${specs}" PARENT_SCOPE)
endfunction()

# ---- the selected presets -> specs ----------------------------------------------------------------
file(STRINGS ${_fs_presets_file} _fs_lines)
set(_fs_known "")
set(_fs_specs "")
set(_fs_current "")
foreach(line IN LISTS _fs_lines)
  string(STRIP "${line}" line)
  if(line STREQUAL "" OR line MATCHES "^#")
    continue()
  endif()
  if(line MATCHES "^preset ([^:]+):")
    string(STRIP "${CMAKE_MATCH_1}" _fs_current)
    list(APPEND _fs_known ${_fs_current})
  elseif(_fs_current IN_LIST FLASHSERVE_PREBUILT_PRESET)
    list(APPEND _fs_specs "${line}")
  endif()
endforeach()
foreach(name IN LISTS FLASHSERVE_PREBUILT_PRESET)
  if(name STREQUAL "all")
    foreach(op IN LISTS FLASHSERVE_KERNEL_OPS)
      cmake_language(CALL flashserve_all_specs_${op} _fs_all)
      list(APPEND _fs_specs ${_fs_all})
    endforeach()
  elseif(NOT name STREQUAL "none" AND NOT name IN_LIST _fs_known)
    string(REPLACE ";" ", " _fs_known_text "${_fs_known}")
    message(FATAL_ERROR "FLASHSERVE_PREBUILT_PRESET: unknown preset '${name}' "
                        "(known: ${_fs_known_text}, all, none)")
  endif()
endforeach()
list(REMOVE_DUPLICATES _fs_specs)

set(FLASHSERVE_PREBUILT_SOURCES "")
foreach(spec IN LISTS _fs_specs)
  string(REGEX MATCH "^[a-z0-9_]+" _fs_op "${spec}")
  if(COMMAND flashserve_prebuild_${_fs_op})
    cmake_language(CALL flashserve_prebuild_${_fs_op} "${spec}")
  else()
    message(STATUS "flashserve: no prebuilt build for '${spec}': compiled at first use")
  endif()
endforeach()
list(LENGTH FLASHSERVE_PREBUILT_SOURCES _fs_count)
message(STATUS "flashserve: ${_fs_count} prebuilt kernel specializations "
               "(FLASHSERVE_PREBUILT_PRESET=${FLASHSERVE_PREBUILT_PRESET})")

string(REPLACE ";" "," FS_PRESET "${FLASHSERVE_PREBUILT_PRESET}")
set(FS_DECLS "${_fs_decode_decls}")
set(FS_ENTRIES "${_fs_decode_entries}")
configure_file(${PROJECT_SOURCE_DIR}/src/api/decode_prebuilt_table.cc.in
  ${_fs_gen}/decode_prebuilt_table.cc @ONLY)
set(FS_DECLS "${_fs_prefill_decls}")
set(FS_ENTRIES "${_fs_prefill_entries}")
configure_file(${PROJECT_SOURCE_DIR}/src/api/prefill_prebuilt_table.cc.in
  ${_fs_gen}/prefill_prebuilt_table.cc @ONLY)

# ---- run-time compiler facts and the embedded presets ------------------------------------------
# The flags of the library's own device code (without the targets), so that a kernel compiled at
# run time is the same code as its prebuilt twin; always the Release flags.
set(_fs_jit_flags "-std=c++${CMAKE_CUDA_STANDARD}")
foreach(flag IN LISTS FLASHSERVE_CUDA_FLAGS)
  if(NOT flag MATCHES "^-gencode")
    list(APPEND _fs_jit_flags ${flag})
  endif()
endforeach()
separate_arguments(_fs_release UNIX_COMMAND "${CMAKE_CUDA_FLAGS} ${CMAKE_CUDA_FLAGS_RELEASE}")
list(APPEND _fs_jit_flags ${_fs_release})
string(REPLACE ";" " " FLASHSERVE_JIT_FLAGS_STRING "${_fs_jit_flags}")
set(FLASHSERVE_PREBUILT_PRESET_STRING "${FS_PRESET}")
configure_file(${PROJECT_SOURCE_DIR}/src/runtime/jit_build_config.h.in
  ${PROJECT_BINARY_DIR}/generated/runtime/jit_build_config.h @ONLY)
file(READ ${_fs_presets_file} FLASHSERVE_PRESETS_TEXT)
configure_file(${PROJECT_SOURCE_DIR}/src/runtime/kernel_presets_text.h.in
  ${PROJECT_BINARY_DIR}/generated/runtime/kernel_presets_text.h @ONLY)

# ptxas names every kernel that spills registers in the build log; scripts/gpu-check lists them and
# fails where a decode or ragged prefill kernel spills (a split-KV merge once made every head_dim
# 256 tile spill in its mainloop for eight sessions unnoticed: -30% at 512 tokens).
set_source_files_properties(${FLASHSERVE_PREBUILT_SOURCES} PROPERTIES COMPILE_OPTIONS
  "-Xptxas=-warn-spills")
target_sources(flashserve PRIVATE ${FLASHSERVE_PREBUILT_SOURCES} ${_fs_gen}/decode_prebuilt_table.cc
  ${_fs_gen}/prefill_prebuilt_table.cc)
# dladdr (the installed headers are found next to the loaded library).
target_link_libraries(flashserve PRIVATE ${CMAKE_DL_LIBS})
