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
target_link_libraries(arpc PRIVATE arpc_build_flags PkgConfig::CK libev::libev Threads::Threads)

# The static library, libarpc.a: same sources, same name on disk. Its users link ck, libev and
# pthreads themselves (arpcConfig.cmake and arpc.pc's Libs.private say so).
add_library(arpc_static STATIC ${ARPC_SOURCES})
set_target_properties(arpc_static PROPERTIES OUTPUT_NAME arpc C_VISIBILITY_PRESET hidden)
target_include_directories(arpc_static PUBLIC $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}> PRIVATE ${CMAKE_SOURCE_DIR})
target_link_libraries(arpc_static PRIVATE $<BUILD_INTERFACE:arpc_build_flags>
  PUBLIC PkgConfig::CK libev::libev Threads::Threads)

install(TARGETS arpc EXPORT arpcTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS arpc_static EXPORT arpcStaticTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/arpc DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(ARPC_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/arpc)
install(EXPORT arpcTargets NAMESPACE arpc:: FILE arpcTargets.cmake DESTINATION ${ARPC_CMAKE_DIR})
install(EXPORT arpcStaticTargets NAMESPACE arpc:: FILE arpcStaticTargets.cmake
  DESTINATION ${ARPC_CMAKE_DIR})
configure_package_config_file(cmake/arpcConfig.cmake.in ${CMAKE_BINARY_DIR}/arpcConfig.cmake
  INSTALL_DESTINATION ${ARPC_CMAKE_DIR})
# SameMinorVersion while the major is 0: 0.2.x serves find_package(arpc 0.2), but 0.3 may have
# broken the ABI (docs/ABI.md), so it must not. From 1.0 on this becomes SameMajorVersion.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/arpcConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/arpcConfig.cmake ${CMAKE_BINARY_DIR}/arpcConfigVersion.cmake
  DESTINATION ${ARPC_CMAKE_DIR})

# arpc.pc: directories as ${prefix}/<relative dir> when they lie under the prefix, so a tree
# staged with DESTDIR works through PKG_CONFIG_SYSROOT_DIR (or --define-prefix), and
# multiarch libdirs (lib/x86_64-linux-gnu) are right; an absolute dir elsewhere stays absolute.
foreach(kind LIBDIR INCLUDEDIR)
  file(RELATIVE_PATH rel "${CMAKE_INSTALL_PREFIX}" "${CMAKE_INSTALL_FULL_${kind}}")
  if(rel MATCHES "^\\.\\./" OR IS_ABSOLUTE "${rel}")
    set(ARPC_PC_${kind} "${CMAKE_INSTALL_FULL_${kind}}")
  else()
    set(ARPC_PC_${kind} "\${prefix}/${rel}")
  endif()
endforeach()
configure_file(arpc.pc.in arpc.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/arpc.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
