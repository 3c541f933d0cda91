# ganpo_discover_test_suites(TARGET [PROPERTIES name value ...]): one ctest test per GoogleTest
# suite of TARGET (the test "Suite" runs `TARGET --gtest_filter=Suite.*`), listed after each
# build as gtest_discover_tests lists single tests. For executables that load LibTorch, whose
# start-up costs about a second: one process per suite instead of one per test saves minutes of
# `ctest`. A failure names the suite; its output names the test. COST is the suite's test count,
# so that without a timing record the big suites start first.
set(GANPO_LIST_TEST_SUITES_SCRIPT ${CMAKE_CURRENT_LIST_DIR}/list_test_suites.cmake)

function(ganpo_discover_test_suites target)
  cmake_parse_arguments(ARG "" "" "PROPERTIES" ${ARGN})
  set(ctest_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites.cmake")
  string(REPLACE ";" "|" properties "${ARG_PROPERTIES}")  # a list through one command argument
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -D "TEST_EXECUTABLE=$<TARGET_FILE:${target}>"
            -D "CTEST_FILE=${ctest_file}" -D "TEST_PROPERTIES=${properties}"
            -P ${GANPO_LIST_TEST_SUITES_SCRIPT}
    BYPRODUCTS ${ctest_file}
    VERBATIM)
  # Until the first build there is no list: ctest then shows TARGET_NOT_BUILT, as GoogleTest does.
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_suites_include.cmake")
  file(WRITE ${include_file} "if(EXISTS [==[${ctest_file}]==])\n  include([==[${ctest_file}]==])\n"
                             "else()\n  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)\nendif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${include_file})
endfunction()
