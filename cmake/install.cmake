# What `cmake --install` puts in a prefix: the shared and the static library, the headers,
# arpc.pc and a CMake package (arpcConfig.cmake, arpcConfigVersion.cmake, arpc::arpc and
# arpc::arpc_static). docs/ABI.md states the version and soname policy.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The shared library: only ARPC_API symbols are exported. While the major is 0 every minor may
# break the ABI, so the soname carries the minor (libarpc.so.0.2).
add_library(arpc SHARED ${ARPC_SOURCES})
set_target_properties(arpc PROPERTIES C_VISIBILITY_PRESET hidden VERSION ${PROJECT_VERSION}
  SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
target_include_directories(arpc PUBLIC $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}> PRIVATE ${CMAKE_SOURCE_DIR})
target_compile_definitions(arpc PRIVATE ARPC_BUILDING_SHARED=1)
target_link_libraries(arpc PRIVATE arpc_build_flags PkgConfig::CK libev::libev Threads::Threads
  ${ARPC_TLS_LIBS})
# dlclose leaves it mapped: a name lookup's thread, never waited for, may still run arpc code
# after every client is closed (docs/ABI.md, "Unloading").
target_link_options(arpc PRIVATE -Wl,-z,nodelete)

# The static library, libarpc.a: the objects already compiled for arpc_internal, linked into
# one whose only global symbols are the shared library's exports (cmake/static_prelink.cmake:
# a program defining its own call_new or pending_get linked against the objects as they were
# and failed, "multiple definition"). Its users link ck, libev and pthreads themselves
# (arpcConfig.cmake and arpc.pc's Libs.private say so).
# A multi-config generator builds it per configuration, in a directory of its own: a path
# that names $<CONFIG> in a custom command's output needs CMake 3.20; before, such a tree gets
# the objects as they are (every symbol global), and says so.
get_property(ARPC_MULTI_CONFIG GLOBAL PROPERTY GENERATOR_IS_MULTI_CONFIG)
# Nor under link-time optimisation: its objects hold the compiler's IR, which objcopy cannot
# localise.
if((ARPC_MULTI_CONFIG AND CMAKE_VERSION VERSION_LESS 3.20) OR CMAKE_INTERPROCEDURAL_OPTIMIZATION)
  message(STATUS "arpc: libarpc.a not prelinked (a multi-config generator needs CMake 3.20 for it; "
    "link-time optimisation is off limits): its internal symbols stay global")
  add_library(arpc_static STATIC $<TARGET_OBJECTS:arpc_internal>)
else()
  set(ARPC_PRELINKED ${CMAKE_BINARY_DIR}/arpc_static.dir/arpc.o)
  if(ARPC_MULTI_CONFIG)
    set(ARPC_PRELINKED ${CMAKE_BINARY_DIR}/arpc_static.dir/$<CONFIG>/arpc.o)
  endif()
  add_custom_command(OUTPUT ${ARPC_PRELINKED}
    COMMAND ${CMAKE_COMMAND} -DCC=${CMAKE_C_COMPILER} "-DCFLAGS=${CMAKE_C_FLAGS}" -DOBJCOPY=${CMAKE_OBJCOPY} -DNM=${CMAKE_NM}
      -DREADELF=${CMAKE_READELF}
      "-DOBJECTS=$<JOIN:$<TARGET_OBJECTS:arpc_internal>,|>" -DSHARED=$<TARGET_FILE:arpc>
      -DOUT=${ARPC_PRELINKED} -P ${CMAKE_SOURCE_DIR}/cmake/static_prelink.cmake
    DEPENDS arpc arpc_internal ${CMAKE_SOURCE_DIR}/cmake/static_prelink.cmake
    COMMENT "libarpc.a: one object, the public API its only global symbols" VERBATIM)
  add_library(arpc_static STATIC ${ARPC_PRELINKED})
endif()
set_target_properties(arpc_static PROPERTIES OUTPUT_NAME arpc LINKER_LANGUAGE C)
target_include_directories(arpc_static PUBLIC $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}> PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(arpc_static PRIVATE $<BUILD_INTERFACE:arpc_build_flags>
  PUBLIC PkgConfig::CK libev::libev Threads::Threads ${ARPC_TLS_LIBS})
# Concurrency Kit by its library alone (arpc.pc.in says why), with the directory ck.pc gave
# when that is not the linker's own.
set(ARPC_PC_CK_LIBS "-lck")
foreach(dir ${CK_LIBRARY_DIRS})
  if(NOT dir IN_LIST CMAKE_C_IMPLICIT_LINK_DIRECTORIES)
    string(PREPEND ARPC_PC_CK_LIBS "-L${dir} ")
  endif()
endforeach()
set(ARPC_PC_JANSSON "")
if(ARPC_WITH_JSONRPC)
  target_compile_definitions(arpc PRIVATE ARPC_WITH_JSONRPC=1)
  target_link_libraries(arpc PRIVATE PkgConfig::JANSSON)
  target_link_libraries(arpc_static PUBLIC $<BUILD_INTERFACE:PkgConfig::JANSSON> $<INSTALL_INTERFACE:jansson>)
  set(ARPC_PC_JANSSON "jansson")
