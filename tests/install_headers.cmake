# The installed headers match the build: a library built without jansson or protobuf-c does
# not install arpc/jsonrpc.h or arpc/protobuf.h (they would declare functions it lacks: a
# downstream program compiles, then fails to link). Configures SRC with both off into WORK
# and installs the headers' component only (nothing needs building).
#   cmake -DSRC=<source dir> -DWORK=<scratch dir> -P tests/install_headers.cmake
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/build -DARPC_WITH_JSONRPC=OFF
  -DARPC_WITH_PROTOBUF=OFF -DARPC_BUILD_TESTS=OFF RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring without jansson and protobuf-c failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --install ${WORK}/build --prefix ${WORK}/stage
  --component arpc_headers RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "installing the headers failed: ${rc}")
endif()
set(inc ${WORK}/stage/include/arpc)
foreach(h arpc.h client.h server.h future.h cq.h loop.h error.h tls.h)
  if(NOT EXISTS ${inc}/${h})
    message(FATAL_ERROR "arpc/${h} was not installed")
  endif()
endforeach()
foreach(h jsonrpc.h protobuf.h)
  if(EXISTS ${inc}/${h})
    message(FATAL_ERROR "arpc/${h} was installed by a build without its library part")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK})
message(STATUS "install_headers: the headers of the parts left out were not installed")
