# arpc_protobuf_generate(TARGET <target> PROTOS <file.proto>... [IMPORT_DIRS <dir>...])
#
# Runs protoc-c --c_out on each .proto (at build time, again when it changes) into
# <current binary dir>/arpc_protobuf/, adds the generated .pb-c.c files to <target>, puts their
# directory on its include path (#include "kv.pb-c.h") and links it with libprotobuf-c. Each
# .proto's own directory is searched for imports, then IMPORT_DIRS. Used by arpc's example and
# tests, and installed with the CMake package: find_package(arpc) defines it when arpc was built
# with ARPC_WITH_PROTOBUF (arpc_WITH_PROTOBUF is then ON).
function(arpc_protobuf_generate)
  cmake_parse_arguments(ARG "" "TARGET" "PROTOS;IMPORT_DIRS" ${ARGN})
  if(NOT ARG_TARGET OR NOT ARG_PROTOS)
    message(FATAL_ERROR "arpc_protobuf_generate: TARGET and PROTOS are required")
  endif()
  find_program(ARPC_PROTOC_C protoc-c)
  if(NOT ARPC_PROTOC_C)
    message(FATAL_ERROR "arpc_protobuf_generate: protoc-c not found (apt-get install protobuf-c-compiler)")
  endif()
  if(NOT TARGET PkgConfig::PROTOBUF_C)
    find_package(PkgConfig REQUIRED)
    pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET GLOBAL libprotobuf-c)
  endif()
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/arpc_protobuf)
  file(MAKE_DIRECTORY ${out_dir})
  set(import_flags "")
  foreach(dir ${ARG_IMPORT_DIRS})
    get_filename_component(dir ${dir} ABSOLUTE)
    list(APPEND import_flags -I${dir})
  endforeach()
  foreach(proto ${ARG_PROTOS})
    get_filename_component(proto_abs ${proto} ABSOLUTE)
    get_filename_component(proto_dir ${proto_abs} DIRECTORY)
    get_filename_component(proto_name ${proto_abs} NAME_WE)
    set(gen_c ${out_dir}/${proto_name}.pb-c.c)
    set(gen_h ${out_dir}/${proto_name}.pb-c.h)
    add_custom_command(OUTPUT ${gen_c} ${gen_h}
      COMMAND ${ARPC_PROTOC_C} --c_out=${out_dir} -I${proto_dir} ${import_flags} ${proto_abs}
      DEPENDS ${proto_abs}
      COMMENT "protoc-c ${proto_name}.proto"
      VERBATIM)
    target_sources(${ARG_TARGET} PRIVATE ${gen_c} ${gen_h})
  endforeach()
  target_include_directories(${ARG_TARGET} PRIVATE ${out_dir})
  target_link_libraries(${ARG_TARGET} PRIVATE PkgConfig::PROTOBUF_C)
endfunction()
