# cmake -P: the one object libarpc.a holds. The library's objects are linked into one (-r,
# through the compiler driver, so the toolchain's own linker) and every symbol but the shared
# library's exports is made local, so a static user sees the same public API as a shared one:
# arpc's internal names (call_new, pending_get, ...) cannot clash with a program's own, and a
# plugin that links libarpc.a exports nothing of arpc's but its API. The result is checked:
# a symbol objcopy could not make local (a COMMON one, say) fails the build, not a user's link.
# Variables: CC, CFLAGS (the build's C flags: -m32, --target and such reach the link too),
# OBJCOPY, NM, READELF (may be empty), OBJECTS (the objects, separated by '|':
# a CMake list's ';' would split the argument), SHARED (libarpc.so), OUT (the object to write).
foreach(v CC OBJCOPY NM OBJECTS SHARED OUT)
  if(NOT DEFINED ${v} OR "${${v}}" STREQUAL "")
    message(FATAL_ERROR "static_prelink.cmake: ${v} not set")
  endif()
endforeach()

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "static_prelink.cmake: ${what} failed (${rc}): ${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

# The symbols nm lists for file with the options opts whose line matches pattern (its first
# group: the name).
function(symbols opts file pattern var)
  run("${NM} ${file}" ${NM} ${opts} ${file})
  string(REGEX MATCHALL "[^\n]+" lines "${out}")
  set(names "")
  foreach(line ${lines})
    if(line MATCHES "${pattern}")
      list(APPEND names "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  set(${var} "${names}" PARENT_SCOPE)
endfunction()

string(REPLACE "|" ";" objects "${OBJECTS}")
get_filename_component(dir ${OUT} DIRECTORY)
file(MAKE_DIRECTORY ${dir})
separate_arguments(cflags UNIX_COMMAND "${CFLAGS}")
run("${CC} -r" ${CC} ${cflags} -nostdlib -r -o ${OUT}.all.o ${objects})

symbols("-D;--defined-only" ${SHARED} "^[0-9a-fA-F]* *[A-Za-z] (arpc_[A-Za-z0-9_]+)$" keep)
if(NOT keep)
  message(FATAL_ERROR "static_prelink.cmake: ${SHARED} exports no arpc_ symbol")
endif()
# COMDAT groups' signatures (i386's hidden __x86.get_pc_thunk.*, which the linker keeps one of)
# stay global: made local, GNU objcopy keeps the group, and a user's link then discards it
# under the relocations that use it.
if(READELF)
  run("${READELF} -g" ${READELF} -gW ${OUT}.all.o)
  string(REGEX MATCHALL "COMDAT group section[^\n]*\\[[^]\n]+\\] contains" groups "${out}")
  foreach(g ${groups})
    if(g MATCHES "\\[([^]]+)\\] contains$")
      list(APPEND keep "${CMAKE_MATCH_1}")
    endif()
  endforeach()
endif()
list(REMOVE_DUPLICATES keep)
string(REPLACE ";" "\n" keep_text "${keep}")
file(WRITE ${OUT}.public "${keep_text}\n")
run("${OBJCOPY}" ${OBJCOPY} --keep-global-symbols=${OUT}.public ${OUT}.all.o ${OUT}.checked.o)
file(REMOVE ${OUT}.all.o)

symbols("-g;--defined-only" ${OUT}.checked.o "^[0-9a-fA-F]* *[A-Z] ([^ ]+)$" got)
list(REMOVE_ITEM got ${keep})
if(got)
  list(LENGTH got n)
  list(SUBLIST got 0 5 first)
  message(FATAL_ERROR "static_prelink.cmake: ${n} symbol(s) besides the public API stay global in libarpc.a's "
    "object (a COMMON one, or a toolchain objcopy cannot localise for): ${first}")
endif()
file(RENAME ${OUT}.checked.o ${OUT})
