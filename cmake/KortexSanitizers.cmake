# kortex_apply_sanitizers(target): compile and link `target` with the
# sanitizers named in KORTEX_SANITIZE ("address;undefined" or "thread").
function(kortex_apply_sanitizers target)
  if(NOT KORTEX_SANITIZE)
    return()
  endif()
  list(JOIN KORTEX_SANITIZE "," _list)
  set(_flags -fsanitize=${_list} -fno-omit-frame-pointer -g)
  if("undefined" IN_LIST KORTEX_SANITIZE)
    list(APPEND _flags -fno-sanitize-recover=undefined)
  endif()
  target_compile_options(${target} PRIVATE ${_flags})
  target_link_options(${target} PUBLIC ${_flags})
endfunction()
