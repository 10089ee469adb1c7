# cmake -P: the one object libarpc.a holds. The library's objects are linked into one (ld -r)
# and every symbol but the shared library's exports is made local, so a static user sees the
# same public API as a shared one: arpc's internal names (call_new, pending_get, ...) cannot
# clash with a program's own, and a plugin that links libarpc.a exports nothing of arpc's but
# its API. Variables: LD, OBJCOPY, NM, OBJECTS (the objects, separated by '|': a CMake list's
# ';' would split the argument), SHARED (libarpc.so), OUT (the object to write).
foreach(v LD OBJCOPY NM OBJECTS SHARED OUT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "static_prelink.cmake: ${v} not set")
  endif()
endforeach()

string(REPLACE "|" ";" objects "${OBJECTS}")
get_filename_component(dir ${OUT} DIRECTORY)
file(MAKE_DIRECTORY ${dir})
execute_process(COMMAND ${LD} -r -o ${OUT}.all.o ${objects} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "static_prelink.cmake: ${LD} -r failed (${rc})")
endif()

execute_process(COMMAND ${NM} -D --defined-only ${SHARED} OUTPUT_VARIABLE exported RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "static_prelink.cmake: ${NM} -D ${SHARED} failed (${rc})")
endif()
string(REGEX MATCHALL "[^\n]+" lines "${exported}")
set(names "")
foreach(line ${lines})
  if(line MATCHES "^[0-9a-fA-F]* *[A-Za-z] (arpc_[A-Za-z0-9_]+)$")
    string(APPEND names "${CMAKE_MATCH_1}\n")
  endif()
endforeach()
if(names STREQUAL "")
  message(FATAL_ERROR "static_prelink.cmake: ${SHARED} exports no arpc_ symbol")
endif()
file(WRITE ${OUT}.public ${names})

execute_process(COMMAND ${OBJCOPY} --keep-global-symbols=${OUT}.public ${OUT}.all.o ${OUT} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "static_prelink.cmake: ${OBJCOPY} failed (${rc})")
endif()
file(REMOVE ${OUT}.all.o)
