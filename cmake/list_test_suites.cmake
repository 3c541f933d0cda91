# Run at build time by ganpo_discover_test_suites (GanpoTestSuites.cmake): lists the suites of
# TEST_EXECUTABLE and writes CTEST_FILE, one add_test per suite with TEST_PROPERTIES (a list
# separated by |).
execute_process(COMMAND ${TEST_EXECUTABLE} --gtest_list_tests
                OUTPUT_VARIABLE listing ERROR_VARIABLE errors RESULT_VARIABLE result TIMEOUT 120)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "${TEST_EXECUTABLE} --gtest_list_tests failed (${result}):\n${errors}${listing}")
endif()

# The listing: "Suite." lines (maybe followed by "  # TypeParam = ..."), then "  Test" lines.
string(REPLACE "\n" ";" lines "${listing}")
set(suites "")
foreach(line IN LISTS lines)
  if(line MATCHES "^([^ #][^ ]*)\\.( .*)?$")
    set(suite "${CMAKE_MATCH_1}")
    list(APPEND suites "${suite}")
    set(count_${suite} 0)
  elseif(line MATCHES "^  [^ ]" AND DEFINED suite)
    math(EXPR count_${suite} "${count_${suite}} + 1")
  endif()
endforeach()
if(NOT suites)
  message(FATAL_ERROR "${TEST_EXECUTABLE} lists no GoogleTest suite:\n${listing}")
endif()

set(properties "")
string(REPLACE "|" ";" TEST_PROPERTIES "${TEST_PROPERTIES}")
foreach(item IN LISTS TEST_PROPERTIES)
  string(APPEND properties " [==[${item}]==]")
endforeach()
set(script "# Written by list_test_suites.cmake from ${TEST_EXECUTABLE} --gtest_list_tests\n")
foreach(suite IN LISTS suites)
  string(APPEND script "add_test([==[${suite}]==] [==[${TEST_EXECUTABLE}]==] [==[--gtest_filter=${suite}.*]==])\n")
  string(APPEND script "set_tests_properties([==[${suite}]==] PROPERTIES COST ${count_${suite}}${properties})\n")
endforeach()
file(WRITE "${CTEST_FILE}" "${script}")
