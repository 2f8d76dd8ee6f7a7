# The one-way layering, checked on the #include lines (ctest "layers", label unit):
#
#   kernels -> engine -> scheduler -> server        config sits beside the scheduler
#
# A file under kernels/, engine/, scheduler/, config/ or server/ may include headers of its
# own directory and of lower layers only: kernels nothing above kernels; engine kernels;
# scheduler and config engine and kernels (not each other); server everything. Paths are
# resolved as the compiler does here: "dir/x.h" from the source root, anything else (with
# "../" too) from the including file's folder. Tests, benchmarks and tools are not layers.
#
#   cmake -DROOT=<source dir> -P tests/layers.cmake
#
# First the checker is run on a small tree with planted violations (it must find exactly
# those), so a checker that silently stopped matching would fail too.
cmake_minimum_required(VERSION 3.20)

set(LAYERS kernels engine scheduler config server)
set(rank_kernels 0)
set(rank_engine 1)
set(rank_scheduler 2)
set(rank_config 2)
set(rank_server 3)

# The layer a path (relative to root) belongs to, or "" for none.
function(layer_of rel out)
    string(REGEX MATCH "^[^/]+" top "${rel}")
    if(top IN_LIST LAYERS)
        set(${out} ${top} PARENT_SCOPE)
    else()
        set(${out} "" PARENT_SCOPE)
    endif()
endfunction()

# Appends "file: #include "x" (layer a includes layer b)" lines for every violation under root.
function(check_tree root out)
    set(bad "")
    foreach(layer ${LAYERS})
        file(GLOB_RECURSE files RELATIVE ${root} ${root}/${layer}/*.c ${root}/${layer}/*.h
             ${root}/${layer}/*.cu ${root}/${layer}/*.cuh)
        foreach(f ${files})
            file(STRINGS ${root}/${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
            get_filename_component(fdir ${root}/${f} DIRECTORY)
            foreach(line ${lines})
                string(REGEX MATCH "\"([^\"]+)\"" m "${line}")
                set(inc "${CMAKE_MATCH_1}")
                layer_of("${inc}" target)
                if(NOT target)   # not "layer/...": relative to the including file
                    get_filename_component(abs ${fdir}/${inc} ABSOLUTE)
                    file(RELATIVE_PATH rel ${root} ${abs})
                    layer_of("${rel}" target)
                endif()
                if(target AND NOT target STREQUAL layer)
                    if(rank_${target} GREATER_EQUAL rank_${layer})
                        list(APPEND bad "${f}: #include \"${inc}\" (${layer} includes ${target})")
                    endif()
                endif()
            endforeach()
        endforeach()
    endforeach()
    set(${out} "${bad}" PARENT_SCOPE)
endfunction()

# 1. the checker on planted violations
set(plant ${CMAKE_CURRENT_BINARY_DIR}/layers-selftest)
file(REMOVE_RECURSE ${plant})
file(WRITE ${plant}/kernels/cpu/k.c "#include \"kernels/cpu.h\"\n#include \"../../engine/base.h\"\n")
file(WRITE ${plant}/engine/e.h "#include \"kernels/cpu.h\"\n  #  include \"scheduler/sched.h\"\n")
file(WRITE ${plant}/scheduler/s.c "#include \"engine/base.h\"\n#include \"config/config.h\"\n")
file(WRITE ${plant}/config/c.c "#include \"engine/base.h\"\n#include \"../server/http.h\"\n")
file(WRITE ${plant}/server/h.c "#include \"scheduler/sched.h\"\n#include \"config/config.h\"\n")
check_tree(${plant} found)
list(LENGTH found n)
file(REMOVE_RECURSE ${plant})
if(NOT n EQUAL 4)
    message(FATAL_ERROR "layers: the checker found ${n} of the 4 planted violations:\n${found}")
endif()

# 2. the real tree
if(NOT ROOT)
    message(FATAL_ERROR "layers: run with -DROOT=<source dir>")
endif()
check_tree(${ROOT} found)
if(found)
    list(JOIN found "\n  " text)
    message(FATAL_ERROR "layers: a lower layer includes a higher one "
                        "(kernels -> engine -> scheduler/config -> server):\n  ${text}")
endif()
message(STATUS "layers: kernels -> engine -> scheduler/config -> server holds")