endif()
set(ARPC_PC_PROTOBUF "")
if(ARPC_WITH_PROTOBUF)
  # Public: arpc/protobuf.h and the stubs protoc-c makes call protobuf-c (a program that
  # compiled its stubs without arpc_protobuf_generate was left to find -lprotobuf-c).
  target_link_libraries(arpc PUBLIC $<BUILD_INTERFACE:PkgConfig::PROTOBUF_C> $<INSTALL_INTERFACE:protobuf-c>)
  target_link_libraries(arpc_static PUBLIC $<BUILD_INTERFACE:PkgConfig::PROTOBUF_C>
    $<INSTALL_INTERFACE:protobuf-c>)
  set(ARPC_PC_PROTOBUF "libprotobuf-c")
  # arpc_protobuf_generate() for downstream projects, loaded by arpcConfig.cmake.
  install(FILES cmake/ArpcProtobuf.cmake DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/arpc)
endif()

install(TARGETS arpc EXPORT arpcTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS arpc_static EXPORT arpcStaticTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
# The headers of optional parts this build lacks are left out: they declare functions the
# library does not have, so a program would compile and then fail to link. Their own
# component, so tests/install_headers.cmake can install them without building the library.
set(ARPC_HEADERS_LEFT_OUT "")
if(NOT ARPC_WITH_PROTOBUF)
  list(APPEND ARPC_HEADERS_LEFT_OUT PATTERN protobuf.h EXCLUDE)
endif()
if(NOT ARPC_WITH_JSONRPC)
  list(APPEND ARPC_HEADERS_LEFT_OUT PATTERN jsonrpc.h EXCLUDE)
endif()
install(DIRECTORY include/arpc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT arpc_headers
  ${ARPC_HEADERS_LEFT_OUT})

# What a user of the installed library reads: share/doc/arpc.
install(FILES README.md CHANGELOG.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(ARPC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/arpc)
install(EXPORT arpcTargets NAMESPACE arpc:: FILE arpcTargets.cmake DESTINATION ${ARPC_CMAKE_DIR})
install(EXPORT arpcStaticTargets NAMESPACE arpc:: FILE arpcStaticTargets.cmake
  DESTINATION ${ARPC_CMAKE_DIR})
# The files made for the install go to a directory of their own: in the build tree's top they
# looked usable from there (PKG_CONFIG_PATH=build, arpc_DIR=build) and were not (their paths
# are the installed ones). arpc-uninstalled.pc (below) is the build tree's.
set(ARPC_FOR_INSTALL ${CMAKE_BINARY_DIR}/for-install)
configure_package_config_file(cmake/arpcConfig.cmake.in ${ARPC_FOR_INSTALL}/arpcConfig.cmake
  INSTALL_DESTINATION ${ARPC_CMAKE_DIR})
# SameMinorVersion while the major is 0: 0.2.x serves find_package(arpc 0.2), but 0.3 may have
# broken the ABI (docs/ABI.md), so it must not. From 1.0 on this becomes SameMajorVersion.
write_basic_package_version_file(${ARPC_FOR_INSTALL}/arpcConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${ARPC_FOR_INSTALL}/arpcConfig.cmake ${ARPC_FOR_INSTALL}/arpcConfigVersion.cmake
  DESTINATION ${ARPC_CMAKE_DIR})

# arpc.pc: the prefix found from the .pc file's own place (${pcfiledir}, as many levels up as the
# libdir is deep: three for lib/x86_64-linux-gnu/pkgconfig), and the directories as
# ${prefix}/<relative dir>; so the file stays right after `cmake --install --prefix P` and in a
# tree staged with DESTDIR. A libdir outside the prefix makes both absolute.
file(RELATIVE_PATH ARPC_PC_UP "${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig" "${CMAKE_INSTALL_PREFIX}")
string(REGEX REPLACE "/$" "" ARPC_PC_UP "${ARPC_PC_UP}") # CMake answers "../../"
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR NOT ARPC_PC_UP MATCHES "^(\\.\\./)*\\.\\.$")
  set(ARPC_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  set(ARPC_PC_PREFIX "\${pcfiledir}/${ARPC_PC_UP}")
endif()
foreach(kind LIBDIR INCLUDEDIR)
  file(RELATIVE_PATH rel "${CMAKE_INSTALL_PREFIX}" "${CMAKE_INSTALL_FULL_${kind}}")
  if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
    set(ARPC_PC_${kind} "${CMAKE_INSTALL_FULL_${kind}}")
  else()
    set(ARPC_PC_${kind} "\${prefix}/${rel}")
  endif()
endforeach()
configure_file(arpc.pc.in ${ARPC_FOR_INSTALL}/arpc.pc @ONLY)
install(FILES ${ARPC_FOR_INSTALL}/arpc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

# arpc-uninstalled.pc: arpc from this build tree, before any install. pkg-config takes
# NAME-uninstalled.pc before NAME.pc from the same path, so PKG_CONFIG_PATH=<build dir> builds a
# program against these headers and this libarpc.so (with an rpath to it).
# A multi-config generator (Ninja Multi-Config, Xcode, Visual Studio) builds the library once
# per configuration, each in a directory of its own: one file each, in <build dir>/<config>.
configure_file(arpc-uninstalled.pc.in ${CMAKE_BINARY_DIR}/arpc-uninstalled.pc.in @ONLY)
if(ARPC_MULTI_CONFIG)
  set(ARPC_UNINSTALLED_PC ${CMAKE_BINARY_DIR}/$<CONFIG>/arpc-uninstalled.pc)
else()
  set(ARPC_UNINSTALLED_PC ${CMAKE_BINARY_DIR}/arpc-uninstalled.pc)
endif()
file(GENERATE OUTPUT ${ARPC_UNINSTALLED_PC} INPUT ${CMAKE_BINARY_DIR}/arpc-uninstalled.pc.in)
