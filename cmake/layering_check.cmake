# The layering of STYLE.md §3.1 and issue #7 as a test: the pure targets (common_core, auth_core,
# proxy_core) must not reach Asio, Beast, spdlog, SQLite, hiredis or curl, not even through a
# header of a header. For every source of those targets this asks the compiler, with the very
# flags of compile_commands.json, for the headers the source includes (-H) and fails naming the
# source and the include chain that reaches a forbidden header.
#
#   cmake -DCOMPILE_COMMANDS=<build>/compile_commands.json -DSOURCES_FILE=<file of paths>
#         -P cmake/layering_check.cmake
#
# Run by ctest as `layering_check` (tests/CMakeLists.txt), which writes SOURCES_FILE.

set(forbidden_patterns
  "/boost/asio[/.]"
  "/boost/beast[/.]"
  "/spdlog/"
  "/sqlite3\\.h$"
  "/hiredis/"
  "/curl/")

if(NOT EXISTS "${COMPILE_COMMANDS}")
  message(FATAL_ERROR "layering_check: ${COMPILE_COMMANDS} is missing (configure with "
                      "CMAKE_EXPORT_COMPILE_COMMANDS=ON)")
endif()
file(STRINGS "${SOURCES_FILE}" sources)
file(READ "${COMPILE_COMMANDS}" db)
string(JSON count LENGTH "${db}")
math(EXPR last "${count} - 1")

set(failures "")
set(checked 0)
foreach(i RANGE ${last})
  string(JSON file GET "${db}" ${i} file)
  list(FIND sources "${file}" wanted)
  if(wanted EQUAL -1)
    continue()
  endif()
  list(REMOVE_ITEM sources "${file}")  # one check per source (a build may list a file twice)
  string(JSON dir GET "${db}" ${i} directory)
  string(JSON command GET "${db}" ${i} command)
  separate_arguments(args UNIX_COMMAND "${command}")
  # Drop "-o <object>" and "-c": preprocess only, print the include tree (-H) on stderr.
  set(cmd "")
  set(skip_next FALSE)
  foreach(a IN LISTS args)
    if(skip_next)
      set(skip_next FALSE)
    elseif(a STREQUAL "-o")
      set(skip_next TRUE)
    elseif(NOT a STREQUAL "-c")
      list(APPEND cmd "${a}")
    endif()
  endforeach()
  execute_process(COMMAND ${cmd} -E -H -o /dev/null
                  WORKING_DIRECTORY "${dir}"
                  RESULT_VARIABLE rc
                  ERROR_VARIABLE tree)
  if(NOT rc EQUAL 0)
    string(APPEND failures "\n${file}: the compiler failed (${rc}):\n${tree}")
    continue()
  endif()
  math(EXPR checked "${checked} + 1")
  # Each line of -H is "<depth dots> <header>"; keep the open chain to name the route.
  string(REPLACE ";" "\\;" tree "${tree}")
  string(REPLACE "\n" ";" lines "${tree}")
  set(chain "")
  foreach(line IN LISTS lines)
    if(NOT line MATCHES "^(\\.+) (.+)$")
      continue()
    endif()
    string(LENGTH "${CMAKE_MATCH_1}" depth)
    set(header "${CMAKE_MATCH_2}")
    math(EXPR keep "${depth} - 1")
    list(SUBLIST chain 0 ${keep} chain)
    list(APPEND chain "${header}")
    foreach(p IN LISTS forbidden_patterns)
      if(header MATCHES "${p}")
        list(JOIN chain "\n    -> " route)
        string(APPEND failures "\n${file} reaches a forbidden header:\n    ${file}\n    -> ${route}")
        break()
      endif()
    endforeach()
    if(failures MATCHES "${file} reaches")
      break()  # one route per source is enough
    endif()
  endforeach()
endforeach()

if(sources)
  list(JOIN sources "\n  " missing)
  message(FATAL_ERROR "layering_check: not in ${COMPILE_COMMANDS} (re-run cmake):\n  ${missing}")
endif()
if(failures)
  message(FATAL_ERROR "layering_check: the pure targets must not include Asio, Beast, spdlog, "
                      "SQLite, hiredis or curl (STYLE.md §3.1); move the code or the include to "
                      "the I/O target:${failures}")
endif()
message(STATUS "layering_check: ${checked} sources of the pure targets include no I/O library")
