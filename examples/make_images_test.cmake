# ctest script: make_images gives byte-identical files for 1 and 2 threads,
# lays out the subfolders it promises, and rejects bad arguments.
#   cmake -DEXE=path/to/make_images -DDIR=scratch/dir -P make_images_test.cmake
file(REMOVE_RECURSE ${DIR})
foreach(t 1 2)
  execute_process(COMMAND ${CMAKE_COMMAND} -E env OMP_NUM_THREADS=${t}
      ${EXE} ${DIR}/t${t} 12 --min 64x48 --max 200x150 --seed 3
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "make_images with ${t} threads failed: ${rc}")
  endif()
endforeach()
file(GLOB_RECURSE files RELATIVE ${DIR}/t1 ${DIR}/t1/*)
list(LENGTH files n)
if(NOT n EQUAL 12)
  message(FATAL_ERROR "expected 12 files, got ${n}: ${files}")
endif()
foreach(f img-00000.png set1/img-00001.png set2/deep/img-00002.png)
  if(NOT EXISTS ${DIR}/t1/${f})
    message(FATAL_ERROR "missing ${f}")
  endif()
endforeach()
foreach(f IN LISTS files)
  execute_process(COMMAND ${CMAKE_COMMAND} -E compare_files ${DIR}/t1/${f} ${DIR}/t2/${f}
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${f} differs between 1 and 2 threads")
  endif()
endforeach()
execute_process(COMMAND ${EXE} ${DIR}/bad 3 --min 10x10 --max 5x5 RESULT_VARIABLE rc
  OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "make_images accepted --min larger than --max")
endif()
file(REMOVE_RECURSE ${DIR})
