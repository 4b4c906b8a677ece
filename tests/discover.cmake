# Run at ctest time (TEST_INCLUDE_FILES): asks a test program for its cases
# with --list and registers each as its own ctest test with its label, so
# `ctest -R`, `-L` and `-j` work per case.
execute_process(COMMAND ${SL_TEST_EXE} --list OUTPUT_VARIABLE _out RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  add_test(${SL_TEST_PREFIX}.list_failed ${SL_TEST_EXE} --list)
  return()
endif()
string(REPLACE "\n" ";" _lines "${_out}")
foreach(_line IN LISTS _lines)
  if(_line STREQUAL "")
    continue()
  endif()
  string(REPLACE " " ";" _parts "${_line}")
  list(GET _parts 0 _name)
  list(GET _parts 1 _label)
  # "e2e,serial": labels are comma separated; "serial" runs the case alone
  # (cases that measure memory or time must not share the machine).
  string(REPLACE "," ";" _label "${_label}")
  set(_serial FALSE)
  list(FIND _label "serial" _at)
  if(NOT _at EQUAL -1)
    set(_serial TRUE)
  endif()
  add_test(${SL_TEST_PREFIX}.${_name} ${SL_TEST_EXE} ${_name})
  set_tests_properties(${SL_TEST_PREFIX}.${_name} PROPERTIES LABELS "${_label}"
    TIMEOUT ${SL_TEST_TIMEOUT} RUN_SERIAL ${_serial}
    ENVIRONMENT "SLUICE_SHARED=${SL_SHARED_DIR};SLUICE_BIN=${SL_SLUICE_BIN};SLUICE_SOURCE_DIR=${SL_SOURCE_DIR}")
endforeach()
