# Installs the build tree into a scratch prefix, then configures, builds and runs tests/consumer.
set(prefix ${BUILD_DIR}/consumer-test/prefix)
set(cbuild ${BUILD_DIR}/consumer-test/build)
file(REMOVE_RECURSE ${prefix} ${cbuild})
foreach(step
    "${CMAKE_COMMAND};--install;${BUILD_DIR};--prefix;${prefix}"
    "${CMAKE_COMMAND};-S;${SOURCE_DIR}/tests/consumer;-B;${cbuild};-DCMAKE_PREFIX_PATH=${prefix};-DCMAKE_CUDA_COMPILER=${CUDA_COMPILER}"
    "${CMAKE_COMMAND};--build;${cbuild}"
    "${cbuild}/consumer")
  execute_process(COMMAND ${step} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message("${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer step failed (${rc}): ${step}")
  endif()
endforeach()
